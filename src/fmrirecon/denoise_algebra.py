"""The linear algebra of the ``denoised`` GLM: per-run designs, cross-validation, scale.

:class:`_Run` holds one run's nuisance basis, its trial regressors under every library
HRF (nuisance projected out) and, once chosen, its noise components, with cached thin
SVDs of the designs; :class:`_CrossValidation` predicts repeated trials from the other
runs as one sparse matrix; :func:`_match_scale` gives ridge betas back their units.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fmrirecon.hrf_library import trial_regressors

_RCOND = 1e-10


def _orth(A: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the columns of ``A`` (rank-revealing, via SVD)."""
    if A.shape[1] == 0:
        return A
    U, s, _ = np.linalg.svd(A, full_matrices=False)
    return U[:, s > _RCOND * max(s[0], 1e-300)]


def _thin_svd(X: np.ndarray):
    """``U, s, Vt`` of a tall matrix from the eigendecomposition of its small Gram matrix
    (much cheaper than LAPACK's SVD for trials x scans designs), rank-truncated."""
    evals, V = np.linalg.eigh(X.T @ X)
    evals, V = evals[::-1], V[:, ::-1]
    keep = evals > 1e-12 * max(evals[0], 1e-300) if evals.size else np.zeros(0, dtype=bool)
    s = np.sqrt(evals[keep])
    V = V[:, keep]
    return (X @ V) / s, s, V.T


class _CrossValidation:
    """Leave-one-run-out prediction of repeated trials' betas, as one matrix.

    Trial ``i`` of run ``r`` whose condition also occurs in other runs is predicted
    by the mean beta of that condition over the other runs: ``pred = A @ betas``.
    """

    def __init__(self, conditions, trial_runs):
        from scipy import sparse

        conditions = pd.Series(np.asarray(conditions, dtype=object))
        trial_runs = np.asarray(trial_runs)
        rows, cols, vals, eval_idx = [], [], [], []
        # sparse, built per condition: memory grows with trials x repeats, not trials^2
        for members in conditions.dropna().groupby(conditions.dropna(), sort=False).indices.values():
            members = conditions.dropna().index.to_numpy()[members]
            if len(members) < 2:
                continue
            for i in members:
                others = members[trial_runs[members] != trial_runs[i]]
                if len(others):
                    rows += [len(eval_idx)] * len(others)
                    cols += others.tolist()
                    vals += [1.0 / len(others)] * len(others)
                    eval_idx.append(i)
        order = np.argsort(eval_idx, kind="stable")       # evaluate in trial order
        self.eval_idx = np.asarray(eval_idx, dtype=int)[order]
        A = sparse.csr_matrix((vals, (rows, cols)), shape=(len(eval_idx), len(conditions)))
        self.A = A[order]

    @property
    def n(self) -> int:
        return len(self.eval_idx)

    def r2(self, betas: np.ndarray, target: np.ndarray | None = None) -> np.ndarray:
        """Cross-validated R2 (percent, about each voxel's mean) of every column.

        The held-out trials' values come from ``target`` (e.g. unregularised betas)
        when given, else from ``betas``; the predictions always from ``betas``.
        """
        if self.n == 0:
            return np.full(betas.shape[1], np.nan)
        data = (betas if target is None else target)[self.eval_idx]
        pred = self.A @ betas
        total = ((data - data.mean(axis=0)) ** 2).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(total > 0, 100 * (1 - ((data - pred) ** 2).sum(axis=0) / total), np.nan)


class _Run:
    """Per-run designs: nuisance basis, residualised trial regressors per HRF, PCs."""

    def __init__(self, Y, onsets, durations, frame_times, nuisance, hrfs):
        self.Y = Y
        self.Qn = _orth(np.asarray(nuisance, dtype=float))
        X = np.stack([trial_regressors(h, onsets, durations, frame_times) for h in hrfs])
        self.X = X - self.Qn @ np.einsum("tq,htn->hqn", self.Qn, X)   # nuisance-free designs
        self.P = np.zeros((len(frame_times), 0))
        self._bases = {}

    def basis(self, h: int, n: int):
        """SVD (U, s, Vt) of HRF ``h``'s design with ``n`` noise components projected out."""
        key = (h, n)
        if key not in self._bases:
            X = self.X[h]
            if n:
                P = self.P[:, :n]
                X = X - P @ (P.T @ X)
            self._bases[key] = _thin_svd(X)
        return self._bases[key]

    def forget(self, n: int) -> None:
        """Drop the cached bases with ``n`` components (bounds memory over the search)."""
        for key in [k for k in self._bases if k[1] == n]:
            del self._bases[key]

    def ols(self, h: int, n: int, cols) -> np.ndarray:
        """OLS betas (n_trials, len(cols)) of voxels ``cols`` under HRF ``h``, ``n`` PCs.

        Design and nuisance are orthogonal, so ``pinv(X) @ Y`` needs no projection of Y.
        """
        U, s, Vt = self.basis(h, n)
        return Vt.T @ ((U.T @ self.Y[:, cols]) / s[:, None])


def _chunks(n: int, size: int):
    size = max(1, int(size))
    return [np.arange(i, min(n, i + size)) for i in range(0, n, size)]


def _match_scale(ridge: np.ndarray, ols: np.ndarray) -> np.ndarray:
    """Per voxel, ``a * ridge + b`` closest to ``ols`` (undoes ridge's shrinkage of units)."""
    rc = ridge - ridge.mean(axis=0)
    var = (rc**2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(var > 0, (rc * (ols - ols.mean(axis=0))).sum(axis=0) / var, 1.0)
    return a * rc + ols.mean(axis=0)
