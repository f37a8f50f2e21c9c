"""How well an encoder predicts held-out pairs: the measure of selfsup's encoder guard."""

from __future__ import annotations

import numpy as np

from .networks import ENCODER_ALPHAS


def _cv_groups(images: np.ndarray, groups=None) -> np.ndarray:
    """Groups a cross-validation of the pairs leaves out whole: the runs when there are
    5 or more, else the images (repeats of an image never straddle a fold)."""
    from ...validation import image_ids

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
    from ...decoding import RidgeDecoder, cv_splits

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

