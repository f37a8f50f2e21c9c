"""The shared decoder backbone: ridge regression from voxels to any target space.

Every reconstruction method maps betas to its own targets (pixel-PCA coefficients,
generator latents, DNN features) with :class:`RidgeDecoder`: voxels standardised with
training statistics, one ridge penalty per target chosen by cross-validation.

The estimator is the one of himalaya's ``KernelRidgeCV`` / ``RidgeCV`` (no intercept
on centred data, R2 averaged over folds, ties broken toward larger penalties), but the
solver is our own, in float64, with torch (a CUDA GPU when present):

* per penalty, **one Cholesky factorisation** of the whole-data system
  (``K + alpha I`` with ``K = X X^T`` when trials < voxels, else ``X^T X + alpha I``)
  serves every fold, every target and the refit: the held-out residuals of a fold
  ``G`` follow from the whole-data fit by the block leave-group-out identity
  ``r_G = [(K + alpha I)^{-1}]_GG^{-1} [(K + alpha I)^{-1} Y]_G`` (primal:
  ``r_G = (I - H_GG)^{-1} (Y - X W)_G`` with ``H`` the hat matrix), so no
  per-fold refit and no separate final refit are needed;
* targets are processed in chunks to bound memory.

Why not an eigendecomposition per fold as himalaya does: a Cholesky factorisation
costs a few matrix products, a symmetric eigendecomposition tens of them on CPU
LAPACK (measured 20-30x a same-size matrix product), so 15 Cholesky factorisations
of the whole kernel are cheaper than 5 fold eigendecompositions + 1 refit
eigendecomposition. See ``benchmarks/solvers.py`` for the side-by-side timings.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import GroupKFold, KFold

from .torchkit import select_device

__all__ = ["DEFAULT_ALPHAS", "cv_splits", "ridge_cv", "RidgeDecoder"]

DEFAULT_ALPHAS = np.logspace(-1, 6, 15)
#: Elements (float64) of the largest (n_samples, n_targets_batch) block held at once.
_TARGET_BLOCK = 2 ** 25


def cv_splits(n_samples: int, n_folds: int = 5, groups=None, seed: int = 0) -> list:
    """Cross-validation folds: whole groups (e.g. runs) left out when ``groups`` is given.

    Grouping keeps trials of one run out of training while that run is validated:
    neighbouring single-trial betas share noise, and leaving them in would favour
    under-regularised fits. With fewer groups than ``n_folds`` each fold leaves one
    group out; there is never a silent switch to shuffled folds.

    Parameters
    ----------
    n_samples : int
    n_folds : int, default=5
    groups : array-like, shape (n_samples,), optional
        Group of each sample. None declares the samples independent: shuffled K folds.
    seed : int, default=0
        Seed of the shuffled folds (no groups).

    Returns
    -------
    list of (train_indices, test_indices)

    Raises
    ------
    ValueError
        ``groups`` with fewer than 2 distinct values: no group can be held out.
    """
    if groups is None:
        splitter = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(n_samples)))
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError(
            f"cross-validation leaves whole runs out and needs training trials from at "
            f"least 2 runs; all {n_samples} come from one ({np.asarray(groups)[0]!r})"
        )
    splitter = GroupKFold(n_splits=min(n_folds, n_groups))
    return list(splitter.split(np.zeros(n_samples), groups=groups))


def ridge_cv(X, Y, alphas, cv, n_targets_batch=None, device="cpu"):
    """Ridge with a penalty per target chosen by cross-validated R2, for all targets.

    Same estimator as himalaya's ``KernelRidgeCV(kernel="linear")`` (when
    ``n_samples < n_features``) or ``RidgeCV`` with ``local_alpha=True``,
    ``score_func=r2_score``, ``fit_intercept=False``: for each target, the penalty
    maximising the R2 averaged over folds (ties to the larger penalty), then the
    fit on all samples at that penalty.

    Parameters
    ----------
    X : ndarray, shape (n_samples, n_features)
        Centred (usually standardised) inputs.
    Y : ndarray, shape (n_samples, n_targets)
        Centred targets.
    alphas : array-like, shape (n_alphas,)
        Candidate penalties (> 0).
    cv : list of (train, test) index pairs
        Folds whose test sets partition the samples (as KFold and GroupKFold give).
    n_targets_batch : int or None
        Targets solved at once; None bounds the (n_samples, batch) blocks to 2**25
        float64 elements.
    device : str or torch.device
        Where to solve (float64).

    Returns
    -------
    coef : ndarray, shape (n_features, n_targets), float64
    best_alphas : ndarray, shape (n_targets,)
    cv_scores : ndarray, shape (n_targets,)
        R2 averaged over folds at the best penalty.
    """
    import torch

    alphas = np.asarray(alphas, dtype=np.float64).ravel()
    if (alphas <= 0).any():
        raise ValueError("alphas must be > 0")
    n, p = X.shape
    k = Y.shape[1]
    tests = [np.asarray(test) for _, test in cv]
    order = np.concatenate(tests)
    if len(order) != n or not np.array_equal(np.sort(order), np.arange(n)):
        raise ValueError("the folds' test sets must partition the samples")
    # Samples reordered so each fold's test set is one contiguous block [start, stop):
    # the inverse's diagonal blocks then come from triangular solves on the trailing
    # part of the Cholesky factor only.
    bounds = np.cumsum([0] + [len(t) for t in tests])
    device = torch.device(device)
    f64 = dict(dtype=torch.float64, device=device)
    Xp = torch.as_tensor(np.asarray(X)[order], **f64)
    Yp = np.asarray(Y, dtype=np.float64)[order]
    batch = n_targets_batch or max(1, _TARGET_BLOCK // max(n, p))
    kernel = n < p
    gram = Xp @ Xp.T if kernel else Xp.T @ Xp
    eye = torch.eye(len(gram), **f64)

    best_score = np.full(k, -np.inf)
    best = np.zeros(k, dtype=int)
    cv_scores = np.zeros(k)
    # best whole-data solution per target: dual (n, k) in kernel form, weights (p, k) in primal
    best_sol = torch.zeros((n if kernel else p, k), **f64)
    for a, alpha in enumerate(alphas):
        chol = torch.linalg.cholesky(gram + alpha * eye)
        # per fold, the Cholesky factor of the matrix turning whole-data residuals
        # (or dual coefficients) into held-out residuals
        fold_chols = []
        for start, stop in zip(bounds[:-1], bounds[1:]):
            if kernel:
                # [(K + aI)^-1]_GG = Z^T Z with Z = L^-1 E_G, zero above row `start`
                e = torch.zeros((n - start, stop - start), **f64)
                e[: stop - start].fill_diagonal_(1.0)
                z = torch.linalg.solve_triangular(chol[start:, start:], e, upper=False)
                block = z.T @ z
            else:
                # I - H_GG with H = X (X^T X + aI)^-1 X^T
                z = torch.linalg.solve_triangular(chol, Xp[start:stop].T, upper=False)
                block = torch.eye(stop - start, **f64) - z.T @ z
            fold_chols.append(torch.linalg.cholesky(block))
        for t0 in range(0, k, batch):
            sl = slice(t0, min(k, t0 + batch))
            y = torch.as_tensor(Yp[:, sl], device=device)
            if kernel:
                sol = torch.cholesky_solve(y, chol)  # dual coefficients
                resid = sol
            else:
                sol = torch.cholesky_solve(Xp.T @ y, chol)  # weights
                resid = y - Xp @ sol
            scores = torch.zeros(y.shape[1], **f64)
            for (start, stop), fchol in zip(zip(bounds[:-1], bounds[1:]), fold_chols):
                g = slice(start, stop)
                # held-out residuals: block^-1 times the whole-data dual (kernel) or residual
                held_out = torch.cholesky_solve(resid[g], fchol)
                yg = y[g]
                var = ((yg - yg.mean(0)) ** 2).sum(0)
                r2 = 1.0 - (held_out ** 2).sum(0) / var
                scores += torch.where(var == 0, torch.zeros_like(r2), r2)  # himalaya: R2 0 if var 0
            mean = scores.cpu().numpy() / len(tests)
            # himalaya adds 1e-10 log(alpha) to prefer larger penalties on equal scores
            adjusted = mean + 1e-10 * np.log(alpha)
            better = adjusted > best_score[sl]
            if better.any():
                idx = np.flatnonzero(better)
                best_score[t0 + idx] = adjusted[idx]
                cv_scores[t0 + idx] = mean[idx]
                best[t0 + idx] = a
                cols = torch.as_tensor(t0 + idx, device=device)
                best_sol[:, cols] = sol[:, torch.as_tensor(idx, device=device)]
        del chol, fold_chols
    coef = Xp.T @ best_sol if kernel else best_sol
    return coef.cpu().numpy(), alphas[best], cv_scores


class RidgeDecoder:
    """Ridge regression from voxels to targets with a cross-validated alpha per target.

    Parameters
    ----------
    alphas : array-like
        Candidate ridge penalties.
    n_folds : int
        Number of cross-validation folds.
    device : {"auto", "cpu", "cuda", "cuda:N"}
        Where the float64 solve runs (:func:`fmrirecon.torchkit.select_device`):
        ``"auto"`` a CUDA GPU when one is visible, else the CPU. The fitted weights are
        kept as numpy, so a fitted decoder predicts anywhere.
    n_targets_batch : int or None
        Solve targets in batches of this size to bound memory (None: automatic).
    seed : int
        Seed of the fold assignment when no groups are given.

    Attributes
    ----------
    coef_ : ndarray, shape (n_voxels, n_targets)
        Weights on standardised voxels (float32).
    intercept_ : ndarray, shape (n_targets,)
    best_alphas_ : ndarray, shape (n_targets,)
    cv_scores_ : ndarray, shape (n_targets,)
        Cross-validated R2 of each target at its best alpha.

    Notes
    -----
    The solve is float64 (:func:`ridge_cv`): himalaya's float32 solve differed from
    the float64 estimators by 2e-4 in predictions already at the small benchmark
    size (``benchmarks/solvers.py``), above the 1e-5 agreement we keep. Means,
    scales and weights are stored as float32; :meth:`predict` accumulates in float64.
    """

    def __init__(self, alphas=DEFAULT_ALPHAS, n_folds: int = 5, device: str = "auto",
                 n_targets_batch: int | None = None, seed: int = 0):
        self.alphas = np.asarray(alphas, dtype=np.float64)
        self.n_folds = n_folds
        self.device = device
        self.n_targets_batch = n_targets_batch
        self.seed = seed

    def fit(self, X: np.ndarray, Y: np.ndarray, groups=None) -> "RidgeDecoder":
        """Fit on betas ``X`` (n_trials, n_voxels) and targets ``Y`` (n_trials, n_targets).

        ``groups`` (n_trials,), e.g. the run of each trial, makes the folds leave
        whole groups out.
        """
        X = np.array(X, dtype=np.float64)  # a copy: standardised in place below
        Y = np.asarray(Y, dtype=np.float64)
        if Y.ndim == 1:
            Y = Y[:, None]
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"{X.shape[0]} trials of betas but {Y.shape[0]} of targets")
        x_mean = X.mean(0)
        x_scale = X.std(0)
        x_scale[x_scale == 0] = 1.0
        X -= x_mean
        X /= x_scale
        y_mean = Y.mean(0)
        cv = cv_splits(len(X), self.n_folds, groups, self.seed)
        coef, self.best_alphas_, self.cv_scores_ = ridge_cv(
            X, Y - y_mean, self.alphas, cv, self.n_targets_batch, select_device(self.device))
        self.x_mean_ = x_mean.astype(np.float32)
        self.x_scale_ = x_scale.astype(np.float32)
        self.y_mean_ = y_mean.astype(np.float32)
        self.coef_ = coef.astype(np.float32)
        self.intercept_ = self.y_mean_
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted targets (n_trials, n_targets), float32, for betas ``X``."""
        Xs = (np.asarray(X, dtype=np.float64) - self.x_mean_) / self.x_scale_
        return (Xs @ self.coef_.astype(np.float64) + self.intercept_).astype(np.float32)
