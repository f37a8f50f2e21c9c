"""How close decoded features and reconstructions are to the true ones, per image."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: pandas is imported where it is used
    import pandas as pd

import numpy as np


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
    from ...evaluation import correlation_matrix, identification_2way

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
    from ...evaluation import correlation_matrix, identification_2way, pixcorr
    from ...features import FeatureExtractor, feature_identification as by_features

    recon = np.asarray(recon, dtype=np.float32)
    true = np.asarray(true, dtype=np.float32)
    if isinstance(feature_identification, FeatureExtractor):
        by_layer = by_features(recon, true, feature_identification)
    else:
        by_layer = feature_identification(recon, true)
    return {"pixcorr": pixcorr(recon, true),
            "ident2_pixel": identification_2way(correlation_matrix(recon, true)),
            "ident2_feature": np.nanmean(np.vstack(list(by_layer.values())), 0)}
