"""The deep image reconstruction method (see :mod:`fmrirecon.methods.dir`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: pandas is imported where it is used
    import pandas as pd

import hashlib
import logging
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ...decoding import DEFAULT_ALPHAS, RidgeDecoder
from ..base import ReconstructionMethod
from . import inversion
from .decoders import VoxelSelectionRidge
from .inversion import GeneratorPrior, PixelPrior, _fit_to_shape, _torch_threads
from .scores import decoded_feature_accuracy

log = logging.getLogger(__name__)


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
            from ...torchkit import select_device
            from ...features import FeatureExtractor

            self._extractor = FeatureExtractor(self.network, self.layers, self.weights,
                                               device=select_device(self.device), seed=self.seed,
                                               input_size=self.input_size)
        return self._extractor

    def load_generator(self):
        """The generator network of ``prior="generator"`` (loaded on first use)."""
        if self._generator is None:
            from ...generative import load_generator  # the latent method's module

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
        from ...torchkit import seed_everything
        from ...features import extract_features

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
            chosen = GeneratorPrior(self.load_generator(), lr=self.latent_lr,
                                    weight=self.latent_weight, init=latent_init) \
                if prior == "generator" else PixelPrior(lr=self.lr, init=init)
            images = inversion.invert_features(
                targets, self.extractor, self.image_shape_, chosen, units=self.units_,
                layer_weights=self.layer_weights, iterations=self.iterations,
                tv_weight=self.tv_weight, jitter=self.jitter, seed=self.seed, progress=progress,
            )
        self._inversion_cache[prior] = (key, images.copy())
        return images

    def encode_images(self, images) -> np.ndarray:
        """Latents (n, d) the generator's encoder gives ``images`` (n, H, W, C) in [0, 1]."""
        import torch

        from ...generative import encode, load_encoder

        encoder = load_encoder(self.generator, device=self.extractor.device)
        generator = self.load_generator()
        x = torch.as_tensor(np.asarray(images, np.float32)).permute(0, 3, 1, 2)
        # The encoder reads images at the generator's own size and channels.
        x = _fit_to_shape(x, generator.image_size, generator.image_size, generator.channels)
        return encode(encoder, x.permute(0, 2, 3, 1).numpy())

    def true_features(self, images) -> dict[str, np.ndarray]:
        """Features of ``images`` restricted to the decoded units."""
        from ...features import extract_features

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
        from ...evaluation import correlation_matrix, identification_2way

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
        """Decoded-feature accuracy, feature identification of the reconstructions, the
        priors' paired comparison and family generalisation: see
        :func:`fmrirecon.methods.dir.metrics.extra_metrics`."""
        from .metrics import extra_metrics

        return extra_metrics(self, data)


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
