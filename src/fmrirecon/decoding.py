"""The shared decoder backbone: ridge regression from voxels to any target space.

Every reconstruction method maps betas to its own targets (pixel-PCA coefficients,
generator latents, DNN features) with :class:`RidgeDecoder`: voxels standardised with
training statistics, one ridge penalty per target chosen by cross-validation. The fit
is delegated to himalaya, which solves all targets and all penalties from one
decomposition (the kernel form when there are fewer trials than voxels) on numpy or
torch (GPU) backends.
"""

from __future__ import annotations

import numpy as np
from himalaya.backend import get_backend, set_backend
from himalaya.kernel_ridge import KernelRidgeCV
from himalaya.ridge import RidgeCV
from himalaya.scoring import r2_score
from sklearn.model_selection import GroupKFold, KFold

DEFAULT_ALPHAS = np.logspace(-1, 6, 15)


def cv_splits(n_samples: int, n_folds: int = 5, groups=None, seed: int = 0) -> list:
    """Cross-validation folds, grouped (e.g. by run) when ``groups`` is given.

    Grouping keeps trials of one run out of training while that run is validated:
    neighbouring single-trial betas share noise, and leaving them in would favour
    under-regularised fits.
    """
    if groups is not None and len(np.unique(groups)) >= n_folds:
        splitter = GroupKFold(n_splits=n_folds)
        return list(splitter.split(np.zeros(n_samples), groups=groups))
    splitter = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(n_samples)))


class RidgeDecoder:
    """Ridge regression from voxels to targets with a cross-validated alpha per target.

    Parameters
    ----------
    alphas : array-like
        Candidate ridge penalties.
    n_folds : int
        Number of cross-validation folds.
    backend : {"numpy", "torch", "torch_cuda"}
        himalaya backend for the fit; the fitted weights are kept as numpy.
    n_targets_batch : int or None
        Fit targets in batches of this size to bound memory.
    seed : int
        Seed of the fold assignment when no groups are given.

    Attributes
    ----------
    coef_ : ndarray, shape (n_voxels, n_targets)
        Weights on standardised voxels.
    intercept_ : ndarray, shape (n_targets,)
    best_alphas_ : ndarray, shape (n_targets,)
    cv_scores_ : ndarray, shape (n_targets,)
        Cross-validated R2 of each target at its best alpha.
    """

    def __init__(self, alphas=DEFAULT_ALPHAS, n_folds: int = 5, backend: str = "numpy",
                 n_targets_batch: int | None = None, seed: int = 0):
        self.alphas = np.asarray(alphas, dtype=np.float64)
        self.n_folds = n_folds
        self.backend = backend
        self.n_targets_batch = n_targets_batch
        self.seed = seed

    def fit(self, X: np.ndarray, Y: np.ndarray, groups=None) -> "RidgeDecoder":
        """Fit on betas ``X`` (n_trials, n_voxels) and targets ``Y`` (n_trials, n_targets).

        ``groups`` (n_trials,), e.g. the run of each trial, makes the folds leave
        whole groups out.
        """
        X = np.asarray(X, dtype=np.float32)
        Y = np.asarray(Y, dtype=np.float32)
        if Y.ndim == 1:
            Y = Y[:, None]
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"{X.shape[0]} trials of betas but {Y.shape[0]} of targets")
        self.x_mean_ = X.mean(0)
        self.x_scale_ = X.std(0)
        self.x_scale_[self.x_scale_ == 0] = 1.0
        Xs = (X - self.x_mean_) / self.x_scale_
        self.y_mean_ = Y.mean(0)
        Yc = Y - self.y_mean_

        previous = get_backend()
        backend = set_backend(self.backend, on_error="warn")
        try:
            solver_params = dict(local_alpha=True, score_func=r2_score, n_targets_batch=self.n_targets_batch,
                                 n_targets_batch_refit=self.n_targets_batch)
            cv = cv_splits(len(X), self.n_folds, groups, self.seed)
            if X.shape[0] < X.shape[1]:
                # Fewer trials than voxels: the kernel form solves an n_trials system.
                model = KernelRidgeCV(alphas=self.alphas, kernel="linear", cv=cv,
                                      solver_params=solver_params)
                model.fit(Xs, Yc)
                dual = backend.to_numpy(model.dual_coef_)
                coef = Xs.T @ dual.reshape(len(Xs), -1)
            else:
                model = RidgeCV(alphas=self.alphas, cv=cv, solver_params=solver_params)
                model.fit(Xs, Yc)
                coef = backend.to_numpy(model.coef_).reshape(Xs.shape[1], -1)
            self.best_alphas_ = backend.to_numpy(model.best_alphas_)
            self.cv_scores_ = backend.to_numpy(model.cv_scores_)
        finally:
            set_backend(previous)
        self.coef_ = coef.astype(np.float32)
        self.intercept_ = self.y_mean_
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted targets (n_trials, n_targets) for betas ``X``."""
        Xs = (np.asarray(X, dtype=np.float32) - self.x_mean_) / self.x_scale_
        return Xs @ self.coef_ + self.intercept_
