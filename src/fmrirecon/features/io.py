"""Features of images in batches, and their HDF5 files (one chunked dataset per layer)."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .networks import FeatureExtractor


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """Images (n, H, W, C) as a float tensor (n, C, H, W)."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"images: expected (n, H, W, C), got shape {images.shape}")
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def extract_features(images: np.ndarray, extractor: FeatureExtractor,
                     batch_size: int = 64) -> dict[str, np.ndarray]:
    """Flattened activations of each layer of ``extractor`` for ``images``.

    Parameters
    ----------
    images : ndarray, shape (n, H, W, C)
        Values in [0, 1], C 1 or 3.
    extractor : FeatureExtractor
    batch_size : int

    Returns
    -------
    dict of str to ndarray, shape (n, n_units)
        float32, in the order of ``extractor.layers``.
    """
    tensor = to_tensor(images)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in extractor.layers}
    with torch.no_grad():
        for start in range(0, len(tensor), batch_size):
            out = extractor(tensor[start:start + batch_size])
            for name, value in out.items():
                chunks[name].append(value.flatten(1).cpu().numpy())
    return OrderedDict(
        (name, np.concatenate(parts) if parts else np.zeros((0, 0), np.float32))
        for name, parts in chunks.items()
    )


def write_features(path: str | Path, features: dict[str, np.ndarray],
                   attrs: dict | None = None, dtype=np.float32) -> None:
    """Write features to HDF5: one gzip-compressed dataset per layer, chunked by image.

    Parameters
    ----------
    path : str or Path
    features : dict of str to ndarray, shape (n, n_units)
    attrs : dict, optional
        File attributes (e.g. provenance, network, stimulus names); lists of strings
        and scalars are stored as they are, anything else as JSON.
    dtype : numpy dtype
        Storage type; float16 halves the size at ~3 significant digits.
    """
    import h5py

    names = list(features)
    with h5py.File(path, "w") as f:
        f.attrs["layers"] = names
        for key, value in (attrs or {}).items():
            if isinstance(value, (str, int, float, np.number)) or (
                    isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
                f.attrs[key] = value
            else:
                f.attrs[key] = json.dumps(value)
        for name in names:
            data = np.asarray(features[name], dtype=dtype)
            if data.ndim != 2:
                raise ValueError(f"features[{name!r}]: expected (n, n_units), got {data.shape}")
            # One chunk row per image (capped at ~1 MB) so reading a few images is cheap.
            rows = max(1, min(len(data), (1 << 20) // max(1, data.shape[1] * data.itemsize)))
            f.create_dataset(name.replace("/", "|"), data=data,
                             chunks=(rows, data.shape[1]) if data.size else None,
                             compression="gzip" if data.size else None,
                             shuffle=bool(data.size))


def read_features(path: str | Path, layers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Features written by :func:`write_features` (all layers, or ``layers``), as float32."""
    import h5py

    with h5py.File(path, "r") as f:
        available = [str(name) for name in f.attrs.get("layers", list(f.keys()))]
        wanted = available if layers is None else list(layers)
        missing = [name for name in wanted if name not in available]
        if missing:
            raise KeyError(f"{path}: no layers {missing}; it has {available}")
        return OrderedDict((name, f[name.replace("/", "|")][()].astype(np.float32))
                           for name in wanted)


def read_feature_attrs(path: str | Path) -> dict:
    """The file attributes written by :func:`write_features`."""
    import h5py

    with h5py.File(path, "r") as f:
        out = {}
        for key, value in f.attrs.items():
            if isinstance(value, np.ndarray):
                value = [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]
            elif isinstance(value, bytes):
                value = value.decode()
            out[key] = value
        return out
