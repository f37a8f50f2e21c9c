"""Self-supervised encoder-decoder reconstruction (Beliy et al. 2019; Gaziv et al. 2022).

Paired image-fMRI data are scarce, so training has two phases:

1. **Encoder** E (image -> voxels) on the pairs, with an SNR-weighted voxel loss.
2. **Decoder** D (voxels -> image) on the pairs plus two self-supervised cycles through
   the frozen encoder:

   - image cycle: unpaired natural images ``x -> E(x) -> D -> x'``, image loss(x', x);
   - fMRI cycle: unpaired betas (e.g. the test recordings, never their images)
     ``r -> D(r) -> E -> r'``, voxel loss(r', r).

The image loss is pixel MSE + perceptual (deep-feature correlation, through
:class:`fmrirecon.features.FeatureExtractor`) + total variation; the voxel loss is an
SNR-weighted MSE plus a cosine term. ``cycles=False`` trains the same decoder on the
pairs only; ``ablation=True`` trains both decoders from the same encoder and the same
initial weights in one fit, so that the report compares them with everything else equal.

Training writes a checkpoint (weights, optimisers, random states, loss history) after
every ``checkpoint_every`` epochs when ``checkpoint_dir`` is set; a fit with the same
settings and data resumes from it and gives the numbers of an uninterrupted run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..torchkit import (atomic_save, images_to_tensor, load_checkpoint, progress, rng_states,
                        seed_everything, select_device, set_rng_states)
from .base import ReconstructionMethod

log = logging.getLogger(__name__)

#: Settings and their defaults (the config's ``methods.selfsup`` section).
DEFAULTS = {
    "width": 16,                 # channels of the first conv layer (doubled once)
    "encoder_epochs": 40,
    # Fraction of the paired images held out to pick the encoder's epoch (lowest
    # held-out voxel loss) and to measure a learned encoder for encoder_guard; 0 keeps
    # the last epoch. The decoder still uses every pair.
    "encoder_val_fraction": 0.1,
    "decoder_epochs": 40,
    "batch_size": 32,
    "lr_encoder": 3e-3,
    "lr_decoder": 1e-3,
    "weight_decay": 1e-2,         # AdamW
    "cycles": True,              # False: decoder on pairs only
    "ablation": False,           # True: also train the pairs-only decoder
    "image_cycle_weight": 1.0,
    "fmri_cycle_weight": 0.01,   # small: the noisy betas otherwise pull the decoder to noise
    # sd (standardised units) of the noise added to E(x) in the image cycle, or
    # "residual": each voxel's held-out residual sd of the encoder (see _cycle_noise_sd)
    "cycle_noise": 0.3,
    "pixel_weight": 1.0,
    "perceptual_weight": 0.5,
    "tv_weight": 0.05,
    "cosine_weight": 0.5,        # voxel loss = weighted MSE + cosine_weight * (1 - cos)
    "perceptual_network": "smallconv",
    "perceptual_layers": None,
    "perceptual_weights": None,
    # The encoder's image features: None learns them from the pairs (a small CNN);
    # "perceptual" reads them from the frozen perceptual network (encoder_layers, by
    # default its hidden layers), as Beliy et al. (AlexNet conv1) and Gaziv et al.
    # (VGG16 layers) built their encoders on a pretrained network; "pixel" and "gabor"
    # (Gabor energy) are fixed early-visual feature models (methods.backbones); "auto"
    # takes the one of these three whose ridge read-out predicts held-out pairs best.
    "encoder_backbone": None,
    # Cycles only through an encoder that predicts held-out pairs better than the
    # training mean (the lower 95% bound of its SNR-weighted R2 above 0); otherwise they
    # are turned off, with a warning in the log and in the validation record.
    "encoder_guard": True,
    "encoder_layers": None,
    "unpaired_folder": None,     # folder with images/ (+ labels.tsv) of natural images
    "unpaired_max": 2000,        # images drawn from it (deterministic sample)
    "checkpoint_dir": None,
    "checkpoint_every": 5,
    "resume": True,
    "device": "auto",
    "progress": True,
    # Read by the workflow, not by fit: a locally trained perceptual network
    # (features.train_feature_network); its checkpoint arrives as perceptual_weights.
    "train_network": None,
    # Semantic classification of the reconstructions (extra_metrics): class prototypes
    # from a labelled folder's images not shown in the study.
    "semantic_folder": None,
    "semantic_label": "wnid",    # column of the folder's labels.tsv and of stimuli.tsv
    "semantic_layers": ["relu3", "relu4", "fc5"],  # deeper layers of the perceptual network
    "semantic_max_per_class": None,
    "semantic_k": [1, 5],
    # n-way identification by deep features (extra_metrics): layers of the perceptual
    # network, z-scored with the training images' statistics.
    "identification_layers": ["relu3", "relu4", "fc5"],
}

#: Settings that change the metrics computed after fitting, not the fit.
_EVALUATION_KEYS = {"train_network", "semantic_folder", "semantic_label", "semantic_layers",
                    "semantic_max_per_class", "semantic_k", "identification_layers"}

CHECKPOINT_NAME = "selfsup_checkpoint.pt"
HISTORY_NAME = "selfsup_history.tsv"


# ---------------------------------------------------------------------------- networks

def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    # GroupNorm, not BatchNorm: batch statistics would differ between the paired
    # and unpaired batches and make the cycles see a different network.
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
                         nn.GroupNorm(math.gcd(8, cout), cout), nn.ReLU())


class Encoder(nn.Module):
    """Image (n, C, S, S) in [0, 1] -> standardised voxels (n, V).

    Convolutions down to S/2 (plus the 2 x 2 pooled pixels), then a space-feature
    separable readout (Beliy et al.): each voxel has a spatial map over the S/2 x S/2
    grid and a weight per feature.

    Parameters
    ----------
    image_size, channels, n_voxels : int
    width : int
        Channels of the first conv layer (doubled in the others).
    """

    def __init__(self, image_size: int, channels: int, n_voxels: int, width: int):
        super().__init__()
        self.features = nn.Sequential(_block(channels, width), _block(width, 2 * width, 2),
                                      _block(2 * width, 2 * width))
        self.pixels = nn.AvgPool2d(2)
        side, n_feat = image_size // 2, 2 * width + channels
        self.space = nn.Parameter(torch.randn(n_voxels, side, side) / side)
        self.feature = nn.Parameter(torch.randn(n_voxels, n_feat) / math.sqrt(n_feat))
        self.bias = nn.Parameter(torch.zeros(n_voxels))

    def forward(self, x):
        # The pooled pixels beside the conv features give a linear path: with few
        # pairs, early visual voxels are learnt faster as receptive fields on pixels.
        f = torch.cat([self.features(x), self.pixels(x)], 1)  # (n, F, s, s)
        pooled = torch.einsum("nfhw,vhw->nvf", f, self.space)  # (n, V, F)
        return (pooled * self.feature).sum(-1) + self.bias


class Decoder(nn.Module):
    """Standardised voxels (n, V) -> image (n, C, S, S) in [0, 1].

    A linear map to a (2 width, S/4, S/4) feature map, then two upsampling conv blocks.
    """

    def __init__(self, image_size: int, channels: int, n_voxels: int, width: int):
        super().__init__()
        self.shape = (2 * width, image_size // 4, image_size // 4)
        self.fc = nn.Linear(n_voxels, int(np.prod(self.shape)))
        self.body = nn.Sequential(
            nn.GroupNorm(math.gcd(8, 2 * width), 2 * width), nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="nearest"), _block(2 * width, width),
            nn.Upsample(scale_factor=2, mode="nearest"), _block(width, width),
            nn.Conv2d(width, channels, 3, padding=1), nn.Sigmoid(),
        )

    def latent(self, r):
        """The linear layer's output (n, 2 width (S/4)^2): the decoded target space."""
        return self.fc(r)

    def forward(self, r):
        return self.body(self.fc(r).view(len(r), *self.shape))


class BackboneEncoder(nn.Module):
    """Image (n, C, S, S) in [0, 1] -> standardised voxels (n, V) through a frozen network.

    A linear read-out of the flattened layers of ``backbone`` plus the 2 x 2 pooled
    pixels (as in :class:`Encoder`), fitted in closed form by :meth:`fit`: ridge
    regression with a penalty per voxel chosen by cross-validation (the shared
    :class:`~fmrirecon.decoding.RidgeDecoder`), the usual voxel-wise encoding model.
    With a few hundred noisy pairs this read-out, fitted by gradient descent, fits the
    pairs' noise within a few epochs; the ridge penalty is what keeps it general.

    Parameters
    ----------
    backbone : fmrirecon.features.FeatureExtractor
        Frozen; its ``layers`` are read.
    image_size, channels, n_voxels : int
    """

    def __init__(self, backbone, image_size: int, channels: int, n_voxels: int):
        super().__init__()
        self.backbone = backbone
        self.backbone.requires_grad_(False)
        self.names = list(backbone.layers)
        self.pixels = nn.AvgPool2d(2)
        shapes = backbone.layer_shapes()
        n_feat = sum(int(np.prod(shapes[name])) for name in self.names) \
            + channels * (image_size // 2) ** 2
        self.register_buffer("mean", torch.zeros(n_feat))
        self.register_buffer("scale", torch.ones(n_feat))
        self.register_buffer("weight", torch.zeros(n_feat, n_voxels))
        self.register_buffer("bias", torch.zeros(n_voxels))

    def features(self, x):
        """The read-out's input: flattened layers and pooled pixels, (n, n_features)."""
        out = self.backbone(x)
        return torch.cat([out[name].flatten(1) for name in self.names]
                         + [self.pixels(x).flatten(1)], 1)

    @torch.no_grad()
    def fit(self, images: torch.Tensor, z: np.ndarray, groups=None, seed: int = 0,
            batch: int = 256):
        """Fit the read-out on ``images`` (n, C, S, S) and standardised voxels ``z`` (n, V).

        ``groups`` (e.g. runs) keep a group's trials in one cross-validation fold.
        Returns the :class:`~fmrirecon.decoding.RidgeDecoder` (``best_alphas_``,
        ``cv_scores_``).
        """
        from ..decoding import RidgeDecoder

        ridge = RidgeDecoder(alphas=ENCODER_ALPHAS, device=self.bias.device, seed=seed).fit(
            self.features_of(images, batch), z, groups)
        for name, value in (("mean", ridge.x_mean_), ("scale", ridge.x_scale_),
                            ("weight", ridge.coef_), ("bias", ridge.intercept_)):
            getattr(self, name).copy_(torch.from_numpy(np.asarray(value, dtype=np.float32)))
        return ridge

    @torch.no_grad()
    def features_of(self, images: torch.Tensor, batch: int = 256) -> np.ndarray:
        """:meth:`features` of ``images`` (n, C, S, S) in batches, as numpy."""
        return torch.cat([self.features(images[i:i + batch].to(self.bias.device)).cpu()
                          for i in range(0, len(images), batch)]).numpy()

    def forward(self, x):
        return (self.features(x) - self.mean) / self.scale @ self.weight + self.bias


#: Ridge penalties of the :class:`BackboneEncoder` read-out (tens of thousands of
#: standardised features from a few hundred images: larger than the decoders').
ENCODER_ALPHAS = np.logspace(0, 8, 17)

#: Hidden layers the ``perceptual`` encoder backbone reads by default.
BACKBONE_LAYERS = {"smallconv": ["relu2", "relu3", "relu4"]}


def _cv_groups(images: np.ndarray, groups=None) -> np.ndarray:
    """Groups a cross-validation of the pairs leaves out whole: the runs when there are
    5 or more, else the images (repeats of an image never straddle a fold)."""
    from ..validation import image_ids

    if groups is not None and len(np.unique(np.asarray(groups).astype(str))) >= 5:
        return np.asarray(groups).astype(str)
    return image_ids(images)


def weighted_r2(z, pred, baseline, weights) -> float:
    """1 - sum_v w_v SSE_v / sum_v w_v SSE_v(baseline): the SNR-weighted R2 of ``pred``
    against the mean predictor's residuals ``baseline`` (all (n, V))."""
    sse = ((z - pred) ** 2).sum(0)
    ref = (baseline ** 2).sum(0)
    return float(1 - (weights * sse).sum() / max(float((weights * ref).sum()), 1e-12))


def encoder_cv_quality(features: np.ndarray, z: np.ndarray, weights: np.ndarray, groups,
                       seed: int = 0, n_folds: int = 5, n_boot: int = 1000,
                       device="auto") -> dict:
    """Held-out quality of a ridge read-out of ``features`` (n, F) predicting ``z`` (n, V).

    Out-of-fold predictions (folds leave ``groups`` out whole; the penalty is chosen
    inside each fold) against the mean predictor (each fold's training mean): the
    SNR-weighted R2 of :func:`weighted_r2` with a 95% bootstrap interval over groups.

    Returns
    -------
    dict
        ``r2``, ``ci_low``, ``ci_high``, ``n_groups``.
    """
    from ..decoding import RidgeDecoder, cv_splits

    z = np.asarray(z, dtype=np.float64)
    groups = np.asarray(groups)
    pred = np.zeros_like(z)
    baseline = np.zeros_like(z)
    for train, test in cv_splits(len(z), min(n_folds, len(np.unique(groups))), groups, seed):
        ridge = RidgeDecoder(alphas=ENCODER_ALPHAS, device=device, seed=seed).fit(
            features[train], z[train], groups[train])
        pred[test] = ridge.predict(features[test])
        baseline[test] = z[test] - z[train].mean(0)
    w = np.asarray(weights, dtype=np.float64)
    r2 = weighted_r2(z, pred, baseline, w)
    return {**_group_bootstrap(z, pred, baseline, w, groups, seed, n_boot), "r2": r2}


def _group_bootstrap(z, pred, baseline, w, groups, seed, n_boot) -> dict:
    """95% bootstrap interval of :func:`weighted_r2`, resampling whole groups."""
    unique, inverse = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng([seed, 73])
    rows = [np.flatnonzero(inverse == g) for g in range(len(unique))]
    values = []
    for _ in range(n_boot):
        pick = np.concatenate([rows[g] for g in rng.integers(0, len(unique), len(unique))])
        values.append(weighted_r2(z[pick], pred[pick], baseline[pick], w))
    low, high = np.quantile(values, [0.025, 0.975]) if len(unique) > 1 else (np.nan, np.nan)
    return {"ci_low": float(low), "ci_high": float(high), "n_groups": int(len(unique))}


def build_encoder(image_size: int, channels: int, n_voxels: int, width: int,
                  backbone=None) -> nn.Module:
    """An :class:`Encoder`, or a :class:`BackboneEncoder` on a frozen ``backbone``
    (read-out weights from the global torch random state)."""
    if backbone is not None:
        return BackboneEncoder(backbone, image_size, channels, n_voxels)
    return Encoder(image_size, channels, n_voxels, width)


def build_decoder(image_size: int, channels: int, n_voxels: int, width: int) -> Decoder:
    """A :class:`Decoder` (weights from the global torch random state)."""
    return Decoder(image_size, channels, n_voxels, width)


# ------------------------------------------------------------------------------ losses

def total_variation(images):
    """Mean absolute difference of neighbouring pixels (n, C, H, W) -> scalar."""
    dy = (images[:, :, 1:, :] - images[:, :, :-1, :]).abs().mean()
    dx = (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().mean()
    return dx + dy


def _feature_corr_loss(a, b):
    """1 - Pearson r of each sample's flattened features, averaged over samples."""
    a = a.flatten(1)
    b = b.flatten(1)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    r = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-8)
    return (1 - r).mean()


def voxel_loss(pred, target, weights, cosine_weight: float = 0.5):
    """SNR-weighted MSE plus ``cosine_weight`` * (1 - weighted cosine) per sample.

    ``weights`` (V,) has mean 1; voxels without signal get ~0 and are ignored.
    """
    mse = ((pred - target) ** 2 * weights).mean()
    if cosine_weight == 0:
        return mse
    sw = weights.sqrt()
    p, t = pred * sw, target * sw
    cos = (p * t).sum(1) / (p.norm(dim=1) * t.norm(dim=1) + 1e-8)
    return mse + cosine_weight * (1 - cos).mean()


class ImageLoss:
    """Pixel MSE + perceptual (deep-feature correlation) + total variation.

    Parameters
    ----------
    extractor : torch.nn.Module or None
        A :class:`fmrirecon.features.FeatureExtractor`; None disables the perceptual term.
    pixel, perceptual, tv : float
        Weights of the terms.
    """

    def __init__(self, extractor, pixel: float, perceptual: float, tv: float):
        self.extractor = extractor
        self.pixel, self.perceptual, self.tv = pixel, perceptual, tv

    def __call__(self, pred, target):
        loss = self.pixel * ((pred - target) ** 2).mean()
        if self.perceptual and self.extractor is not None:
            fp, ft = self.extractor(pred), self.extractor(target)
            per = sum(_feature_corr_loss(fp[k], ft[k].detach()) for k in fp) / len(fp)
            loss = loss + self.perceptual * per
        if self.tv:
            loss = loss + self.tv * total_variation(pred)
        return loss


# -------------------------------------------------------------------- helper functions

def snr_weights(betas: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Per-voxel weights from the training images shown more than once.

    The NSD noise ceiling for single trials (:func:`fmrirecon.reliability.noise_ceiling`
    with ``n_average=1``) is the fraction of a voxel's variance that is signal; weights
    are that fraction (plus 1e-3) scaled to mean 1. Uniform weights when fewer than 3
    images repeat.
    """
    from ..reliability import MIN_REPEATED_STIMULI, noise_ceiling

    ids = np.array([hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest() for im in images])
    _, counts = np.unique(ids, return_counts=True)
    if (counts >= 2).sum() < MIN_REPEATED_STIMULI:
        return np.ones(betas.shape[1], dtype=np.float32)
    frac = np.nan_to_num(noise_ceiling(betas, ids, n_average=1) / 100.0, nan=0.0)
    w = frac + 1e-3
    return (w / w.mean()).astype(np.float32)


def load_unpaired_images(folder: str | Path, size: int, channels: int, max_images: int | None,
                         seed: int, exclude=()) -> np.ndarray:
    """A deterministic sample of a folder's images (see ``simulate.stimuli.read_folder``).

    Parameters
    ----------
    folder : path
        Folder with ``images/`` and an optional ``labels.tsv`` (first column ``file``).
    size, channels : int
        Images are centre-cropped and resized like :func:`fmrirecon.images.load_image`.
    max_images : int or None
        Draw at most this many (without replacement, from ``seed``).
    exclude : iterable of (str, str)
        ``(folder name, file)`` of images to leave out, e.g. the study's own stimuli
        (:func:`fmrirecon.bids.stimulus_sources`); pairs naming other folders are ignored.
    """
    from ..images import load_images
    from ..simulate.stimuli import read_folder

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"methods.selfsup.unpaired_folder: {folder} is not a folder")
    table = read_folder(folder)
    exclude = {file for name, file in exclude if name == folder.name}
    files = [f for f in table["file"] if f not in exclude]
    if exclude:
        log.info("%s: %d images left out as stimulus sources", folder, len(table) - len(files))
    if max_images is not None and len(files) > max_images:
        pick = np.sort(np.random.default_rng([seed, 11]).choice(len(files), max_images, replace=False))
        files = [files[i] for i in pick]
    log.info("loading %d unpaired images from %s", len(files), folder)
    return load_images([folder / f for f in files], size, channels)


def _fingerprint(*arrays) -> str:
    h = hashlib.sha1()
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------- method

class SelfSupervisedReconstruction(ReconstructionMethod):
    """Encoder-decoder with self-supervised image and fMRI cycles.

    Parameters
    ----------
    seed : int
    **params
        Any key of :data:`DEFAULTS` (the config's ``methods.selfsup``); an unknown key is
        an error. The main ones: ``width`` (network size), ``encoder_epochs``,
        ``decoder_epochs``, ``batch_size``, ``cycles`` (False: pairs only),
        ``ablation`` (also train the pairs-only decoder), ``unpaired_folder`` and
        ``unpaired_max``, loss weights, ``perceptual_network``/``_layers``/``_weights``
        (passed to :class:`fmrirecon.features.FeatureExtractor`), ``checkpoint_dir``,
        ``device``.

    Attributes
    ----------
    history_ : DataFrame
        One row per epoch: ``phase`` (encoder, decoder), ``epoch``, ``variant``
        (cycles, pairs) and the mean of each loss term (see :meth:`write_history`).
    voxel_weights_ : ndarray (V,)
        SNR weights of the voxel loss.
    encoder_epoch_ : int
        The encoder epoch kept: the last one, or with ``encoder_val_fraction`` the one
        of lowest held-out voxel loss (column ``heldout`` of :attr:`history_`).
    """

    name = "selfsup"
    uses_unpaired_betas = True
    uses_unpaired_images = True
    checkpointed = True

    @classmethod
    def setting_defaults(cls) -> dict:
        """The settings table :data:`DEFAULTS`."""
        return dict(DEFAULTS)

    def __init__(self, *, seed: int = 0, **params):
        type(self).check_settings(params)
        settings = {**DEFAULTS, **params}
        for key in ("width", "encoder_epochs", "decoder_epochs", "batch_size", "checkpoint_every"):
            if not isinstance(settings[key], int) or settings[key] < (0 if "epochs" in key else 1):
                kind = "an integer >= 0" if "epochs" in key else "a positive integer"
                raise ValueError(f"methods.selfsup.{key}: expected {kind}, got {settings[key]!r}")
        super().__init__(seed=seed)
        self.settings = settings

    # -- fitting ------------------------------------------------------------------

    def fit(self, betas, images, groups=None, *, unpaired_betas=None, unpaired_images=None,
            voxel_weights=None, unpaired_exclude=()):
        """Train the encoder on the pairs, then the decoder on pairs and cycles.

        Parameters
        ----------
        betas : ndarray, shape (n, V)
            Training betas.
        images : ndarray, shape (n, H, W, C)
            The images shown, in [0, 1]; H = W, divisible by 4.
        groups : ndarray, optional
            Run of each trial: with ``encoder_backbone``, the cross-validation folds of
            the encoder's ridge read-out leave whole runs out.
        unpaired_betas : ndarray, shape (m, V), optional
            Betas without images for the fMRI cycle, e.g. the test recordings. Never
            pass their images anywhere.
        unpaired_images : ndarray, shape (k, H, W, C), optional
            Images for the image cycle; default: loaded from ``unpaired_folder``.
        voxel_weights : ndarray, shape (V,), optional
            Voxel loss weights (e.g. a reliability); default :func:`snr_weights`.
        unpaired_exclude : iterable of (str, str)
            ``(folder name, file)`` of images to leave out of ``unpaired_folder``: the
            study's stimuli when the folder is the one they were drawn from
            (:func:`fmrirecon.bids.stimulus_sources`).
        """
        s = self.settings
        betas = np.asarray(betas, dtype=np.float32)
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[1] < 4:
            raise ValueError(f"selfsup: images must be (n, S, S, C) with S >= 4, got {images.shape}")
        if betas.ndim != 2 or len(betas) != len(images):
            raise ValueError(f"selfsup: betas {betas.shape} do not match images {images.shape}")
        noise = s["cycle_noise"]
        if noise != "residual" and not (isinstance(noise, (int, float)) and noise >= 0):
            raise ValueError(f"methods.selfsup.cycle_noise: a number >= 0 or 'residual', "
                             f"got {noise!r}")
        n, size, _, channels = images.shape
        n_vox = betas.shape[1]
        self.image_shape_ = images.shape[1:]
        # The networks work at a side divisible by 4 (two stride-2 stages); images of
        # another side (e.g. 10 x 10 patches) are resized in and out.
        self.work_size_ = 4 * math.ceil(size / 4)
        self.guards_ = []
        self.device_ = select_device(s["device"])
        seed_everything(self.seed)

        # Standardise voxels with the training statistics; every voxel-space loss and
        # the encoder's output live in these units.
        self.beta_mean_ = betas.mean(0)
        self.beta_sd_ = np.where(betas.std(0) > 1e-8, betas.std(0), 1.0).astype(np.float32)
        z = self._standardise(betas)
        if voxel_weights is None:
            voxel_weights = snr_weights(betas, images)
        voxel_weights = np.asarray(voxel_weights, dtype=np.float32)
        if voxel_weights.shape != (n_vox,) or not np.all(np.isfinite(voxel_weights)) \
                or (voxel_weights < 0).any() or voxel_weights.sum() <= 0:
            raise ValueError(f"selfsup: voxel_weights must be {n_vox} finite values >= 0, "
                             f"not all 0")
        self.voxel_weights_ = voxel_weights / voxel_weights.mean()

        use_cycles = s["cycles"]
        z_unpaired = None
        if unpaired_betas is not None and len(unpaired_betas) == 0:
            unpaired_betas = None
        if unpaired_betas is not None and use_cycles:
            unpaired_betas = np.asarray(unpaired_betas, dtype=np.float32)
            if unpaired_betas.ndim != 2 or unpaired_betas.shape[1] != n_vox:
                raise ValueError(f"selfsup: unpaired_betas {unpaired_betas.shape} must have "
                                 f"{n_vox} voxels")
            z_unpaired = self._standardise(unpaired_betas)
        if unpaired_images is None and s["unpaired_folder"] and use_cycles:
            unpaired_images = load_unpaired_images(s["unpaired_folder"], size, channels,
                                                   s["unpaired_max"], self.seed, unpaired_exclude)
        if unpaired_images is not None:
            unpaired_images = np.asarray(unpaired_images, dtype=np.float32)
            if unpaired_images.shape[1:] != images.shape[1:]:
                raise ValueError(f"selfsup: unpaired images {unpaired_images.shape[1:]} differ "
                                 f"from the paired {images.shape[1:]}")
        if use_cycles and s["decoder_epochs"] and unpaired_images is None and z_unpaired is None:
            log.warning("selfsup: cycles on but no unpaired images or betas; pairs only")

        work = self.work_size_
        x = self._to_work(images)
        cv_groups = _cv_groups(images, groups)
        self.encoder_quality_ = None
        backbone = self._encoder_backbone(x, z, cv_groups)
        self.encoder_ = build_encoder(work, channels, n_vox, s["width"], backbone).to(self.device_)
        self.decoder_ = build_decoder(work, channels, n_vox, s["width"]).to(self.device_)
        # The pairs-only decoder starts from the cycle decoder's exact weights.
        self.pairs_decoder_ = None
        if s["ablation"] and s["cycles"]:
            self.pairs_decoder_ = build_decoder(work, channels, n_vox, s["width"]).to(self.device_)
            self.pairs_decoder_.load_state_dict(self.decoder_.state_dict())
        self._data = {
            "x": x,
            "z": torch.from_numpy(z),
            "xu": None if unpaired_images is None else self._to_work(unpaired_images),
            "zu": None if z_unpaired is None else torch.from_numpy(z_unpaired),
            "w": torch.from_numpy(self.voxel_weights_).to(self.device_),
        }
        self._data["enc_train"], self._data["enc_val"] = self._encoder_split(images)
        self._data["ids"] = _cv_groups(images)
        if isinstance(self.encoder_, BackboneEncoder):
            rows = self._data["enc_train"]
            if self.encoder_quality_ is None:
                # held-out quality of this read-out: out-of-fold predictions of every pair
                feats = self.encoder_.features_of(self._data["x"])
                self.encoder_quality_ = encoder_cv_quality(feats, z, self.voxel_weights_,
                                                           cv_groups, self.seed,
                                                           device=self.device_)
            ridge = self.encoder_.fit(self._data["x"][rows], z[rows.numpy()],
                                      None if groups is None else np.asarray(groups)[rows.numpy()],
                                      seed=self.seed)
            log.info("selfsup encoder read-out: ridge, median cross-validated R2 %.3f, "
                     "median penalty %.3g", float(np.median(ridge.cv_scores_)),
                     float(np.median(ridge.best_alphas_)))
        self._fingerprint = _fingerprint(betas, images, unpaired_betas, unpaired_images,
                                         self.voxel_weights_) + json.dumps(
            {"seed": self.seed, **{k: v for k, v in s.items() if k not in (
                "progress", "resume", "checkpoint_every", "device", *_EVALUATION_KEYS)}},
            sort_keys=True, default=str)
        self._train()
        del self._data
        return self

    def _encoder_split(self, images):
        """Pairs the encoder trains on and those held out to pick its epoch.

        Whole images are held out (a repeated image never sits on both sides).
        """
        frac = float(self.settings["encoder_val_fraction"])
        n = len(images)
        if not 0 <= frac < 1:
            raise ValueError(f"methods.selfsup.encoder_val_fraction: expected [0, 1), got {frac}")
        if frac == 0:
            return torch.arange(n), None
        ids = np.array([hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest()
                        for im in images])
        unique = np.unique(ids)
        rng = np.random.default_rng([self.seed, 13])
        held = rng.choice(len(unique), max(1, int(round(frac * len(unique)))), replace=False)
        val = np.isin(ids, unique[held])
        if val.all() or not val.any():
            raise ValueError("methods.selfsup.encoder_val_fraction: leaves no pairs on one side")
        return torch.from_numpy(np.flatnonzero(~val)), torch.from_numpy(np.flatnonzero(val))

    def _encoder_backbone(self, x, z, cv_groups):
        """The frozen backbone of ``encoder_backbone`` (None: a learned encoder).

        ``"auto"`` fits the ridge read-out of each backbone of
        :data:`~fmrirecon.methods.backbones.BACKBONES` with out-of-fold predictions of
        the pairs (:func:`encoder_cv_quality`) and keeps the best; the scores are in
        :attr:`encoder_backbone_scores_`.
        """
        from .backbones import BACKBONES, build_backbone

        s = self.settings
        choice = s["encoder_backbone"]
        self.encoder_backbone_ = choice
        if choice is None:
            return None
        if choice not in (*BACKBONES, "auto"):
            raise ValueError(f"methods.selfsup.encoder_backbone: null, 'auto' or one of "
                             f"{', '.join(BACKBONES)}, got {choice!r}")
        _, channels, work, _ = x.shape

        def backbone(name):
            return build_backbone(name, work, channels, self._perceptual_backbone).to(self.device_)

        if choice != "auto":
            return backbone(choice)
        self.encoder_backbone_scores_ = {}
        best = None
        for name in BACKBONES:
            candidate = backbone(name)
            reader = BackboneEncoder(candidate, work, channels, z.shape[1]).to(self.device_)
            quality = encoder_cv_quality(reader.features_of(x), z, self.voxel_weights_,
                                         cv_groups, self.seed, device=self.device_)
            self.encoder_backbone_scores_[name] = quality
            log.info("selfsup encoder backbone %s: held-out weighted R2 %.4f [%.4f, %.4f]",
                     name, quality["r2"], quality["ci_low"], quality["ci_high"])
            if best is None or quality["r2"] > best[1]["r2"]:
                best = (name, quality, candidate)
        self.encoder_backbone_, self.encoder_quality_ = best[0], best[1]
        log.info("selfsup encoder backbone chosen by held-out R2: %s", best[0])
        return best[2]

    def _perceptual_backbone(self):
        """The perceptual network on the encoder's layers (``encoder_layers``)."""
        s = self.settings
        layers = s["encoder_layers"] or BACKBONE_LAYERS.get(s["perceptual_network"])
        if not layers:
            raise ValueError(f"methods.selfsup.encoder_layers: give the layers of "
                             f"{s['perceptual_network']!r} the encoder reads")
        backbone = self.feature_extractor(layers)
        log.info("selfsup encoder on %s (layers %s)", backbone.provenance, ", ".join(layers))
        return backbone

    def _to_work(self, images) -> torch.Tensor:
        """Images (n, S, S, C) as a tensor (n, C, W, W) at the networks' working side."""
        x = images_to_tensor(images)
        if x.shape[-1] != self.work_size_:
            from torch.nn import functional as F

            x = F.interpolate(x, size=(self.work_size_,) * 2, mode="bilinear",
                              align_corners=False).clamp(0, 1)
        return x

    def _from_work(self, x: np.ndarray) -> np.ndarray:
        """Decoder output (n, C, W, W) as images (n, S, S, C) at the stimuli's side."""
        size = self.image_shape_[0]
        if x.shape[-1] != size:
            from torch.nn import functional as F

            x = F.interpolate(torch.from_numpy(x), size=(size, size), mode="bilinear",
                              align_corners=False, antialias=True).numpy()
        return x.transpose(0, 2, 3, 1)

    @classmethod
    def trained_network(cls, settings):
        """The perceptual network, when ``train_network`` trains it here."""
        if not settings.get("train_network"):
            return None
        return settings.get("perceptual_network", DEFAULTS["perceptual_network"]), \
            settings["train_network"]

    @classmethod
    def input_files(cls, settings, locations):
        """The locally trained perceptual network as ``perceptual_weights``."""
        files = super().input_files(settings, locations)
        trained = cls.trained_network(settings)
        if trained:
            files["perceptual_weights"] = Path(locations["features"]) / f"{trained[0]}_weights.pt"
        return files

    @classmethod
    def ablation(cls, settings):
        """The decoder trained on the pairs only (``cycles: false``)."""
        return {"cycles": False} if settings.get("cycles", DEFAULTS["cycles"]) else None

    @classmethod
    def validation_fit_settings(cls, settings, search):
        """With cycles, the validation fit trains the pairs-only decoder beside them."""
        if settings.get("cycles", DEFAULTS["cycles"]):
            return {**settings, "ablation": True}
        return dict(settings)

    def reconstruct_with(self, betas, overrides):
        """The ablation is this fit's pairs-only decoder (trained beside the cycles)."""
        if not overrides:
            return self.reconstruct(betas)
        if overrides == {"cycles": False} and "pairs" in self.variants:
            return self.reconstruct(betas, variant="pairs")
        return None

    def _standardise(self, betas):
        return ((np.asarray(betas, dtype=np.float32) - self.beta_mean_) / self.beta_sd_).astype(np.float32)

    def _image_loss(self):
        s = self.settings
        extractor = None
        if s["perceptual_weight"] > 0:
            extractor = self.feature_extractor(s["perceptual_layers"])
            self.perceptual_provenance_ = extractor.provenance
            log.info("selfsup perceptual loss: %s", extractor.provenance)
        return ImageLoss(extractor, s["pixel_weight"], s["perceptual_weight"], s["tv_weight"])

    def _train(self):
        s = self.settings
        dev = self.device_
        gen = torch.Generator().manual_seed(self.seed)  # every draw of the training
        # A BackboneEncoder has no trainable parameter (its read-out is fitted in closed
        # form before this): no encoder epochs then.
        trainable = [p for p in self.encoder_.parameters() if p.requires_grad]
        encoder_epochs = s["encoder_epochs"] if trainable else 0
        opt_e = torch.optim.AdamW(trainable, lr=s["lr_encoder"],
                                  weight_decay=s["weight_decay"]) if trainable else None
        opt_d = torch.optim.AdamW(self.decoder_.parameters(), lr=s["lr_decoder"],
                                 weight_decay=s["weight_decay"])
        opt_p = None if self.pairs_decoder_ is None else torch.optim.AdamW(
            self.pairs_decoder_.parameters(), lr=s["lr_decoder"], weight_decay=s["weight_decay"])
        history: list[dict] = []
        start = {"encoder": 0, "decoder": 0}
        best = None  # (held-out loss, epoch, encoder state) with encoder_val_fraction
        ckpt_dir = Path(s["checkpoint_dir"]) if s["checkpoint_dir"] else None
        ckpt_path = ckpt_dir / CHECKPOINT_NAME if ckpt_dir else None
        state = None
        if ckpt_path is not None and s["resume"]:
            # a checkpoint of other settings or data cannot continue this fit
            state = load_checkpoint(ckpt_path, self._fingerprint)
        if state is not None:
            self.encoder_.load_state_dict(state["encoder"])
            self.decoder_.load_state_dict(state["decoder"])
            if opt_e is not None:
                opt_e.load_state_dict(state["opt_e"])
            opt_d.load_state_dict(state["opt_d"])
            if opt_p is not None:
                self.pairs_decoder_.load_state_dict(state["pairs_decoder"])
                opt_p.load_state_dict(state["opt_p"])
            set_rng_states(state["rng"], gen)
            history = state["history"]
            start = state["start"]
            best = state.get("encoder_best")
            log.info("selfsup: resumed from %s at %s", ckpt_path, start)

        def checkpoint(phase_start):
            if ckpt_path is None:
                return
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            state = {
                "fingerprint": self._fingerprint, "start": phase_start, "history": history,
                "encoder": self.encoder_.state_dict(), "decoder": self.decoder_.state_dict(),
                "opt_e": None if opt_e is None else opt_e.state_dict(),
                "opt_d": opt_d.state_dict(),
                "rng": rng_states(gen), "encoder_best": best,
            }
            if opt_p is not None:
                state["pairs_decoder"] = self.pairs_decoder_.state_dict()
                state["opt_p"] = opt_p.state_dict()
            atomic_save(state, ckpt_path)
            pd.DataFrame(history).to_csv(ckpt_dir / HISTORY_NAME, sep="\t", index=False)

        bar = progress(s["progress"], encoder_epochs + s["decoder_epochs"],
                       sum(start.values()), desc="selfsup")
        # ---- phase 1: encoder on the pairs
        for epoch in range(start["encoder"], encoder_epochs):
            sums = self._encoder_epoch(opt_e, gen)
            if self._data["enc_val"] is not None:
                sums["heldout"] = self._encoder_heldout_loss()
                if best is None or sums["heldout"] < best[0]:
                    best = (sums["heldout"], epoch + 1, copy.deepcopy(
                        {k: v.detach().cpu() for k, v in self.encoder_.state_dict().items()}))
            history.append({"phase": "encoder", "variant": "pairs", "epoch": epoch + 1, **sums})
            bar.update(1)
            bar.set_postfix_str(f"encoder loss {sums['loss']:.4f}")
            done = epoch + 1 == encoder_epochs
            if (epoch + 1) % s["checkpoint_every"] == 0 or done:
                checkpoint({"encoder": epoch + 1, "decoder": 0})
        self.encoder_epoch_ = encoder_epochs
        if best is not None:
            # The epoch of lowest held-out loss: later ones fit the pairs' noise.
            self.encoder_.load_state_dict(best[2])
            self.encoder_epoch_ = best[1]
            log.info("selfsup: encoder of epoch %d (held-out loss %.4f)", best[1], best[0])
        # ---- phase 2: decoder(s), encoder frozen
        self.encoder_.eval()
        for p in self.encoder_.parameters():
            p.requires_grad_(False)
        self._encoder_guard()
        self.cycle_noise_sd_ = self._cycle_noise_sd()
        image_loss = self._image_loss() if s["decoder_epochs"] > start["decoder"] else None
        for epoch in range(start["decoder"], s["decoder_epochs"]):
            rows = self._decoder_epoch(opt_d, opt_p, image_loss, gen)
            for variant, sums in rows.items():
                history.append({"phase": "decoder", "variant": variant, "epoch": epoch + 1, **sums})
            bar.update(1)
            bar.set_postfix_str(f"decoder loss {rows[next(iter(rows))]['loss']:.4f}")
            done = epoch + 1 == s["decoder_epochs"]
            if (epoch + 1) % s["checkpoint_every"] == 0 or done:
                checkpoint({"encoder": encoder_epochs, "decoder": epoch + 1})
        bar.close()
        self.history_ = pd.DataFrame(history)
        for net in (self.decoder_, self.pairs_decoder_):
            if net is not None:
                net.eval()

    def _encoder_guard(self):
        """Turn the cycles off when the frozen encoder does not beat the mean predictor.

        The encoder's held-out quality is the out-of-fold SNR-weighted R2 of a backbone
        read-out (:func:`encoder_cv_quality`), or, for a learned encoder, its R2 on the
        ``encoder_val_fraction`` pairs held out of its training. The cycles pass the
        decoder's output through the encoder: through an encoder that predicts nothing
        they teach the decoder nothing true (on a real V1 recording they took it to
        chance), so without ``encoder_guard: false`` they stay on only when the lower
        95% bound of that R2 is above 0.
        """
        s, d = self.settings, self._data
        if self.encoder_quality_ is None and d["enc_val"] is not None:
            val, train = d["enc_val"], d["enc_train"]
            with torch.no_grad():
                pred = torch.cat([self.encoder_(d["x"][i].to(self.device_)).cpu()
                                  for i in torch.split(val, 256)]).numpy().astype(np.float64)
            z = d["z"].numpy().astype(np.float64)
            baseline = z[val.numpy()] - z[train.numpy()].mean(0)
            w = self.voxel_weights_.astype(np.float64)
            self.encoder_quality_ = {
                "r2": weighted_r2(z[val.numpy()], pred, baseline, w),
                **_group_bootstrap(z[val.numpy()], pred, baseline, w, d["ids"][val.numpy()],
                                   self.seed, 1000)}
        q = self.encoder_quality_
        self.cycles_on_ = bool(s["cycles"])
        if q is not None:
            log.info("selfsup encoder: held-out SNR-weighted R2 %.4f [%.4f, %.4f] against the "
                     "mean predictor", q["r2"], q["ci_low"], q["ci_high"])
        if not s["cycles"] or not s["encoder_guard"]:
            return
        if q is None:
            note = ("selfsup: the encoder is not measured on held-out pairs "
                    "(encoder_val_fraction 0): cycles kept on without the encoder guard")
        elif not q["ci_low"] > 0:
            self.cycles_on_ = False
            note = (f"selfsup: the encoder does not beat the mean predictor on held-out pairs "
                    f"(SNR-weighted R2 {q['r2']:.3f} [{q['ci_low']:.3f}, {q['ci_high']:.3f}]): "
                    f"cycles turned off, the decoder learns from the pairs only")
        else:
            return
        log.warning(note)
        self.guards_.append(note)

    def _batches(self, n, gen):
        perm = torch.randperm(n, generator=gen)
        bs = self.settings["batch_size"]
        return [perm[i:i + bs] for i in range(0, n, bs)]

    def _encoder_heldout_loss(self):
        s, d, dev = self.settings, self._data, self.device_
        self.encoder_.eval()
        with torch.no_grad():
            val = d["enc_val"]
            loss = voxel_loss(self.encoder_(d["x"][val].to(dev)), d["z"][val].to(dev), d["w"],
                              s["cosine_weight"])
        return float(loss)

    def _cycle_noise_sd(self) -> torch.Tensor:
        """Per-voxel sd of the noise added to the encoded images of the image cycle.

        A number gives every voxel that sd. ``"residual"``: each voxel's sd of the
        frozen encoder's residual ``z - E(x)`` on the held-out pairs (every pair
        without ``encoder_val_fraction``), so encoded images carry as much noise as
        measured betas and the image cycle trains the decoder on inputs like those it
        decodes; a clean ``E(x)`` teaches it to trust voxel patterns that measured
        betas bury in noise.
        """
        setting, d = self.settings["cycle_noise"], self._data
        n_vox = d["z"].shape[1]
        if setting != "residual":  # a number, checked by fit
            return torch.full((n_vox,), float(setting))
        rows = d["enc_val"] if d["enc_val"] is not None else torch.arange(len(d["z"]))
        with torch.no_grad():
            residual = torch.cat([d["z"][idx] - self.encoder_(d["x"][idx].to(self.device_)).cpu()
                                  for idx in torch.split(rows, 256)])
        return residual.std(0, correction=0)

    def _encoder_epoch(self, opt, gen):
        s, d, dev = self.settings, self._data, self.device_
        self.encoder_.train()
        total, count = 0.0, 0
        rows = d["enc_train"]
        for idx in self._batches(len(rows), gen):
            idx = rows[idx]
            x, z = d["x"][idx].to(dev), d["z"][idx].to(dev)
            loss = voxel_loss(self.encoder_(x), z, d["w"], s["cosine_weight"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
        return {"loss": total / count, "pairs": total / count}

    def _cycle_batch(self, key, gen):
        data = self._data[key]
        if data is None:
            return None
        bs = self.settings["batch_size"]
        idx = torch.randint(len(data), (min(bs, len(data)),), generator=gen)
        return data[idx].to(self.device_)

    def decoder_losses(self, decoder, image_loss, x, z, xu=None, zu=None, noise=None):
        """The decoder-phase loss terms on one batch (dict of scalar tensors).

        ``pairs``: image loss of D(z) against x; ``image_cycle``: image loss of
        D(E(xu) + noise) against xu; ``fmri_cycle``: voxel loss of E(D(zu)) against zu.
        Missing inputs leave their term out.
        """
        s = self.settings
        out = {"pairs": image_loss(decoder(z), x)}
        if xu is not None:
            zhat = self.encoder_(xu)
            if noise is not None:
                zhat = zhat + noise
            out["image_cycle"] = image_loss(decoder(zhat), xu)
        if zu is not None:
            out["fmri_cycle"] = voxel_loss(self.encoder_(decoder(zu)), zu, self._data["w"],
                                           s["cosine_weight"])
        return out

    def _decoder_epoch(self, opt_d, opt_p, image_loss, gen):
        s, d, dev = self.settings, self._data, self.device_
        weights = {"pairs": 1.0, "image_cycle": s["image_cycle_weight"],
                   "fmri_cycle": s["fmri_cycle_weight"]}
        variants = {}
        if s["cycles"]:
            variants["cycles"] = (self.decoder_, opt_d)
        if opt_p is not None:
            variants["pairs"] = (self.pairs_decoder_, opt_p)
        elif not s["cycles"]:
            variants["pairs"] = (self.decoder_, opt_d)
        sums = {v: {} for v in variants}
        count = 0
        for idx in self._batches(len(d["x"]), gen):
            x, z = d["x"][idx].to(dev), d["z"][idx].to(dev)
            # Draw every batch whether or not a variant uses it: the random stream,
            # hence the pair order, is then the same with and without cycles.
            xu, zu = self._cycle_batch("xu", gen), self._cycle_batch("zu", gen)
            noise = None
            if xu is not None:
                noise = (torch.randn((len(xu), d["z"].shape[1]), generator=gen)
                         * self.cycle_noise_sd_).to(dev)
            for variant, (decoder, opt) in variants.items():
                decoder.train()
                cyc = variant == "cycles" and self.cycles_on_
                terms = self.decoder_losses(decoder, image_loss, x, z, xu if cyc else None,
                                            zu if cyc else None, noise)
                loss = sum(weights[k] * v for k, v in terms.items())
                opt.zero_grad()
                loss.backward()
                opt.step()
                acc = sums[variant]
                acc["loss"] = acc.get("loss", 0.0) + loss.item() * len(idx)
                for k, v in terms.items():
                    acc[k] = acc.get(k, 0.0) + v.item() * len(idx)
            count += len(idx)
        return {v: {k: t / count for k, t in acc.items()} for v, acc in sums.items()}

    # -- using the fitted model ---------------------------------------------------

    def _check_betas(self, betas):
        betas = np.asarray(betas, dtype=np.float32)
        if betas.ndim != 2 or betas.shape[1] != len(self.beta_mean_):
            raise ValueError(f"selfsup: betas of shape {betas.shape}; the model was fitted on "
                             f"{len(self.beta_mean_)} voxels")
        return betas

    def _decoder(self, variant):
        if variant == "cycles" and self.settings["cycles"]:
            return self.decoder_
        if variant == "pairs":
            if self.pairs_decoder_ is not None:
                return self.pairs_decoder_
            if not self.settings["cycles"]:
                return self.decoder_
        raise ValueError(f"selfsup: no {variant!r} decoder (cycles={self.settings['cycles']}, "
                         f"ablation={self.settings['ablation']})")

    def _run(self, fn, betas, batch=256):
        z = self._standardise(self._check_betas(betas))
        out = []
        with torch.no_grad():
            for i in range(0, len(z), batch):
                out.append(fn(torch.from_numpy(z[i:i + batch]).to(self.device_)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0,))

    def decode(self, betas, *, variant: str | None = None):
        """The decoder's first (linear) layer output, shape (n, 2 width (S/4)^2).

        ``variant`` = ``"cycles"`` or ``"pairs"`` (the ablation decoder); default the
        one trained with cycles when there is one.
        """
        dec = self._decoder(variant or self.default_variant)
        return self._run(dec.latent, betas)

    @property
    def default_variant(self) -> str:
        """``"cycles"`` if the decoder was trained with cycles, else ``"pairs"``."""
        return "cycles" if self.settings["cycles"] else "pairs"

    @property
    def variants(self) -> list[str]:
        """The decoders this fit has: ``"cycles"`` and/or ``"pairs"``."""
        out = ["cycles"] if self.settings["cycles"] else []
        if self.pairs_decoder_ is not None or not self.settings["cycles"]:
            out.append("pairs")
        return out

    def reconstruct(self, betas, *, variant: str | None = None):
        """Images (n, S, S, C) in [0, 1] from betas; ``variant`` as in :meth:`decode`."""
        dec = self._decoder(variant or self.default_variant)
        out = self._run(dec, betas)
        return np.clip(self._from_work(out), 0, 1).astype(np.float32).reshape(
            len(out), *self.image_shape_)

    def predict_betas(self, images):
        """Encoder prediction of the betas (original units) for images (n, S, S, C)."""
        images = np.asarray(images, dtype=np.float32)
        if images.shape[1:] != tuple(self.image_shape_):
            raise ValueError(f"selfsup: images {images.shape[1:]} differ from the fitted "
                             f"{tuple(self.image_shape_)}")
        out = []
        with torch.no_grad():
            for i in range(0, len(images), 256):
                x = self._to_work(images[i:i + 256])
                out.append(self.encoder_(x.to(self.device_)).cpu().numpy())
        z = np.concatenate(out) if out else np.zeros((0, len(self.beta_mean_)), np.float32)
        return z * self.beta_sd_ + self.beta_mean_

    # -- metrics after reconstruction --------------------------------------------------

    def feature_extractor(self, layers=None):
        """The perceptual network (``perceptual_network`` / ``_weights``) as a
        :class:`~fmrirecon.features.FeatureExtractor` on ``layers`` (default: its own):
        frozen, and seeded by its own argument, so a resumed fit builds the same network."""
        from ..features import FeatureExtractor

        s = self.settings
        return FeatureExtractor(network=s["perceptual_network"], layers=layers,
                                weights=s["perceptual_weights"], device=self.device_,
                                seed=self.seed)

    def extra_metrics(self, data):
        """Encoder quality, semantic classification and the perceptual network's accuracy.

        - ``encoder_r``: mean over voxels of the correlation, across the split's stimuli,
          of the encoder's predicted responses to the images with the measured
          (repetition-averaged) responses; chance 0. ``encoder_ceiling_r``: mean over
          voxels of the best achievable r, ``sqrt(noise ceiling / 100)`` (no interval).
          ``encoder_fraction_of_ceiling``: variance explained (``r^2``, signed) summed
          over voxels with a positive ceiling, divided by their summed ceiling.
          Intervals: 95% bootstrap over stimuli.
        - with ``semantic_folder``: ``semantic_top<k>``, classification of each
          reconstruction among all classes of that folder by the correlation of its
          deep features (``semantic_layers``) with class prototypes, the mean
          features of the folder's images not shown in the study (chance ``k`` / number
          of classes; see :func:`fmrirecon.semantic.semantic_classification`);
          ``semantic_unseen_top<k>`` for the items whose class has no training image;
          ``semantic_decoded_top<k>`` (and ``_unseen``), the same with deep features
          decoded straight from the betas (:meth:`decode_features`) instead of the
          reconstruction's;
          ``semantic_stimulus_top<k>``, the same classifier on the shown images
          themselves (what a perfect reconstruction would score).
        - ``featnway<n>``: n-way identification (n = 2, 5, 10, 50) of the reconstructions
          by deep-feature similarity (:meth:`feature_similarity`) instead of pixel
          correlation; chance ``1 / n``.
        - with ``ablation``: ``cycles_gain_*``, see :meth:`ablation_metrics`.
        - ``perceptual_net_accuracy``: held-out accuracy of a locally trained perceptual
          network (absent for random or external weights).
        """
        out = self.encoder_metrics(data)
        quality = getattr(self, "encoder_quality_", None)
        if quality is not None:
            # what the encoder guard judged: held-out training pairs, not this split
            out["encoder_heldout_r2"] = {"mean": quality["r2"], "ci_low": quality["ci_low"],
                                         "ci_high": quality["ci_high"], "chance": 0.0}
        if len(data.test_betas) > 1:
            out.update(self.feature_identification_metrics(data))
        if "cycles" in self.variants and "pairs" in self.variants and len(data.test_betas) > 1:
            out.update(self.ablation_metrics(data))
        if self.settings["semantic_folder"]:
            out.update(self.semantic_metrics(data))
        from ..features import network_summary

        entry = network_summary(self.settings["perceptual_weights"])  # {} unless trained here
        if entry:
            out["perceptual_net_accuracy"] = entry
        return out

    def encoder_metrics(self, data) -> dict:
        """The ``encoder_*`` entries of :meth:`extra_metrics`."""
        from ..semantic import encoder_quality

        measured = np.asarray(data.test_betas, dtype=np.float64)
        predicted = self.predict_betas(data.test_images).astype(np.float64)
        if len(measured) < 3:
            return {}
        nc = None if data.noise_ceiling is None else np.asarray(data.noise_ceiling, np.float64)
        r, _ = encoder_quality(predicted, measured, nc)
        rng = np.random.default_rng([data.seed, 5])
        boot = {"r": [], "frac": []}
        ok = None if nc is None else (nc > 0) & np.isfinite(nc)

        def fraction(rr):
            good = ok & np.isfinite(rr)
            return float(np.sum(100 * np.sign(rr[good]) * rr[good] ** 2) / np.sum(nc[good])) \
                if good.any() else np.nan

        for _ in range(data.n_boot):
            idx = rng.integers(0, len(measured), len(measured))
            rb, _ = encoder_quality(predicted[idx], measured[idx])
            boot["r"].append(np.nanmean(rb) if np.any(np.isfinite(rb)) else np.nan)
            if nc is not None:
                boot["frac"].append(fraction(rb))

        def entry(mean, values, chance):
            values = np.asarray(values, dtype=np.float64)
            values = values[np.isfinite(values)]
            low, high = (np.quantile(values, [0.025, 0.975]) if len(values)
                         else (np.nan, np.nan))
            return {"mean": float(mean), "ci_low": float(low), "ci_high": float(high),
                    "chance": chance}

        out = {"encoder_r": entry(np.nanmean(r), boot["r"], 0.0)}
        if nc is not None:
            ceiling = np.sqrt(np.clip(nc[np.isfinite(nc)], 0, 100) / 100)
            out["encoder_ceiling_r"] = {"mean": float(np.mean(ceiling)), "ci_low": np.nan,
                                        "ci_high": np.nan, "chance": None}
            out["encoder_fraction_of_ceiling"] = entry(fraction(r), boot["frac"], 0.0)
        return out

    def feature_similarity(self, recon, data) -> np.ndarray:
        """Similarity (n, n) of reconstructions to the split's images by deep features.

        Features of the perceptual network's ``identification_layers``, each unit
        z-scored with the training images' statistics, correlated and averaged over
        layers (:func:`fmrirecon.features.feature_similarity`). The decoders learn with
        this network's perceptual loss, so it is not an independent judge of them; it
        compares variants trained with the same loss fairly.
        """
        from ..features import feature_similarity

        extractor = self.feature_extractor(self.settings["identification_layers"])
        return feature_similarity(np.asarray(recon, np.float32),
                                  np.asarray(data.test_images, np.float32), extractor,
                                  reference=np.asarray(data.train_images, np.float32))

    def feature_identification_metrics(self, data, n_way=(2, 5, 10, 50),
                                       n_draws: int = 1000) -> dict:
        """``featnway<n>`` of :meth:`extra_metrics`: n-way identification by deep features."""
        from ..evaluation import identification_nway, summarise

        sim = self.feature_similarity(self.reconstruct(data.test_betas), data)
        out = {}
        for n in n_way:
            if n <= len(sim):
                # The distractor draws of ablation_metrics: the entries agree.
                acc = identification_nway(sim, n, n_draws=n_draws,
                                          rng=np.random.default_rng([data.seed, 29, n]))
                out[f"featnway{n}"] = summarise(acc, 1.0 / n, data.n_boot,
                                                np.random.default_rng([data.seed, 41, n]))
        return out

    def ablation_metrics(self, data, n_way=(2, 5, 10, 50), n_draws: int = 1000) -> dict:
        """Paired comparison of the decoders trained with and without cycles (``ablation``).

        Both decoders share the encoder and their initial weights; per test image,
        ``cycles_gain_pixcorr`` is the pixel correlation of the cycles decoder minus that
        of the pairs-only one, ``cycles_gain_nway<n>`` the same for n-way identification
        by pixel correlation (the standard evaluation's) and ``cycles_gain_featnway<n>``
        by deep-feature similarity (:meth:`feature_similarity`), with the same
        distractor draws for both decoders. 95% bootstrap CIs over images; chance 0.
        """
        from ..evaluation import identification_nway, pixcorr, similarity_matrix, summarise

        true = np.asarray(data.test_images, dtype=np.float32)
        scores = {}
        for variant in ("cycles", "pairs"):
            recon = self.reconstruct(data.test_betas, variant=variant)
            scores[variant] = {"pixcorr": pixcorr(recon, true)}
            sims = {"nway": similarity_matrix(recon, true, "pixcorr"),
                    "featnway": self.feature_similarity(recon, data)}
            for prefix, sim in sims.items():
                for n in n_way:
                    if n <= len(true):
                        scores[variant][f"{prefix}{n}"] = identification_nway(
                            sim, n, n_draws=n_draws, rng=np.random.default_rng([data.seed, 29, n]))
        rng = np.random.default_rng([data.seed, 31])
        out = {}
        for name in scores["cycles"]:
            diff = scores["cycles"][name] - scores["pairs"][name]
            out[f"cycles_gain_{name}"] = summarise(diff, 0.0, data.n_boot, rng)
        return out

    def semantic_metrics(self, data) -> dict:
        """The ``semantic_*`` entries of :meth:`extra_metrics` (needs ``semantic_folder``
        and a stimuli table with ``source_file`` and the ``semantic_label`` column)."""
        from ..features import extract_features
        from ..semantic import prototypes_from_folder, semantic_classification, unseen_mask

        s = self.settings
        label = s["semantic_label"]
        table = data.stimuli
        if table is None or label not in table or "source_file" not in table:
            log.warning("selfsup: no stimuli table with source_file and %r; no semantic "
                        "classification", label)
            return {}
        lookup = table.set_index(table["stim_file"].astype(str))
        test_labels = lookup.loc[np.asarray(data.test_stim_files, dtype=str), label].astype(str)
        train_labels = lookup.loc[np.asarray(data.train_stim_files, dtype=str), label].astype(str)
        extractor = self.feature_extractor(s["semantic_layers"])
        log.info("selfsup semantic classification: %s", extractor.provenance)
        size, _, channels = self.image_shape_
        # Every image of the study (train and test) stays out of the prototypes.
        protos, names, _ = prototypes_from_folder(
            s["semantic_folder"], extractor, size, channels, label_column=label,
            exclude=table["source_file"].dropna().astype(str).tolist(),
            max_per_class=s["semantic_max_per_class"], seed=self.seed)
        known = np.isin(test_labels.to_numpy(), names)
        if not known.all():
            log.warning("selfsup: %d test items of classes without prototypes left out",
                        (~known).sum())
        recon = self.reconstruct(data.test_betas)[known]
        labels = test_labels.to_numpy()[known]
        unseen = unseen_mask(labels, train_labels.to_numpy())
        log.info("selfsup: %d of %d test items of classes without training images",
                 unseen.sum(), len(labels))
        out = {}
        recon_feats = extract_features(recon, extractor)
        decoded = {layer: values[known] for layer, values in
                   self.decode_features(data, extractor).items()}
        everything = np.ones(len(labels), bool)
        sets = {"semantic": (recon_feats, everything),
                "semantic_unseen": (recon_feats, unseen),
                "semantic_decoded": (decoded, everything),
                "semantic_decoded_unseen": (decoded, unseen),
                "semantic_stimulus": (extract_features(np.asarray(data.test_images)[known], extractor),
                                      everything)}
        for prefix, (all_feats, keep) in sets.items():
            if keep.sum() == 0:
                continue
            feats = {layer: values[keep] for layer, values in all_feats.items()}
            _, summary = semantic_classification(feats, labels[keep], protos, names,
                                                 k=s["semantic_k"], n_boot=data.n_boot,
                                                 seed=data.seed)
            for kk in sorted({int(v) for v in s["semantic_k"]}):
                out[f"{prefix}_top{kk}"] = summary[f"top{kk}"]
        return out

    def decode_features(self, data, extractor) -> dict:
        """Deep features of the test items decoded straight from their betas.

        The shared ridge decoder (:class:`fmrirecon.decoding.RidgeDecoder`, a penalty
        per unit) learns the map from the training betas to the features of their
        images, as Horikawa & Kamitani (2017) decoded features for unseen categories;
        no image is drawn. Returns ``{layer: (n_test, units)}``.
        """
        from ..decoding import RidgeDecoder
        from ..features import extract_features

        train = extract_features(np.asarray(data.train_images), extractor)
        layers = list(train)
        decoder = RidgeDecoder(device=self.device_, seed=self.seed).fit(
            data.train_betas, np.concatenate([train[layer] for layer in layers], axis=1))
        predicted = decoder.predict(data.test_betas)
        edges = np.cumsum([train[layer].shape[1] for layer in layers])[:-1]
        return dict(zip(layers, np.split(predicted, edges, axis=1)))

    def training_history(self):
        """Per-epoch loss curves (phase, variant, epoch, loss terms)."""
        return self.history_

    def write_history(self, path) -> None:
        """Write the per-epoch loss curves (TSV: phase, variant, epoch, loss terms)."""
        self.history_.to_csv(path, sep="\t", index=False, na_rep="n/a")

    # -- pickling: networks on the CPU, no training-only state ------------------------

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_data", None)
        for key in ("encoder_", "decoder_", "pairs_decoder_"):
            if state.get(key) is not None:
                state[key] = copy.deepcopy(state[key]).to("cpu")  # leave the live model be
        state.pop("device_", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        # Models pickled before a setting existed get its default (and were fitted
        # without the encoder guard and at their own side).
        self.settings = {**DEFAULTS, **self.settings}
        self.__dict__.setdefault("cycles_on_", self.settings["cycles"])
        self.__dict__.setdefault("guards_", [])
        if "image_shape_" in state:
            self.__dict__.setdefault("work_size_", self.image_shape_[0])
        if "encoder_" in state:
            self.device_ = select_device(self.settings["device"])
            for key in ("encoder_", "decoder_", "pairs_decoder_"):
                if getattr(self, key, None) is not None:
                    getattr(self, key).to(self.device_).eval()
