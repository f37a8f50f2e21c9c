"""Fractional ridge regression (Rokem & Kay 2020, GigaScience 9:giaa133).

Ridge regression parametrised by the fraction ``f`` of the ordinary least squares
(OLS) coefficient norm that the solution keeps: ``||b(alpha)|| = f ||b_OLS||``. The
fraction is comparable across voxels whose scales differ, which a common ``alpha``
is not; ``f = 1`` is OLS.

Why an SVD: with ``X = U diag(s) V^T``, the ridge solution for any ``alpha`` is
``V diag(s / (s^2 + alpha)) U^T y``. One SVD per design therefore serves every
voxel and every fraction, and each fraction costs only a diagonal rescaling of the
rotated data ``U^T y`` (no matrix solve per ``alpha``), which is why a solver per
voxel chunk is a few lines and fast. As in fracridge, the ``alpha`` of each voxel
and fraction is interpolated from the norm ratio tabulated on a grid of ``alpha``
(here one matrix product for all voxels), then polished by Newton steps.

Why not the published ``fracridge`` package (2.0; ``benchmarks/fracridge_published.py``
compares them): it does not give the same answers, reaching the requested fractions
within 7e-3 where this reaches them within 4e-8 (coefficients differing by up to 1% of
their scale, alphas by up to 7%), at about the same speed; and it takes the whole
design matrix, while the ``denoised`` GLM fits each voxel on a block-diagonal design of
independent runs from the runs' own SVDs (:func:`fraction_alphas` on their
concatenated singular values and rotated data), which never builds that matrix.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fracridge", "fraction_alphas", "shrink", "DEFAULT_FRACTIONS"]

#: GLMsingle's fractions: 1 (OLS) down to 0.05 in steps of 0.05.
DEFAULT_FRACTIONS = tuple(np.round(np.arange(1.0, 0.0, -0.05), 2))

#: Singular values below this fraction of the largest are treated as zero.
RCOND = 1e-10


def _check_fractions(fractions) -> np.ndarray:
    fractions = np.atleast_1d(np.asarray(fractions, dtype=float))
    if fractions.ndim != 1 or not ((fractions > 0) & (fractions <= 1)).all():
        raise ValueError(f"fractions must be in (0, 1], got {fractions}")
    return fractions


def fraction_alphas(s: np.ndarray, ytilde: np.ndarray, fractions, n_grid: int = 200,
                    n_polish: int = 1) -> np.ndarray:
    """The ridge ``alpha`` giving each fraction of the OLS norm, per voxel.

    Parameters
    ----------
    s : ndarray, shape (p,)
        Positive singular values of the design (possibly of several independent
        blocks concatenated: the norm is over all of them).
    ytilde : ndarray, shape (p, n_voxels)
        Data rotated into the design's left singular vectors (``U.T @ Y``).
    fractions : array-like, shape (n_fractions,)
        In (0, 1].
    n_grid : int, default=200
        Log-spaced ``alpha`` values on which the norm ratio of every voxel is
        tabulated (one matrix product), then interpolated.
    n_polish : int, default=1
        Newton steps on ``log alpha`` after the interpolation (without any, the
        achieved fractions are within about 1e-4 of the targets).

    Returns
    -------
    ndarray, shape (n_fractions, n_voxels)
        ``alpha`` (0 for ``f = 1`` and for voxels whose OLS solution is 0).
    """
    fractions = _check_fractions(fractions)
    s = np.asarray(s, dtype=float)
    ytilde = np.asarray(ytilde, dtype=float)
    alphas = np.zeros((len(fractions), ytilde.shape[1]))
    shrunk = fractions < 1
    if len(s) == 0 or not shrunk.any():
        return alphas
    s2 = s**2
    w = (ytilde / s[:, None]) ** 2                    # squared rotated OLS coefficients
    total = w.sum(axis=0)
    live = total > 0
    w = w[:, live] / total[live]                      # ratio**2 = sum_i w_i g_i**2
    # Each shrinkage factor g_i = s_i^2 / (s_i^2 + alpha) lies between those of the
    # smallest and largest singular value, so this range brackets every solution.
    f_lo, f_hi = fractions[shrunk].min(), fractions[shrunk].max()
    grid = np.linspace(np.log(s2.min() * (1 - f_hi) / f_hi), np.log(s2.max() * (1 - f_lo) / f_lo),
                       int(n_grid))
    G = (s2[None, :] / (s2[None, :] + np.exp(grid)[:, None])) ** 2
    log_r = 0.5 * np.log(np.maximum(G @ w, 1e-300))   # (n_grid, n_live), decreasing
    cols = np.arange(w.shape[1])
    for i in np.flatnonzero(shrunk):
        target = np.log(fractions[i])
        k = np.clip((log_r > target).sum(axis=0), 1, len(grid) - 1)
        r0, r1 = log_r[k - 1, cols], log_r[k, cols]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.clip(np.where(r0 > r1, (r0 - target) / (r0 - r1), 0.5), 0, 1)
        u = grid[k - 1] + t * (grid[k] - grid[k - 1])
        for _ in range(int(n_polish)):
            g = s2[:, None] / (s2[:, None] + np.exp(u)[None, :])
            wg2 = w * g**2
            r2 = wg2.sum(axis=0)
            slope = -(wg2 * (1 - g)).sum(axis=0) / r2     # d log(ratio) / d log(alpha)
            with np.errstate(divide="ignore", invalid="ignore"):
                step = (0.5 * np.log(r2) - target) / slope
            u = np.where(np.isfinite(step), u - np.clip(step, -1, 1), u)
        alphas[i, live] = np.exp(u)
    return alphas


def shrink(s: np.ndarray, ytilde: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Rotated ridge coefficients ``s / (s^2 + alpha) * ytilde`` (shape of ``ytilde``)."""
    s = np.asarray(s, dtype=float)[:, None]
    return ytilde * (s / (s**2 + np.asarray(alpha, dtype=float)[None, :]))


def fracridge(X: np.ndarray, Y: np.ndarray, fractions=DEFAULT_FRACTIONS) -> tuple[np.ndarray, np.ndarray]:
    """Fractional ridge regression of every column of ``Y`` on ``X``.

    Parameters
    ----------
    X : ndarray, shape (n_samples, n_features)
    Y : ndarray, shape (n_samples, n_targets)
    fractions : array-like, shape (n_fractions,), default=DEFAULT_FRACTIONS
        Fractions of the OLS coefficient norm, in (0, 1].

    Returns
    -------
    coefs : ndarray, shape (n_fractions, n_features, n_targets)
    alphas : ndarray, shape (n_fractions, n_targets)
    """
    X = np.asarray(X, dtype=float)
    Y = np.asarray(Y, dtype=float)
    if Y.ndim == 1:
        Y = Y[:, None]
    if X.ndim != 2 or Y.shape[0] != X.shape[0]:
        raise ValueError(f"X {X.shape} and Y {Y.shape} do not match")
    U, s, Vt = np.linalg.svd(X, full_matrices=False)
    keep = s > RCOND * s.max() if s.size else np.zeros(0, dtype=bool)
    U, s, Vt = U[:, keep], s[keep], Vt[keep]
    ytilde = U.T @ Y
    alphas = fraction_alphas(s, ytilde, fractions)
    coefs = np.stack([Vt.T @ shrink(s, ytilde, a) for a in alphas])
    return coefs, alphas
