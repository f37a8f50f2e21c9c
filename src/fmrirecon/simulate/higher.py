"""A higher visual area for the simulated brain: voxels tuned to deep-network features.

The early visual voxels of :mod:`~fmrirecon.simulate.encoding` pool local image
features (contrast or Gabor energy, luminance, colour) in small receptive fields;
that part of the brain carries little of what distinguishes one face or one object
category from another beyond their layout. Higher ventral areas do, and the standard
model of them is the late layer of a network trained to recognise objects (Yamins et
al. 2014; Güçlü & van Gerven 2015). With ``simulate.higher_area`` the visual voxels
farthest from the occipital pole (a ``fraction`` of them) respond instead to such a
layer:

- a small CNN is trained on a labelled image folder the pipeline's own decoding
  networks are *not* trained on (the "brain network", its own seed; see
  :func:`brain_features`) and the study's stimuli go through it;
- each higher voxel is a population of units ramp-tuned to one random direction of
  the z-scored layer (Carlin & Kriegeskorte 2017): ``drive = softplus(z @ w + b)``,
  then the compressive exponent and calibrated gain of the early voxels.

The decoders never see this network: they decode their own targets (a VAE latent,
pixel PCA, another network's features), so no method's targets are what the brain
encodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .encoding import EXPONENT_RANGE, PEDESTAL, calibrated_gain

#: Keys of ``simulate.higher_area`` and their defaults (``train_network`` is required).
HIGHER_DEFAULTS = {
    "fraction": 0.5,          # of the visual voxels, those farthest from the pole
    "layer": "relu4",         # the brain network's layer the voxels read
    "train_network": None,    # {folder, column, epochs, width, ...}: the brain network
}


def higher_config(value) -> dict | None:
    """``simulate.higher_area`` merged over :data:`HIGHER_DEFAULTS` and checked (None: off)."""
    if not value:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"simulate.higher_area: expected a mapping, got {value!r}")
    unknown = set(value) - set(HIGHER_DEFAULTS)
    if unknown:
        raise ValueError(f"simulate.higher_area: unknown keys {sorted(unknown)}; "
                         f"known {sorted(HIGHER_DEFAULTS)}")
    c = {**HIGHER_DEFAULTS, **value}
    c["fraction"] = float(c["fraction"])
    if not 0 < c["fraction"] <= 1:
        raise ValueError(f"simulate.higher_area.fraction must be in (0, 1], got {c['fraction']}")
    training = c["train_network"]
    if not isinstance(training, dict) or not training.get("folder"):
        raise ValueError("simulate.higher_area.train_network: give the labelled image folder "
                         "the brain network learns from, e.g. {folder: ../shared/data/images/"
                         "cifar10_test, column: class_name}")
    return c


def brain_network_seed(seed: int) -> int:
    """The brain network's seed: derived from the study's, and never equal to it (the
    pipeline's own networks train with the study seed)."""
    return int(np.random.SeedSequence([int(seed), 0x6B7261]).generate_state(1)[0] % (2 ** 31))


def higher_voxels(brain, fraction: float) -> np.ndarray:
    """Indices (into the visual voxels) of the higher area: the ``fraction`` of visual
    voxels farthest from the occipital pole, where receptive fields are largest."""
    depth = brain.voxel_ijk[brain.is_visual][:, 1]
    n = int(round(fraction * len(depth)))
    return np.sort(np.argsort(-depth, kind="stable")[:n])


@dataclass
class HigherArea:
    """Voxels ramp-tuned to directions of a deep-network layer.

    Attributes
    ----------
    index : ndarray of int, shape (n_higher,)
        The voxels, as indices into the visual voxels.
    mean, scale : ndarray, shape (n_units,)
        Z-scoring of the layer (over the study's stimuli).
    weights : ndarray, shape (n_units, n_higher)
        Each voxel's tuning direction (unit norm).
    offset, exponent, gain : ndarray, shape (n_higher,)
    """

    index: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    offset: np.ndarray
    exponent: np.ndarray
    gain: np.ndarray

    def drive(self, features: np.ndarray) -> np.ndarray:
        """``drive ** exponent`` of each voxel for each image's features, (n, n_higher)."""
        z = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        drive = np.logaddexp(0.0, z @ self.weights + self.offset)      # softplus
        return (drive + PEDESTAL) ** self.exponent

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Noise-free response amplitude (PSC), shape (n, n_higher)."""
        return (self.drive(features) * self.gain).astype(np.float32)


def draw_higher_area(index: np.ndarray, features: np.ndarray, signal_psc: float,
                     rng: np.random.Generator) -> HigherArea:
    """Draw the tuning of the higher voxels and calibrate their gains on ``features``.

    Parameters
    ----------
    index : ndarray of int
        The voxels (:func:`higher_voxels`).
    features : ndarray, shape (n_stimuli, n_units)
        The brain network's layer for every stimulus of the study.
    signal_psc : float
        Mean evoked response of a voxel, as for the early voxels (times a log-normal
        voxel factor, sd 0.3).
    rng : numpy.random.Generator
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"features: expected (n_stimuli >= 2, n_units), got {features.shape}")
    mean = features.mean(axis=0)
    # Units silent for every stimulus (dead ReLUs) get a unit scale: they add nothing.
    sd = features.std(axis=0)
    scale = np.where(sd > 1e-6 * max(sd.max(), 1e-12), sd, 1.0)
    weights = rng.standard_normal((features.shape[1], len(index)))
    weights /= np.linalg.norm(weights, axis=0, keepdims=True)
    area = HigherArea(
        index=np.asarray(index, dtype=np.int64), mean=mean, scale=scale, weights=weights,
        offset=rng.normal(0.0, 0.5, len(index)), exponent=rng.uniform(*EXPONENT_RANGE, len(index)),
        gain=np.ones(len(index)),
    )
    area.gain = calibrated_gain(area.drive(features).mean(axis=0), signal_psc, rng)
    return area


def read_brain_features(path: str | Path, stim_files, layer: str) -> np.ndarray:
    """The brain network's ``layer`` for each of ``stim_files``, in that order.

    Parameters
    ----------
    path : str or Path
        HDF5 written by :func:`brain_features` (one dataset per layer, the
        ``stim_file`` attribute lists its rows).
    stim_files : sequence of str
    layer : str
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: brain-network features not found")
    with h5py.File(path, "r") as f:
        if layer not in f:
            raise KeyError(f"{path}: no layer {layer!r} (has {sorted(f.keys())})")
        rows = {str(s): i for i, s in enumerate(f.attrs["stim_file"])}
        missing = [s for s in stim_files if s not in rows]
        if missing:
            raise ValueError(f"{path}: no features for {len(missing)} stimuli (e.g. {missing[0]}); "
                             f"it was computed for another stimulus set")
        data = f[layer][()]
    return data[[rows[s] for s in stim_files]].astype(np.float32)


def brain_features(stimuli_dir: str | Path, higher: dict, seed: int, image_size: int,
                   channels: int, weights_out: str | Path, features_out: str | Path) -> dict:
    """Train the simulated brain's network and write its features of every stimulus.

    Parameters
    ----------
    stimuli_dir : str or Path
        The simulated BIDS ``stimuli/`` folder.
    higher : dict
        ``simulate.higher_area`` (see :func:`higher_config`).
    seed : int
        The study seed (the network trains with :func:`brain_network_seed` of it).
    image_size, channels : int
        As the stimuli are shown.
    weights_out, features_out : str or Path
        The network's state_dict (and ``<weights_out>.json`` provenance) and the
        features (:func:`fmrirecon.features.write_features` layout).

    Returns
    -------
    dict
        The network's training metadata (provenance, held-out accuracy).
    """
    from fmrirecon.features import extract_stimulus_features, train_feature_network

    higher = higher_config(higher)
    training = dict(higher["train_network"])
    folder = training.pop("folder")
    net_seed = brain_network_seed(seed)
    meta = train_feature_network(folder, training, net_seed, weights_out)
    extract_stimulus_features(
        stimuli_dir, {"network": "smallconv", "layers": [higher["layer"]],
                      "weights": str(weights_out), "seed": net_seed},
        {"size": image_size, "channels": channels}, features_out)
    return meta
