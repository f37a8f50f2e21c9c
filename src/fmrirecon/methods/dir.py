"""Deep image reconstruction (Shen, Horikawa, Majima & Kamitani 2019).

Voxels are decoded into the features of several layers of a deep network, one linear
regression per feature unit (features z-scored with training statistics; optionally on
the voxels that correlate best with that unit in training, as the Kamitani lab code
does). An image is then optimised so that its features match the decoded ones across
layers, each layer's error normalised by the decoded features' norm, either directly
in pixel space with image priors (total variation, jitter) or in the input space of a
deep generator network.

Departures from the paper, for a laptop and no internet: the default network is a
small CNN (``smallconv``), trained locally or randomly initialised (see
:attr:`DeepImageReconstruction.provenance_`); the optimiser is Adam on all test images
at once instead of per-image gradient descent with momentum.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..decoding import DEFAULT_ALPHAS, RidgeDecoder, cv_splits
from .base import ReconstructionMethod

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- feature decoders


class VoxelSelectionRidge:
    """Ridge regression per target on that target's top-k voxels by training correlation.

    The voxel set differs per target, so the one-decomposition trick of
    :class:`~fmrirecon.decoding.RidgeDecoder` does not apply; targets are solved in
    batches of small (k x k, or n x n when k > n) systems with torch.

    Parameters
    ----------
    n_voxels : int
        Voxels kept per target (capped at the number of voxels).
    alphas : float or list of float
        Ridge penalty; with several, one is chosen per call to :meth:`fit` by
        cross-validated R2 on a random subset of ``n_cv_targets`` targets.
    n_folds : int
    n_cv_targets : int
    seed : int

    Attributes
    ----------
    index_ : ndarray, shape (n_targets, k)
        Selected voxels of each target.
    coef_ : ndarray, shape (n_targets, k)
        Weights on the standardised selected voxels.
    intercept_ : ndarray, shape (n_targets,)
    alpha_ : float
    """

    def __init__(self, n_voxels: int = 100, alphas=100.0, n_folds: int = 5,
                 n_cv_targets: int = 256, seed: int = 0):
        self.n_voxels = int(n_voxels)
        self.alphas = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
        self.n_folds = n_folds
        self.n_cv_targets = n_cv_targets
        self.seed = seed

    @staticmethod
    def _solve(X, Y, index, alpha):
        """Ridge weights (t, k) of targets Y (n, t) on X[:, index] (index (t, k))."""
        import torch

        Xsel = X.T[index].transpose(1, 2)  # (t, n, k)
        n, k = Xsel.shape[1:]
        if k <= n:
            gram = Xsel.transpose(1, 2) @ Xsel
            gram.diagonal(dim1=1, dim2=2).add_(alpha)
            rhs = (Xsel.transpose(1, 2) @ Y.T.unsqueeze(2))
            return torch.linalg.solve(gram, rhs).squeeze(2)
        # More voxels than trials: the kernel (n x n) form is the same solution.
        gram = Xsel @ Xsel.transpose(1, 2)
        gram.diagonal(dim1=1, dim2=2).add_(alpha)
        dual = torch.linalg.solve(gram, Y.T.unsqueeze(2))
        return (Xsel.transpose(1, 2) @ dual).squeeze(2)

    def _batches(self, n_targets, n_trials, k):
        size = max(1, int(2e7 // (n_trials * k)))  # bound the gathered (t, n, k) block
        return [slice(s, min(n_targets, s + size)) for s in range(0, n_targets, size)]

    def fit(self, X: np.ndarray, Y: np.ndarray, groups=None) -> "VoxelSelectionRidge":
        """Fit on betas ``X`` (n, n_voxels) and targets ``Y`` (n, n_targets)."""
        import torch

        X = np.asarray(X, dtype=np.float32)
        Y = np.asarray(Y, dtype=np.float32)
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"{X.shape[0]} trials of betas but {Y.shape[0]} of targets")
        self.x_mean_ = X.mean(0)
        self.x_scale_ = X.std(0)
        self.x_scale_[self.x_scale_ == 0] = 1.0
        Xs = torch.from_numpy((X - self.x_mean_) / self.x_scale_)
        self.intercept_ = Y.mean(0)
        Yc = torch.from_numpy(Y - self.intercept_)
        n, k = len(X), min(self.n_voxels, X.shape[1])

        # Top-k voxels by |correlation| with each target over the training trials.
        y_sd = Yc.std(0, unbiased=False)
        y_sd[y_sd == 0] = 1.0
        index = np.empty((Y.shape[1], k), dtype=np.int64)
        for sl in self._batches(Y.shape[1], X.shape[1], 1):
            corr = (Xs.T @ (Yc[:, sl] / y_sd[sl])) / n  # (v, t); voxels are unit-variance
            index[sl] = torch.topk(corr.abs(), k, dim=0).indices.T.numpy()
        self.index_ = index
        index_t = torch.from_numpy(index)

        self.alpha_ = float(self.alphas[0])
        if len(self.alphas) > 1:
            self.alpha_ = self._choose_alpha(Xs, Yc, index_t, groups)
        coef = np.empty((Y.shape[1], k), dtype=np.float32)
        for sl in self._batches(Y.shape[1], n, k):
            coef[sl] = self._solve(Xs, Yc[:, sl], index_t[sl], self.alpha_).numpy()
        self.coef_ = coef
        return self

    def _choose_alpha(self, Xs, Yc, index, groups) -> float:
        """The penalty of best mean cross-validated R2 over a random subset of targets.

        Voxel selection is not repeated inside the folds, which flatters every
        penalty alike; the choice of penalty is what matters here.
        """
        import torch

        rng = np.random.default_rng(self.seed)
        pick = np.sort(rng.choice(Yc.shape[1], min(self.n_cv_targets, Yc.shape[1]), replace=False))
        Y, idx = Yc[:, pick], index[pick]
        sse = np.zeros(len(self.alphas))
        for train, val in cv_splits(len(Xs), self.n_folds, groups, self.seed):
            train, val = torch.from_numpy(train), torch.from_numpy(val)
            Xt, Xv = Xs[train], Xs[val]
            mean = Y[train].mean(0)
            for a, alpha in enumerate(self.alphas):
                w = self._solve(Xt, Y[train] - mean, idx, float(alpha))
                pred = (Xv.T[idx] * w.unsqueeze(2)).sum(1).T + mean  # (n_val, t)
                sse[a] += float(((pred - Y[val]) ** 2).sum())
        best = float(self.alphas[int(np.argmin(sse))])
        log.info("voxel-selection ridge: alpha %.3g chosen from %s", best, self.alphas.tolist())
        return best

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted targets (n, n_targets) for betas ``X``."""
        Xs = (np.asarray(X, dtype=np.float32) - self.x_mean_) / self.x_scale_
        out = np.empty((len(Xs), len(self.coef_)), dtype=np.float32)
        for sl in self._batches(len(self.coef_), len(Xs), self.coef_.shape[1]):
            out[:, sl] = np.einsum("ntk,tk->nt", Xs[:, self.index_[sl]], self.coef_[sl])
        return out + self.intercept_


# ---------------------------------------------------------------- decoded-feature accuracy


def _rowwise_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching rows of a and b (NaN for constant rows)."""
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * b).sum(1) / denom, np.nan)


def decoded_feature_scores(decoded: dict, true: dict, mean: dict | None = None,
                           std: dict | None = None) -> dict:
    """Per-unit profile and per-image pattern correlations of decoded with true features.

    Parameters
    ----------
    decoded, true : dict of str to ndarray, shape (n_images, n_units)
    mean, std : dict of str to ndarray, shape (n_units,), optional
        Training statistics; pattern correlation is computed on features z-scored with
        them, so that the mean feature pattern (which any decoder gets right) does not
        inflate it (as in the Kamitani lab's evaluation).

    Returns
    -------
    dict
        Per layer ``{"profile": (n_units,), "pattern": (n_images,), "ident2": (n_images,)}``:
        correlation of each unit across images (NaN for constant units), of each image
        across units, and exhaustive 2-way identification of images by pattern
        correlation (chance 0.5).
    """
    from ..evaluation import correlation_matrix, identification_2way

    scores = {}
    for name, pred in decoded.items():
        pred = np.asarray(pred, dtype=np.float64)
        real = np.asarray(true[name], dtype=np.float64)
        if pred.shape != real.shape:
            raise ValueError(f"layer {name}: decoded {pred.shape} vs true {real.shape}")
        profile = _rowwise_corr(pred.T, real.T)
        if mean is not None and std is not None:
            sd = np.where(std[name] > 0, std[name], 1.0)
            pred, real = (pred - mean[name]) / sd, (real - mean[name]) / sd
        ident = (identification_2way(correlation_matrix(pred, real)) if len(pred) > 1
                 else np.array([np.nan]))
        scores[name] = {"profile": profile, "pattern": _rowwise_corr(pred, real), "ident2": ident}
    return scores


def decoded_feature_accuracy(decoded: dict, true: dict, mean: dict | None = None,
                             std: dict | None = None) -> "pd.DataFrame":
    """Profile and pattern correlation of decoded with true features, per layer.

    The means of :func:`decoded_feature_scores`: one row per layer with ``layer``,
    ``n_units``, ``profile_r``, ``pattern_r`` and ``ident2``.
    """
    import pandas as pd

    rows = []
    for name, score in decoded_feature_scores(decoded, true, mean, std).items():
        profile = score["profile"]
        rows.append({"layer": name, "n_units": np.asarray(decoded[name]).shape[1],
                     "profile_r": float(np.nanmean(profile)) if np.any(~np.isnan(profile)) else np.nan,
                     "pattern_r": float(np.nanmean(score["pattern"])),
                     "ident2": float(np.nanmean(score["ident2"]))})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- feature inversion


def _fit_to_shape(images, height: int, width: int, channels: int):
    """Generator output (n, C', H', W') resized and channel-converted to (n, C, H, W)."""
    from torch.nn import functional as F

    if images.shape[1] != channels:
        if channels == 1:
            images = images.mean(1, keepdim=True)
        elif images.shape[1] == 1:
            images = images.expand(-1, channels, -1, -1)
        else:
            raise ValueError(f"generator gives {images.shape[1]} channels, images have {channels}")
    if images.shape[-2:] != (height, width):
        images = F.interpolate(images, size=(height, width), mode="bilinear",
                               align_corners=False, antialias=images.shape[-1] > width)
    return images


def _latent_dim(generator, latent_dim):
    from torch import nn

    if latent_dim:
        return int(latent_dim)
    if getattr(generator, "latent_dim", None):
        return int(generator.latent_dim)
    for module in generator.modules() if isinstance(generator, nn.Module) else []:
        if isinstance(module, nn.Linear):
            return module.in_features
    raise ValueError("generator: cannot tell its latent size; set latent_dim")


def invert_features(targets: dict, extractor, image_shape: tuple[int, int, int], *,
                    units: dict | None = None, layer_weights: dict | None = None,
                    iterations: int = 200, lr: float = 0.05, tv_weight: float = 0.0,
                    jitter: int = 0, init: np.ndarray | None = None, generator=None,
                    latent_dim: int | None = None, latent_lr: float = 0.05,
                    latent_weight: float = 0.0, latent_init: np.ndarray | None = None,
                    seed: int = 0, progress: bool = True) -> np.ndarray:
    """Images whose features match ``targets``: batched optimisation over all images.

    Parameters
    ----------
    targets : dict of str to ndarray, shape (n, n_units)
        Flattened features per layer (a subset of ``extractor.layers``), e.g. decoded.
    extractor : fmrirecon.features.FeatureExtractor
    image_shape : (H, W, C)
    units : dict of str to ndarray of int, optional
        Which flattened units of each layer ``targets`` holds (all when absent).
    layer_weights : dict of str to float, optional
        Relative weight of each layer (default equal); normalised to sum to one. Each
        layer's squared error is divided by the squared norm of its target per image,
        so that layers of different size and scale count as weighted.
    iterations : int
    lr : float
        Adam step size on pixels (cosine-decayed to 1% of it).
    tv_weight : float
        Weight of the total-variation prior (mean squared neighbour difference).
    jitter : int
        Random shift (pixels, each axis) of the image at each iteration: a
        translation-robustness prior (Mahendran & Vedaldi 2015; Shen et al. 2019).
    init : ndarray (n, H, W, C) or (H, W, C), optional
        Starting pixels (default: 0.5 plus small seeded noise).
    generator : callable, optional
        Maps latents (n, d) to images (n, C', H', W') in [0, 1]; the latents are
        optimised instead of pixels (the deep generator network prior).
    latent_dim : int, optional
        Latent size of ``generator`` (default: its ``latent_dim`` attribute).
    latent_lr : float
        Adam step size on the latents.
    latent_weight : float
        Weight of the Gaussian prior on the latents, centred on their start: the mean
        squared distance of each latent from its starting value.
    latent_init : ndarray, shape (n, d), optional
        Starting latents, and the centre of their prior (default: zeros, the
        generator's own prior).
    seed : int
    progress : bool
        Show a tqdm bar on stderr.

    Returns
    -------
    ndarray, shape (n, H, W, C)
        float32 in [0, 1].
    """
    import torch
    from tqdm.auto import tqdm

    unknown = [name for name in targets if name not in extractor.layers]
    if unknown:
        raise ValueError(f"target layers {unknown} are not layers of the extractor {extractor.layers}")
    device = extractor.device
    height, width, channels = image_shape
    names = list(targets)
    t = {name: torch.as_tensor(np.asarray(targets[name]), dtype=torch.float32, device=device)
         for name in names}
    n = len(t[names[0]])
    idx = {name: torch.as_tensor(units[name], device=device)
           for name in names if units is not None and units.get(name) is not None}
    raw = np.array([1.0 if layer_weights is None else float(layer_weights.get(name, 0.0))
                    for name in names])
    if raw.sum() <= 0 or np.any(raw < 0):
        raise ValueError(f"layer_weights: need non-negative weights with a positive sum, got {raw}")
    weights = dict(zip(names, raw / raw.sum()))
    norms = {name: (t[name] ** 2).sum(1).clamp_min(1e-8) for name in names}

    gen = torch.Generator(device="cpu").manual_seed(seed)
    if generator is not None:
        if hasattr(generator, "requires_grad_"):
            generator.requires_grad_(False)
            generator.eval()
        d = _latent_dim(generator, latent_dim)
        if latent_init is None:
            anchor = torch.zeros(n, d)
        else:
            anchor = torch.as_tensor(np.asarray(latent_init, dtype=np.float32))
            if anchor.shape != (n, d):
                raise ValueError(f"latent_init: shape {tuple(anchor.shape)}, expected {(n, d)}")
        anchor = anchor.to(device)
        param = anchor.clone().requires_grad_(True)
        step = latent_lr

        def draw():
            return _fit_to_shape(generator(param).to(device), height, width, channels)
    else:
        if init is None:
            start = 0.5 + 0.01 * torch.randn(n, channels, height, width, generator=gen)
        else:
            init = np.asarray(init, dtype=np.float32)
            start = torch.from_numpy(np.broadcast_to(init, (n, height, width, channels)).copy())
            start = start.permute(0, 3, 1, 2)
        param = start.clamp(0, 1).to(device).requires_grad_(True)
        step = lr

        def draw():
            return param

    opt = torch.optim.Adam([param], lr=step)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, iterations), eta_min=step * 0.01)
    bar = tqdm(range(iterations), desc="dir " + ("generator" if generator is not None else "pixels"),
               file=sys.stderr, disable=not progress, mininterval=5)
    for _ in bar:
        images = draw()
        shown = images
        if jitter:
            dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=gen).tolist()
            shown = torch.roll(images, shifts=(dy, dx), dims=(2, 3))
        feats = extractor(shown)
        loss_per_image = torch.zeros(n, device=device)
        for name in names:
            f = feats[name].flatten(1)
            if name in idx:
                f = f[:, idx[name]]
            loss_per_image = loss_per_image + weights[name] * ((f - t[name]) ** 2).sum(1) / norms[name]
        if tv_weight:
            tv = ((images[..., 1:, :] - images[..., :-1, :]) ** 2).flatten(1).mean(1) + \
                 ((images[..., :, 1:] - images[..., :, :-1]) ** 2).flatten(1).mean(1)
            loss_per_image = loss_per_image + tv_weight * tv
        if generator is not None and latent_weight:
            loss_per_image = loss_per_image + latent_weight * ((param - anchor) ** 2).mean(1)
        # A sum, not a mean: each image's gradient does not depend on how many there are.
        loss = loss_per_image.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if generator is None:
            with torch.no_grad():
                param.clamp_(0, 1)
        bar.set_postfix(loss=loss.item() / n, refresh=False)
    with torch.no_grad():
        out = draw().clamp(0, 1)
    return out.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)


# ---------------------------------------------------------------- the method


class _torch_threads:
    """Set torch's CPU threads inside a block (no-op for None), restoring them after."""

    def __init__(self, threads: int | None):
        self.threads = threads

    def __enter__(self):
        import torch

        self.previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(int(self.threads))

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.previous)


class DeepImageReconstruction(ReconstructionMethod):
    """Decode deep-network features from voxels, then optimise an image to match them.

    Parameters
    ----------
    network : str
        ``"smallconv"`` or a torchvision model name (see
        :class:`fmrirecon.features.FeatureExtractor`).
    weights : str, optional
        None (seeded random init), a torchvision weights name, or a state_dict path.
    layers : list of str, optional
        Layers to decode and match (default: the network's default layers).
    input_size : int, optional
        Side images are resized to before the network.
    max_units : int, optional
        Decode at most this many units per layer (a seeded random subset; the
        optimisation matches only those). For large networks on small machines.
    n_voxels : int, optional
        Per-unit voxel selection: each unit is decoded from its ``n_voxels`` voxels of
        highest training correlation (:class:`VoxelSelectionRidge`, lab code). None:
        all voxels with the shared :class:`~fmrirecon.decoding.RidgeDecoder`.
    alphas : list of float, optional
        Ridge penalties searched (per unit by the shared decoder; per layer with voxel
        selection).
    n_folds : int
        Cross-validation folds of the penalty.
    prior : {"pixel", "generator"}
        Optimise pixels (with ``tv_weight`` and ``jitter``) or a generator's latents.
    generator : str, optional
        Path of the generator (``fmrirecon.generative.load_generator``); required with
        ``prior="generator"``.
    iterations : int
    lr, latent_lr : float
        Adam step sizes on pixels and on latents.
    layer_weights : dict, optional
        Relative layer weights (default equal), see :func:`invert_features`.
    tv_weight : float
    jitter : int
    latent_weight : float
    init : {"mean", "gray"}
        Starting pixels: the mean training image or mid-gray.
    latent_init : {"zero", "pixel"}
        Starting latents of ``prior="generator"``: zero (the prior's mean, as Shen et
        al. started) or ``"pixel"``, the latent the generator's own encoder gives the
        pixel-prior reconstruction of the same decoded features. ``latent_weight``
        then keeps the latents near that start: the generator refines the pixel
        solution within its range instead of searching from its mean image.
        The generator file (:mod:`fmrirecon.generative`) holds that encoder.
    device : str
        ``"auto"`` takes a GPU when visible.
    threads : int, optional
        CPU threads of torch while fitting and reconstructing (default: torch's
        own). On a shared CPU, 1 can be many times faster than oversubscribing.
    generalisation : dict, optional
        ``{"train": family, "test": [families]}``: :meth:`extra_metrics` also fits a
        copy on the training trials of one stimulus family (``family`` column of the
        stimuli table) and scores it on each test family (Shen et al.'s check of
        training on natural images and testing on shapes and letters).
    compare_priors : bool
        :meth:`extra_metrics` also reconstructs with the other prior (same decoders,
        same settings) and reports the paired per-image differences ``prior_gain_*``.
    seed : int
    """

    name = "dir"

    #: ``train_network`` is read by the workflow (its checkpoint arrives as ``weights``).
    WORKFLOW_KEYS = ("method", "train_network")

    @classmethod
    def trained_network(cls, settings):
        """The decoded network, when ``train_network`` trains it here."""
        if not settings.get("train_network"):
            return None
        return settings.get("network", "smallconv"), settings["train_network"]

    @classmethod
    def input_files(cls, settings, locations):
        """The locally trained network as ``weights``; the generator of the generator
        prior (also for ``compare_priors``)."""
        files = super().input_files(settings, locations)
        trained = cls.trained_network(settings)
        if trained:
            files["weights"] = Path(locations["features"]) / f"{trained[0]}_weights.pt"
        if settings.get("prior") == "generator" or settings.get("compare_priors"):
            files["generator"] = locations["generator"]
        return files

    #: Settings of the inversion only: candidates differing in them share the decoders.
    INVERSION_SETTINGS = ("iterations", "lr", "latent_lr", "layer_weights", "tv_weight", "jitter",
                          "latent_weight", "init", "latent_init", "prior", "threads", "device")

    @classmethod
    def validation_search(cls, settings):
        """The image prior's weight: ``tv_weight`` for pixels; for the generator, the
        latents' start and their pull toward it (``latent_init``, ``latent_weight``)."""
        if settings.get("prior", "pixel") == "generator":
            return {"latent_init": ["zero", "pixel"], "latent_weight": [0.1, 1.0]}
        return {"tv_weight": [0.1, 0.5, 2.0]}

    @classmethod
    def ablation(cls, settings):
        """The generator prior is kept only if it beats the pixel prior."""
        return {"prior": "pixel"} if settings.get("prior", "pixel") == "generator" else None

    def reconstruct_with(self, betas, overrides):
        """Other inversion settings reuse this fit's decoders; others need a refit."""
        import copy

        if set(overrides) - set(self.INVERSION_SETTINGS):
            return None
        other = copy.copy(self)  # shares the extractor, generator and decoders
        # the pixel inversion stays valid (e.g. as the generator's start) unless a
        # setting of its own changed
        pixel_keys = {"iterations", "lr", "layer_weights", "tv_weight", "jitter", "init"}
        other._inversion_cache = {} if set(overrides) & pixel_keys else \
            {k: v for k, v in self._inversion_cache.items() if k == "pixel"}
        for key, value in overrides.items():
            setattr(other, key, value)
        if other.prior == "generator" and not other.generator:
            return None
        return other.reconstruct(betas)

    def __init__(self, *, network: str = "smallconv", weights: str | None = None,
                 layers: list[str] | None = None, input_size: int | None = None,
                 max_units: int | None = None, n_voxels: int | None = None, alphas=None,
                 n_folds: int = 5, prior: str = "pixel", generator: str | None = None,
                 iterations: int = 200, lr: float = 0.05, latent_lr: float = 0.05,
                 layer_weights: dict | None = None, tv_weight: float = 0.5, jitter: int = 0,
                 latent_weight: float = 0.01, init: str = "mean", latent_init: str = "zero",
                 device: str = "auto",
                 threads: int | None = None, generalisation: dict | None = None,
                 compare_priors: bool = False, seed: int = 0, **params):
        super().__init__(seed=seed, **params)
        generalisation = _check_generalisation(generalisation)
        if prior not in ("pixel", "generator"):
            raise ValueError(f"methods.dir.prior: {prior!r} is not 'pixel' or 'generator'")
        if prior == "generator" and not generator:
            raise ValueError("methods.dir.generator: a generator path is required with prior 'generator'")
        if compare_priors and not generator:
            raise ValueError("methods.dir.compare_priors: needs a generator (both priors run)")
        if init not in ("mean", "gray"):
            raise ValueError(f"methods.dir.init: {init!r} is not 'mean' or 'gray'")
        if latent_init not in ("zero", "pixel"):
            raise ValueError(f"methods.dir.latent_init: {latent_init!r} is not 'zero' or 'pixel'")
        if n_voxels is not None and int(n_voxels) < 1:
            raise ValueError(f"methods.dir.n_voxels: must be positive, got {n_voxels}")
        self.network = network
        self.weights = None if weights is None else str(weights)
        self.layers = layers
        self.input_size = input_size
        self.max_units = max_units
        self.n_voxels = n_voxels
        self.alphas = None if alphas is None else list(alphas)
        self.n_folds = n_folds
        self.prior = prior
        self.generator = None if generator is None else str(generator)
        self.iterations = iterations
        self.lr = lr
        self.latent_lr = latent_lr
        self.layer_weights = layer_weights
        self.tv_weight = tv_weight
        self.jitter = jitter
        self.latent_weight = latent_weight
        self.init = init
        self.latent_init = latent_init
        self.device = device
        self.threads = threads
        self.generalisation = generalisation
        self.compare_priors = bool(compare_priors)
        self._extractor = None
        self._generator = None
        self._inversion_cache = {}

    #: Constructor settings (besides seed), as in the config; see :meth:`settings`.
    _SETTINGS = ("network", "weights", "layers", "input_size", "max_units", "n_voxels",
                 "alphas", "n_folds", "prior", "generator", "iterations", "lr", "latent_lr",
                 "layer_weights", "tv_weight", "jitter", "latent_weight", "init",
                 "latent_init", "device", "threads", "generalisation", "compare_priors")

    def settings(self) -> dict:
        """The constructor settings of this model (seed aside), e.g. to fit a copy."""
        return {key: getattr(self, key) for key in self._SETTINGS}

    # Torch modules are rebuilt from the settings rather than pickled.
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_extractor"] = None
        state["_generator"] = None
        state.pop("_inversion_cache", None)
        return state

    def __setstate__(self, state):
        # Models pickled before a setting existed get its default.
        state.setdefault("generalisation", None)
        state.setdefault("compare_priors", False)
        state.setdefault("latent_init", "zero")
        state.pop("_recon_cache", None)
        state["_inversion_cache"] = {}  # a cache does not outlive its process
        self.__dict__.update(state)

    @property
    def extractor(self):
        """The feature extractor (built on first use)."""
        if self._extractor is None:
            from ..torchkit import select_device
            from ..features import FeatureExtractor

            self._extractor = FeatureExtractor(self.network, self.layers, self.weights,
                                               device=select_device(self.device), seed=self.seed,
                                               input_size=self.input_size)
        return self._extractor

    def load_generator(self):
        """The generator network of ``prior="generator"`` (loaded on first use)."""
        if self._generator is None:
            from ..generative import load_generator  # the latent method's module

            path = Path(self.generator)
            if not path.exists():
                raise FileNotFoundError(f"methods.dir.generator: {path} not found")
            self._generator = load_generator(path).to(self.extractor.device)
        return self._generator

    def fit(self, betas, images, groups=None):
        """Extract training features, then fit one decoder per layer."""
        with _torch_threads(self.threads):
            return self._fit(betas, images, groups)

    def _fit(self, betas, images, groups):
        from ..torchkit import seed_everything
        from ..features import extract_features

        seed_everything(self.seed)
        betas = np.asarray(betas, dtype=np.float32)
        images = np.asarray(images, dtype=np.float32)
        if len(betas) != len(images):
            raise ValueError(f"{len(betas)} trials of betas but {len(images)} images")
        self.image_shape_ = images.shape[1:]
        self.mean_image_ = images.mean(0)
        self.provenance_ = self.extractor.provenance
        features = extract_features(images, self.extractor)
        rng = np.random.default_rng(self.seed)
        alphas = DEFAULT_ALPHAS if self.alphas is None else np.asarray(self.alphas)
        self.units_, self.active_, self.feature_mean_, self.feature_std_ = {}, {}, {}, {}
        self.decoders_ = OrderedDict()
        for name, values in features.items():
            units = None
            if self.max_units and values.shape[1] > self.max_units:
                units = np.sort(rng.choice(values.shape[1], self.max_units, replace=False))
                values = values[:, units]
            self.units_[name] = units
            mean, std = values.mean(0), values.std(0)
            # Units constant over the training images (dead ReLUs) are predicted as
            # that constant; only the others get a decoder.
            self.active_[name] = active = std > 0
            std[~active] = 1.0
            self.feature_mean_[name], self.feature_std_[name] = mean, std
            z = (values[:, active] - mean[active]) / std[active]
            if not active.any():
                self.decoders_[name] = None
                log.warning("layer %s: every unit is constant over the training images", name)
                continue
            if self.n_voxels is None:
                decoder = RidgeDecoder(alphas, self.n_folds, device=self.device, seed=self.seed,
                                       n_targets_batch=4096)
            else:
                decoder = VoxelSelectionRidge(self.n_voxels, alphas if self.alphas else 100.0,
                                              self.n_folds, seed=self.seed)
            # Sparse ReLU units can be constant in a validation fold: their R2 is
            # undefined there (himalaya divides by zero) and never the best score.
            with np.errstate(divide="ignore", invalid="ignore"):
                self.decoders_[name] = decoder.fit(betas, z, groups=groups)
            log.info("layer %s: %d of %d units decoded", name, z.shape[1], len(active))
        return self

    def decode_layers(self, betas) -> dict[str, np.ndarray]:
        """Decoded features per layer (n, n_units), in the network's units."""
        betas = np.asarray(betas, dtype=np.float32)
        out = OrderedDict()
        for name, decoder in self.decoders_.items():
            z = np.zeros((len(betas), len(self.active_[name])), dtype=np.float32)
            if decoder is not None:
                z[:, self.active_[name]] = decoder.predict(betas)
            out[name] = z * self.feature_std_[name] + self.feature_mean_[name]
        return out

    def decode(self, betas):
        """Decoded features of all layers concatenated in layer order, (n, n_units_total).

        Each layer's block holds its flattened units (or the ``max_units`` subset
        ``units_[layer]``), in the network's units; :meth:`decode_layers` splits them.
        """
        return np.concatenate(list(self.decode_layers(betas).values()), axis=1)

    def reconstruct(self, betas, prior: str | None = None):
        """Images (n, H, W, C) whose features match the decoded ones.

        ``prior`` overrides the configured one (e.g. to compare pixel and generator).
        The workflow reconstructs, then asks :meth:`extra_metrics` about the same
        betas: :meth:`invert` keeps its last result, as optimisation is the slow step.
        """
        return self.invert(self.decode_layers(betas), prior=prior)

    def invert(self, targets: dict, prior: str | None = None, progress: bool = True) -> np.ndarray:
        """Optimise images whose features match ``targets`` (decoded or true features).

        The last inversion with each prior is kept in memory: the workflow
        reconstructs and then scores the same betas, ``latent_init="pixel"`` starts
        from the pixel inversion and ``compare_priors`` scores it; each runs once.
        """
        prior = prior or self.prior
        key = hashlib.sha1(b"".join(np.ascontiguousarray(v, dtype=np.float32).tobytes()
                                    for v in targets.values())).hexdigest()
        cached = self._inversion_cache.get(prior)
        if cached is not None and cached[0] == key:
            return cached[1].copy()
        latent_init = None
        if prior == "generator" and self.latent_init == "pixel":
            latent_init = self.encode_images(self.invert(targets, prior="pixel", progress=progress))
        init = self.mean_image_ if self.init == "mean" else None
        with _torch_threads(self.threads):
            images = invert_features(
                targets, self.extractor, self.image_shape_, units=self.units_,
                layer_weights=self.layer_weights, iterations=self.iterations, lr=self.lr,
                tv_weight=self.tv_weight, jitter=self.jitter, init=init,
                generator=self.load_generator() if prior == "generator" else None,
                latent_lr=self.latent_lr, latent_weight=self.latent_weight,
                latent_init=latent_init, seed=self.seed, progress=progress,
            )
        self._inversion_cache[prior] = (key, images.copy())
        return images

    def encode_images(self, images) -> np.ndarray:
        """Latents (n, d) the generator's encoder gives ``images`` (n, H, W, C) in [0, 1]."""
        import torch

        from ..generative import encode, load_encoder

        encoder = load_encoder(self.generator, device=self.extractor.device)
        generator = self.load_generator()
        x = torch.as_tensor(np.asarray(images, np.float32)).permute(0, 3, 1, 2)
        # The encoder reads images at the generator's own size and channels.
        x = _fit_to_shape(x, generator.image_size, generator.image_size, generator.channels)
        return encode(encoder, x.permute(0, 2, 3, 1).numpy())

    def true_features(self, images) -> dict[str, np.ndarray]:
        """Features of ``images`` restricted to the decoded units."""
        from ..features import extract_features

        features = extract_features(np.asarray(images, dtype=np.float32), self.extractor)
        return OrderedDict((name, values if self.units_[name] is None else values[:, self.units_[name]])
                           for name, values in features.items() if name in self.decoders_)

    def feature_identification(self, recon, true) -> dict[str, np.ndarray]:
        """2-way identification of ``recon`` among ``true`` by deep-feature correlation.

        Features are those of the decoded units, z-scored with the training images'
        statistics, as for decoded features: raw activations share a large mean
        pattern that makes every image correlate with every other.

        Returns
        -------
        dict of str to ndarray, shape (n,)
            Per layer, the fraction of other images whose features correlate less
            with the reconstruction's than the shown image's do (chance 0.5).
        """
        from ..evaluation import correlation_matrix, identification_2way

        a, b = self.true_features(recon), self.true_features(true)
        out = OrderedDict()
        for name in a:
            sd = np.where(self.feature_std_[name] > 0, self.feature_std_[name], 1.0)
            za = (a[name] - self.feature_mean_[name]) / sd
            zb = (b[name] - self.feature_mean_[name]) / sd
            out[name] = identification_2way(correlation_matrix(za, zb))
        return out

    def feature_accuracy(self, betas, images) -> "pd.DataFrame":
        """Decoded-feature accuracy per layer on held-out ``betas`` and their ``images``.

        See :func:`decoded_feature_accuracy`; the table for the report.
        """
        return decoded_feature_accuracy(self.decode_layers(betas), self.true_features(images),
                                        self.feature_mean_, self.feature_std_)

    def extra_metrics(self, data):
        """Decoded-feature accuracy, feature identification of the reconstructions and,
        with ``generalisation``, decoding across stimulus families.

        Entries (95% bootstrap CIs over images):

        - ``featpattern_<layer>``, ``featident2_<layer>``: pattern correlation and 2-way
          identification of the *decoded* features with the true ones (chance 0, 0.5);
        - ``reconfeat_ident2_<layer>`` and ``reconfeat_ident2`` (mean over layers): 2-way
          identification of the *reconstructions* by the correlation of their features
          with those of the shown images, in this method's network (chance 0.5);
        - ``weights_accuracy``: held-out accuracy of a locally trained network;
        - with ``generalisation`` and a ``family`` column in the stimuli table, see
          :meth:`generalisation_metrics`.
        """
        from ..evaluation import summarise
        from ..features import network_summary

        rng = np.random.default_rng(data.seed)
        scores = decoded_feature_scores(self.decode_layers(data.test_betas),
                                        self.true_features(data.test_images),
                                        self.feature_mean_, self.feature_std_)
        out = {}

        def add(name, values, chance):
            out[name] = summarise(values, chance, data.n_boot, rng)

        for layer, score in scores.items():
            for kind, chance in (("pattern", 0.0), ("ident2", 0.5)):
                add(f"feat{kind}_{layer}", score[kind], chance)
        if len(data.test_betas) > 1:
            recon = self.reconstruct(data.test_betas)
            by_layer = self.feature_identification(recon, np.asarray(data.test_images, np.float32))
            for layer, values in by_layer.items():
                add(f"reconfeat_ident2_{layer}", values, 0.5)
            add("reconfeat_ident2", np.nanmean(np.vstack(list(by_layer.values())), 0), 0.5)
        entry = network_summary(self.weights)  # {} unless trained here
        if entry:
            out["weights_accuracy"] = entry
        if self.compare_priors and len(data.test_betas) > 1:
            out.update(self.prior_comparison(data, recon))
        if self.generalisation is not None:
            out.update(self.generalisation_metrics(data))
        return out

    def prior_comparison(self, data, recon=None) -> dict:
        """Paired comparison of this model's prior with the other one.

        The decoded features are inverted again with the other prior (``pixel`` <->
        ``generator``); per image, ``prior_gain_<score>`` is the score of this model's
        reconstruction minus that of the other, for ``pixcorr``, ``ident2_pixel`` and
        ``ident2_feature`` (see :func:`identification_scores`), with a 95% bootstrap CI
        over images (chance 0: no difference). Pairing by image removes the spread
        between images that two separate intervals would carry.
        """
        from ..evaluation import summarise

        other = "pixel" if self.prior == "generator" else "generator"
        true = np.asarray(data.test_images, dtype=np.float32)
        if recon is None:
            recon = self.reconstruct(data.test_betas)
        mine = identification_scores(recon, true, self.feature_identification)
        theirs = identification_scores(self.invert(self.decode_layers(data.test_betas), prior=other),
                                       true, self.feature_identification)
        rng = np.random.default_rng([data.seed, 23])
        out = {}
        for score in mine:
            diff = np.asarray(mine[score], np.float64) - np.asarray(theirs[score], np.float64)
            out[f"prior_gain_{score}"] = summarise(diff, 0.0, data.n_boot, rng)
        return out

    def generalisation_metrics(self, data) -> dict:
        """Family generalisation (Shen et al. 2019): train on one family, test on others.

        A copy of this model (same settings and seed) is fitted on the training trials
        of the family ``generalisation["train"]`` only, and reconstructs the split's
        items of each family in ``generalisation["test"]`` (default: every family).
        For each test family ``f``, entries ``gen_<train>_to_<f>_<score>`` and, from this
        model (trained on every family), ``gen_all_to_<f>_<score>``, where ``<score>`` is
        ``pixcorr`` (chance 0), ``ident2_pixel`` and ``ident2_feature`` (2-way
        identification among that family's items by pixel and by deep-feature
        correlation, in this model's network; chance 0.5). 95% bootstrap CIs over items.
        Empty, with a warning, without a ``family`` column.
        """
        from ..evaluation import summarise

        from ..bids import stimulus_column

        table = data.stimuli
        if table is None or "family" not in table:
            log.warning("dir generalisation: the stimuli table has no 'family' column; skipped")
            return {}
        train_fam, test_fam = (
            stimulus_column(table, files, "family", "stimuli/stimuli.tsv").astype(str)
            for files in (data.train_stim_files, data.test_stim_files))
        source = self.generalisation["train"]
        targets = self.generalisation.get("test") or sorted(set(test_fam))
        keep = train_fam == source
        if keep.sum() < 3:
            raise ValueError(f"methods.dir.generalisation.train: {keep.sum()} training trials "
                             f"of family {source!r} (families: {sorted(set(train_fam))})")
        settings = {**self.settings(), "generalisation": None}
        narrow = type(self)(seed=self.seed, **settings)
        narrow._extractor, narrow._generator = self._extractor, self._generator
        log.info("dir generalisation: fitting on %d %s training trials", keep.sum(), source)
        narrow.fit(np.asarray(data.train_betas)[keep], np.asarray(data.train_images)[keep])
        betas = np.asarray(data.test_betas, dtype=np.float32)
        true = np.asarray(data.test_images, dtype=np.float32)
        models = {source: narrow, "all": self}
        rng = np.random.default_rng([data.seed, 17])
        out = {}
        for name, model in models.items():
            recon = model.reconstruct(betas)
            for family in targets:
                sel = test_fam == family
                if sel.sum() < 2:
                    log.warning("dir generalisation: %d test items of %s", sel.sum(), family)
                    continue
                scores = identification_scores(recon[sel], true[sel], self.feature_identification)
                for score, values in scores.items():
                    out[f"gen_{name}_to_{family}_{score}"] = summarise(
                        values, 0.0 if score == "pixcorr" else 0.5, data.n_boot, rng)
        return out


def _check_generalisation(value) -> dict | None:
    """``methods.dir.generalisation``: None or ``{"train": family, "test": [families]}``."""
    if value is None or value is False:
        return None
    if isinstance(value, str):
        value = {"train": value}
    if not isinstance(value, dict) or not isinstance(value.get("train"), str) \
            or set(value) - {"train", "test"}:
        raise ValueError("methods.dir.generalisation: expected {train: <family>, test: "
                         f"[<family>, ...]}} (test optional), got {value!r}")
    test = value.get("test")
    if isinstance(test, str):
        test = [test]
    return {"train": value["train"], "test": None if test is None else [str(t) for t in test]}


def identification_scores(recon, true, feature_identification) -> dict:
    """Per-image ``pixcorr``, ``ident2_pixel`` and ``ident2_feature`` of reconstructions.

    Parameters
    ----------
    recon, true : ndarray, shape (n, H, W, C)
    feature_identification : FeatureExtractor or callable
        ``f(recon, true) -> {layer: (n,)}`` 2-way identification by features (e.g.
        :meth:`DeepImageReconstruction.feature_identification`); an extractor means
        :func:`fmrirecon.features.feature_identification` on raw activations.

    Returns
    -------
    dict of str to ndarray, shape (n,)
        Pixel correlation with the shown image; exhaustive 2-way identification among
        the ``n`` images by pixel correlation and by deep-feature correlation (the
        latter averaged over the extractor's layers). Chance 0, 0.5, 0.5.
    """
    from ..evaluation import correlation_matrix, identification_2way, pixcorr
    from ..features import FeatureExtractor, feature_identification as by_features

    recon = np.asarray(recon, dtype=np.float32)
    true = np.asarray(true, dtype=np.float32)
    if isinstance(feature_identification, FeatureExtractor):
        by_layer = by_features(recon, true, feature_identification)
    else:
        by_layer = feature_identification(recon, true)
    return {"pixcorr": pixcorr(recon, true),
            "ident2_pixel": identification_2way(correlation_matrix(recon, true)),
            "ident2_feature": np.nanmean(np.vstack(list(by_layer.values())), 0)}
