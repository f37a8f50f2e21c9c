"""The self-supervised encoder-decoder method (see :mod:`fmrirecon.methods.selfsup`)."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
from pathlib import Path

import numpy as np
import torch

from ...torchkit import images_to_tensor, seed_everything, select_device
from ..base import ReconstructionMethod
from .data import _fingerprint, load_unpaired_images
from .guard import _cv_groups, encoder_cv_quality
from .losses import snr_weights
from .networks import BACKBONE_LAYERS, BackboneEncoder, build_decoder, build_encoder
from .training import Training

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




class SelfSupervisedReconstruction(Training, ReconstructionMethod):
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
            (:func:`fmrirecon.stimuli.stimulus_sources`).
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
        size = images.shape[1]
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
        self.voxel_weights_ = self._voxel_weights(betas, images, voxel_weights)
        if unpaired_betas is not None and len(unpaired_betas) == 0:
            unpaired_betas = None
        z_unpaired, unpaired_betas, unpaired_images = self._unpaired_data(
            unpaired_betas, unpaired_images, unpaired_exclude, images)

        x = self._to_work(images)
        cv_groups = _cv_groups(images, groups)
        self._build_networks(x, z, cv_groups)
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
            self._fit_readout(z, groups, cv_groups)
        self._fingerprint = _fingerprint(betas, images, unpaired_betas, unpaired_images,
                                         self.voxel_weights_) + json.dumps(
            {"seed": self.seed, **{k: v for k, v in s.items() if k not in (
                "progress", "resume", "checkpoint_every", "device", *_EVALUATION_KEYS)}},
            sort_keys=True, default=str)
        self._train()
        del self._data
        return self

    def _voxel_weights(self, betas, images, voxel_weights) -> np.ndarray:
        """The voxel loss weights (default :func:`snr_weights`), checked, mean 1."""
        n_vox = betas.shape[1]
        if voxel_weights is None:
            voxel_weights = snr_weights(betas, images)
        voxel_weights = np.asarray(voxel_weights, dtype=np.float32)
        if voxel_weights.shape != (n_vox,) or not np.all(np.isfinite(voxel_weights)) \
                or (voxel_weights < 0).any() or voxel_weights.sum() <= 0:
            raise ValueError(f"selfsup: voxel_weights must be {n_vox} finite values >= 0, "
                             f"not all 0")
        return voxel_weights / voxel_weights.mean()

    def _unpaired_data(self, unpaired_betas, unpaired_images, unpaired_exclude, images):
        """The cycles' data: standardised unpaired betas, and unpaired images (given, or
        from ``unpaired_folder``); checked against the pairs. None when unused."""
        s = self.settings
        n_vox = len(self.beta_mean_)
        _, size, _, channels = images.shape
        z_unpaired = None
        if unpaired_betas is not None and s["cycles"]:
            unpaired_betas = np.asarray(unpaired_betas, dtype=np.float32)
            if unpaired_betas.ndim != 2 or unpaired_betas.shape[1] != n_vox:
                raise ValueError(f"selfsup: unpaired_betas {unpaired_betas.shape} must have "
                                 f"{n_vox} voxels")
            z_unpaired = self._standardise(unpaired_betas)
        if unpaired_images is None and s["unpaired_folder"] and s["cycles"]:
            unpaired_images = load_unpaired_images(s["unpaired_folder"], size, channels,
                                                   s["unpaired_max"], self.seed, unpaired_exclude)
        if unpaired_images is not None:
            unpaired_images = np.asarray(unpaired_images, dtype=np.float32)
            if unpaired_images.shape[1:] != images.shape[1:]:
                raise ValueError(f"selfsup: unpaired images {unpaired_images.shape[1:]} differ "
                                 f"from the paired {images.shape[1:]}")
        if s["cycles"] and s["decoder_epochs"] and unpaired_images is None and z_unpaired is None:
            log.warning("selfsup: cycles on but no unpaired images or betas; pairs only")
        return z_unpaired, unpaired_betas, unpaired_images

    def _build_networks(self, x, z, cv_groups) -> None:
        """The encoder (on its backbone, if any), the decoder and, for the ablation, the
        pairs-only decoder from the decoder's exact initial weights."""
        s = self.settings
        work, channels, n_vox = self.work_size_, x.shape[1], z.shape[1]
        self.encoder_quality_ = None
        backbone = self._encoder_backbone(x, z, cv_groups)
        self.encoder_ = build_encoder(work, channels, n_vox, s["width"], backbone).to(self.device_)
        self.decoder_ = build_decoder(work, channels, n_vox, s["width"]).to(self.device_)
        self.pairs_decoder_ = None
        if s["ablation"] and s["cycles"]:
            self.pairs_decoder_ = build_decoder(work, channels, n_vox, s["width"]).to(self.device_)
            self.pairs_decoder_.load_state_dict(self.decoder_.state_dict())

    def _fit_readout(self, z, groups, cv_groups) -> None:
        """A backbone encoder's ridge read-out on the encoder's pairs, and (unless the
        backbone choice measured it already) its out-of-fold quality on every pair."""
        rows = self._data["enc_train"]
        if self.encoder_quality_ is None:
            feats = self.encoder_.features_of(self._data["x"])
            self.encoder_quality_ = encoder_cv_quality(feats, z, self.voxel_weights_, cv_groups,
                                                       self.seed, device=self.device_)
        ridge = self.encoder_.fit(self._data["x"][rows], z[rows.numpy()],
                                  None if groups is None else np.asarray(groups)[rows.numpy()],
                                  seed=self.seed)
        log.info("selfsup encoder read-out: ridge, median cross-validated R2 %.3f, "
                 "median penalty %.3g", float(np.median(ridge.cv_scores_)),
                 float(np.median(ridge.best_alphas_)))

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
        from ..backbones import BACKBONES, build_backbone

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
        from ...features import FeatureExtractor

        s = self.settings
        return FeatureExtractor(network=s["perceptual_network"], layers=layers,
                                weights=s["perceptual_weights"], device=self.device_,
                                seed=self.seed)

    def extra_metrics(self, data):
        """Encoder quality, n-way identification by deep features, the cycles' gain,
        semantic classification and the perceptual network's accuracy: see
        :func:`fmrirecon.methods.selfsup.metrics.extra_metrics`."""
        from .metrics import extra_metrics

        return extra_metrics(self, data)

    def feature_similarity(self, recon, data) -> np.ndarray:
        """Deep-feature similarity of reconstructions to the split's images (see
        :func:`fmrirecon.methods.selfsup.metrics.feature_similarity`)."""
        from .metrics import feature_similarity

        return feature_similarity(self, recon, data)

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

