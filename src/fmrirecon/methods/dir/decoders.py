"""Feature decoders with per-unit voxel selection (the Kamitani lab's decoders)."""

from __future__ import annotations

import logging

import numpy as np

from ...decoding import cv_splits

log = logging.getLogger(__name__)


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
