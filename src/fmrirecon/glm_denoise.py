"""Single-trial betas with a per-voxel HRF, data-driven noise regressors and ridge.

Method ``denoised`` (``glm.method: denoised``): the three additions of GLMsingle
(Prince et al. 2022, eLife 11:e77599) to a least-squares-all (LSA) single-trial GLM,
built on the pipeline's own designs (drift, constant and motion confounds of
:mod:`fmrirecon.glm`, which are projected out of data and design per run). The drift
basis is GLMsingle's by default, polynomials of degree round(run minutes / 2)
(``drift_model="polynomial"``): with nilearn's cosine basis to 0.01 Hz the median
single-trial test-retest correlation of the visual voxels was 0.04-0.08 lower at every
step on the built-in simulation with HRF variability and shared noise (final betas
0.375 against 0.439; ``benchmarks/denoise_pool.py``); ``drift_model="cosine"`` keeps it.

1. **HRF per voxel.** Every voxel gets the HRF of a 20-HRF library
   (:func:`fmrirecon.hrf_library.hrf_library`, peaks 4-7 s) under which an on-off
   model (all trials as one regressor) explains the most variance
   (``hrf_fit="onoff"``, the default), or under which the single-trial design does
   (``hrf_fit="trials"``). On the built-in simulation with HRF variability the
   on-off choice tracks the true peak far better (r = 0.85-0.92 against 0.41-0.47):
   with one amplitude per trial, every HRF fits noise nearly as well.
2. **GLMdenoise** (Kay et al. 2013, Front. Neurosci. 7:247). The *noise pool* are
   voxels whose on-off R2 (canonical HRF) is below the threshold between the
   non-responsive and responsive groups (:func:`noise_threshold`, GLMsingle's
   mixture of two Gaussians); the principal
   components of their (unit-norm, nuisance-free) time series, per run, are noise
   regressors. The number of components, 0 to ``max_pcs``, is chosen by
   leave-one-run-out cross-validation of repeated trials: each held-out trial's
   beta is predicted by the mean beta of the same stimulus in the other runs, and
   the median cross-validated R2 over clearly responsive voxels (above the responsive
   group's mean on-off R2) is
   compared; the smallest number reaching ``1 - pc_tolerance`` of the best gain
   over 0 components is taken (``pc_tolerance=0``: the maximum).
3. **Fractional ridge** (Rokem & Kay 2020, :mod:`fmrirecon.fracridge`) per voxel,
   the fraction chosen per voxel by the same cross-validation: the mean ridge beta of
   a stimulus in the other runs predicts each held-out trial's ridge beta at the same
   fraction. GLMsingle predicts the held-out trial's *unregularised* beta instead
   (``ridge_xval="ols"``); on the built-in simulation with HRF variability and shared
   noise (``benchmarks/denoise_pool.py``) that choice lowered the single-trial
   test-retest correlation of the final betas from 0.439 to 0.400 (median over the
   visual voxels; test split, used for no choice), so the scoring is kept. The ridge betas are
   then scaled and offset per voxel to best match that voxel's unregularised betas,
   as GLMsingle does, so they keep the data's units.

Betas are the peak of each trial's response in percent signal change (every
regressor peaks at 1), so they are not on the scale of nilearn's LSA effect sizes.
Cross-validation uses the repeats of the ``xval_split`` trials only (default
``train``, so that test-set consistency stays an out-of-sample measure).

Memory: the masked data of all runs are held once as float32 (4 bytes x volumes x
voxels); everything else is computed per chunk of ``chunk_size`` voxels (float64
temporaries of about 8 x volumes-per-run x chunk_size bytes, and the trial x chunk
betas of the ridge path). The result is deterministic.
"""

from __future__ import annotations

import logging
import sys
import warnings
from dataclasses import dataclass, field

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
from nilearn.glm.first_level import make_first_level_design_matrix
from tqdm import tqdm

from fmrirecon.betas import Betas
from fmrirecon.fracridge import DEFAULT_FRACTIONS, fraction_alphas, shrink
from fmrirecon.hrf_library import canonical_hrf, hrf_library, trial_regressors

__all__ = ["METHOD", "STEPS", "DenoiseFit", "fit_denoised", "denoised_betas", "denoise_maps",
           "write_denoise", "step_reliability", "reliability_by_step"]

logger = logging.getLogger(__name__)

METHOD = "denoised"
#: The cumulative steps whose betas ``keep_steps`` returns, in order.
STEPS = ("lsa", "+hrf", "+denoise", "+ridge")
#: Fewer cross-validated trials than this: no cross-validation (0 PCs, OLS).
MIN_XVAL_TRIALS = 6
#: At most this many responsive voxels score the number of noise components.
MAX_GOOD_VOXELS = 20000
_RCOND = 1e-10


@dataclass
class DenoiseFit:
    """Result of :func:`fit_denoised` (per-voxel arrays have one entry per voxel).

    Attributes
    ----------
    betas : ndarray, shape (n_trials, n_voxels), float32
    hrf_index : ndarray of int
        Index of each voxel's HRF in ``hrf_peaks`` (0-based).
    hrf_peaks : ndarray, shape (n_hrfs,)
        Time to peak (s) of each library HRF.
    r2 : ndarray
        Percent variance the trial regressors (ridge betas) explain in the data
        once drift, constant, confounds and the chosen noise components are
        projected out (as GLMsingle's R2: the noise components are not credited).
    onoff_r2 : ndarray
        Percent variance explained by the on-off model (canonical HRF).
    n_pcs : int
        Number of noise components chosen.
    pc_scores : ndarray, shape (max_pcs + 1,)
        Median cross-validated R2 (percent) over ``good_voxels`` per number of components.
    fraction : ndarray
        Ridge fraction chosen per voxel (1 = OLS).
    noise_pool, good_voxels : ndarray of bool
        Noise-pool voxels, and the responsive voxels that scored the components.
    step_betas : dict
        Betas (float32) of the steps in :data:`STEPS` when ``keep_steps``.
    """

    betas: np.ndarray
    hrf_index: np.ndarray
    hrf_peaks: np.ndarray
    r2: np.ndarray
    onoff_r2: np.ndarray
    n_pcs: int
    pc_scores: np.ndarray
    fraction: np.ndarray
    noise_pool: np.ndarray
    good_voxels: np.ndarray
    step_betas: dict = field(default_factory=dict)


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


def noise_threshold(onoff_r2: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """The on-off R2 below which a voxel counts as non-responsive (noise pool), and the
    level above which it is clearly responsive (it scores the noise components).

    As GLMsingle's ``findtailthreshold``: a mixture of two Gaussians is fitted to the
    voxels' on-off R2 and the threshold is where the two weighted densities cross,
    between the means. It holds whatever the share of responsive voxels (a median-
    centred noise level falls inside the responsive group once they are the majority,
    as in a visual ROI). Without two separate groups (the crossing is not between the
    means, or one group holds under 2% of the voxels) the robust lower-half noise level
    (:func:`_robust_noise_level`, centre + 1 spread) is used.

    The responsive level is the responsive component's mean (about the upper half of
    the responsive voxels): weak responders just above the threshold have cross-validated
    single-trial R2 far below 0 and would choose the number of components by noise
    (fallback: centre + 4 spreads).
    """
    from scipy.stats import norm
    from sklearn.mixture import GaussianMixture

    values = np.asarray(onoff_r2, dtype=np.float64)
    values = values[np.isfinite(values)]
    centre, spread = _robust_noise_level(values)
    fallback = (centre + spread, centre + 4 * spread)
    if len(values) < 20:
        return fallback
    gmm = GaussianMixture(2, random_state=seed, n_init=3).fit(values[:, None])
    means, sds = gmm.means_[:, 0], np.sqrt(gmm.covariances_.reshape(2))
    lo, hi = np.argsort(means)
    if gmm.weights_.min() < 0.02:
        return fallback
    grid = np.linspace(means[lo], means[hi], 2001)
    diff = gmm.weights_[lo] * norm.pdf(grid, means[lo], sds[lo]) - \
        gmm.weights_[hi] * norm.pdf(grid, means[hi], sds[hi])
    cross = np.flatnonzero(np.diff(np.sign(diff)) != 0)
    if not len(cross):
        return fallback
    return float(grid[cross[0]]), float(means[hi])


def _robust_noise_level(values: np.ndarray) -> tuple[float, float]:
    """Centre and spread of the noise distribution of on-off R2 (lower half only,
    so that however many voxels respond, they do not inflate the estimate)."""
    values = values[np.isfinite(values)]
    centre = float(np.median(values))
    lower = values[values <= centre]
    spread = 1.4826 * float(np.median(centre - lower)) if len(lower) else 0.0
    return centre, max(spread, 1e-12)


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


def fit_denoised(data: list[np.ndarray], designs: list[dict], conditions, *,
                 blas_threads: int | None = 1, **options) -> DenoiseFit:
    """Fit the ``denoised`` single-trial GLM to in-memory data (see the module docstring).

    Parameters
    ----------
    data : list of ndarray, each (n_scans_r, n_voxels)
        One array per run, in percent signal change (float32 is enough).
    designs : list of dict
        Per run: ``onsets``, ``durations`` (s, one per trial, in row order),
        ``frame_times`` (s, one per scan) and ``nuisance`` (n_scans_r, q) regressors
        of no interest (drift, constant, confounds).
    conditions : sequence, length n_trials (all runs, in order)
        Label of each trial for cross-validation (the stimulus); None for trials
        that do not take part.

    Other Parameters
    ----------------
    n_hrfs, hrf_peak_range
        The HRF library (:func:`fmrirecon.hrf_library.hrf_library`).
    hrf_fit : {"onoff", "trials"}, default="onoff"
        Model whose R2 chooses each voxel's HRF: a single on-off regressor or the
        single-trial design.
    max_pcs : int, default=10
        Largest number of noise components tried (0 disables denoising).
    pc_tolerance : float, default=0.05
        Take the fewest components reaching ``1 - pc_tolerance`` of the largest gain
        in median cross-validated R2 over 0 components.
    fractions : sequence of float, default=DEFAULT_FRACTIONS
        Ridge fractions tried per voxel (include 1 to allow OLS).
    chunk_size : int, default=20000
        Voxels processed at a time.
    keep_steps : bool, default=False
        Also return the betas of every step of :data:`STEPS`.
    progress : bool, default=False
        Progress bars on stderr.
    noise_pool : {"mixture", "median"}, default="mixture"
        How the on-off R2 threshold of the noise pool is found: :func:`noise_threshold`
        (GLMsingle's two-Gaussian mixture), or the former median-centred noise level
        (pool below centre + 1 spread, scoring voxels above centre + 4 spreads), which
        put many responsive voxels in the pool once they are the majority.
    ridge_xval : {"ridge", "ols"}, default="ridge"
        What each held-out trial's beta is, when a fraction is scored: its beta at the
        same fraction, or its unregularised (OLS) beta, as GLMsingle does (lower
        single-trial test-retest here; see the module docstring).
    blas_threads : int or None, default=1
        Cap on BLAS/LAPACK threads during the fit (None: no cap). The matrices are
        small (scans x trials), so threads mostly add overhead, and on shared cores
        oversubscription slows small products many-fold.

    Returns
    -------
    DenoiseFit
    """
    from threadpoolctl import threadpool_limits

    if blas_threads is None:
        return _fit_denoised(data, designs, conditions, **options)
    with threadpool_limits(limits=int(blas_threads), user_api="blas"):
        return _fit_denoised(data, designs, conditions, **options)


def _fit_denoised(
    data: list[np.ndarray],
    designs: list[dict],
    conditions,
    *,
    n_hrfs: int = 20,
    hrf_peak_range: tuple[float, float] = (4.0, 7.0),
    hrf_fit: str = "onoff",
    max_pcs: int = 10,
    pc_tolerance: float = 0.05,
    fractions=DEFAULT_FRACTIONS,
    chunk_size: int = 20000,
    keep_steps: bool = False,
    progress: bool = False,
    noise_pool: str = "mixture",
    ridge_xval: str = "ridge",
) -> DenoiseFit:
    if noise_pool not in ("mixture", "median"):
        raise ValueError(f"noise_pool must be 'mixture' or 'median', got {noise_pool!r}")
    if ridge_xval not in ("ols", "ridge"):
        raise ValueError(f"ridge_xval must be 'ols' or 'ridge', got {ridge_xval!r}")
    if hrf_fit not in ("trials", "onoff"):
        raise ValueError(f"hrf_fit must be 'trials' or 'onoff', got {hrf_fit!r}")
    if int(max_pcs) < 0 or not 0 <= float(pc_tolerance) < 1:
        raise ValueError(f"need max_pcs >= 0 and 0 <= pc_tolerance < 1, got {max_pcs}, {pc_tolerance}")
    if len(data) != len(designs) or not data:
        raise ValueError(f"{len(data)} data arrays but {len(designs)} designs")
    n_vox = data[0].shape[1]
    if any(Y.ndim != 2 or Y.shape[1] != n_vox for Y in data):
        raise ValueError("every run's data must be (n_scans, n_voxels) with the same voxels")
    fractions = np.asarray(sorted({float(f) for f in fractions}, reverse=True))
    library, peaks = hrf_library(n_hrfs, hrf_peak_range)
    canon = len(library)                              # index of the canonical HRF
    hrfs = np.vstack([library, canonical_hrf()[None, : library.shape[1]]])
    bar = dict(file=sys.stderr, disable=not progress)

    runs, trial_runs = [], []
    for r, (Y, d) in enumerate(zip(data, designs)):
        if Y.shape[0] != len(d["frame_times"]) or len(d["nuisance"]) != Y.shape[0]:
            raise ValueError(f"run {r}: {Y.shape[0]} scans but frame_times/nuisance do not match")
        runs.append(_Run(Y, d["onsets"], d["durations"], d["frame_times"], d["nuisance"], hrfs))
        trial_runs += [r] * len(d["onsets"])
    trial_runs = np.asarray(trial_runs)
    if len(conditions) != len(trial_runs):
        raise ValueError(f"{len(conditions)} conditions but {len(trial_runs)} trials")
    xval = _CrossValidation(conditions, trial_runs)
    can_xval = xval.n >= MIN_XVAL_TRIALS
    if not can_xval:
        logger.warning("only %d trials can be cross-validated (repeats in other runs); "
                       "no noise components and no ridge", xval.n)

    # 1. Totals and on-off fits: nuisance-free sum of squares per voxel, and the fit
    # of one regressor (all trials) under every HRF.
    ss_total = np.zeros(n_vox)
    xy = np.zeros((len(hrfs), n_vox))
    xx = np.zeros(len(hrfs))
    for run in tqdm(runs, desc=f"{METHOD}: on-off fits", unit="run", **bar):
        on = run.X.sum(axis=2)                        # (n_hrf + 1, T), nuisance-free
        for cols in _chunks(n_vox, chunk_size):
            Y = run.Y[:, cols].astype(np.float64)
            ss_total[cols] += (Y**2).sum(axis=0) - ((run.Qn.T @ Y) ** 2).sum(axis=0)
            xy[:, cols] += on @ Y
        xx += (on**2).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        onoff = np.where(ss_total > 0, 100 * (xy**2 / xx[:, None]) / ss_total, 0.0)
    onoff_r2 = onoff[canon]

    # Noise pool below the threshold between the non-responsive and responsive groups
    # of on-off R2 (GLMsingle's findtailthreshold); responsive voxels above it score the
    # number of noise components.
    if noise_pool == "mixture":
        threshold, responsive = noise_threshold(onoff_r2)
        pool, good = onoff_r2 < threshold, onoff_r2 > responsive
    else:
        centre, spread = _robust_noise_level(onoff_r2)
        pool, good = onoff_r2 < centre + spread, onoff_r2 > centre + 4 * spread
    noise_pool = pool
    min_good = min(n_vox, 50)
    if good.sum() < min_good or good.sum() > MAX_GOOD_VOXELS:
        # too few responsive voxels to score (or more than needed): take the best ones
        n_take = int(np.clip(good.sum(), min_good, MAX_GOOD_VOXELS))
        good = np.zeros(n_vox, dtype=bool)
        good[np.argsort(-onoff_r2, kind="stable")[:n_take]] = True
    noise_pool &= ~good

    # 2. HRF per voxel.
    if hrf_fit == "onoff":
        hrf_index = np.argmax(onoff[:canon], axis=0)
    else:
        hrf_index = np.empty(n_vox, dtype=int)
        stacked = [np.vstack([run.basis(h, 0)[0].T for h in range(canon)]) for run in runs]
        sizes = [[run.basis(h, 0)[0].shape[1] for h in range(canon)] for run in runs]
        for cols in tqdm(_chunks(n_vox, chunk_size), desc=f"{METHOD}: HRF choice", unit="chunk", **bar):
            explained = np.zeros((canon, len(cols)))
            for run, B, n_h in zip(runs, stacked, sizes):
                proj = (B @ run.Y[:, cols].astype(np.float64)) ** 2
                explained += np.add.reduceat(proj, np.r_[0, np.cumsum(n_h)[:-1]], axis=0)
            hrf_index[cols] = np.argmax(explained, axis=0)

    # 3. Noise components and their number.
    n_pool = int(noise_pool.sum())
    max_pcs = int(max_pcs) if can_xval else 0
    if max_pcs and n_pool < 2 * max_pcs:
        logger.warning("noise pool of %d voxels is too small for %d components; no denoising",
                       n_pool, max_pcs)
        max_pcs = 0
    if max_pcs:
        for run in runs:
            Z = run.Y[:, noise_pool].astype(np.float64)
            Z -= run.Qn @ (run.Qn.T @ Z)
            Z /= np.maximum(np.linalg.norm(Z, axis=0), 1e-12)   # each voxel counts the same
            # leading left singular vectors, from the (scans x scans) Gram matrix
            evals, vecs = np.linalg.eigh(Z @ Z.T)
            run.P = vecs[:, ::-1][:, :max_pcs]
    good_idx = np.flatnonzero(good)
    pc_scores = np.full(max_pcs + 1, np.nan)
    for n in tqdm(range(max_pcs + 1), desc=f"{METHOD}: noise components", unit="pcs", **bar):
        betas = np.empty((len(trial_runs), len(good_idx)))
        for h in np.unique(hrf_index[good_idx]):
            sel = hrf_index[good_idx] == h
            betas[:, sel] = np.vstack([run.ols(h, n, good_idx[sel]) for run in runs])
        pc_scores[n] = np.nanmedian(xval.r2(betas)) if can_xval else np.nan
        if n:
            for run in runs:
                run.forget(n)
    n_pcs = 0
    if max_pcs:
        gain = pc_scores - pc_scores[0]
        if np.nanmax(gain) > 0:
            n_pcs = int(np.flatnonzero(gain >= (1 - pc_tolerance) * np.nanmax(gain))[0])
    logger.info("%d noise components (median cross-validated R2 by number: %s)", n_pcs,
                np.round(pc_scores, 2).tolist())

    # 4. Final fits per chunk of voxels: OLS with the chosen HRF and components, then
    # fractional ridge with the fraction chosen per voxel.
    n_trials = len(trial_runs)
    out = np.empty((n_trials, n_vox), dtype=np.float32)
    steps = {s: np.empty((n_trials, n_vox), dtype=np.float32) for s in STEPS} if keep_steps else {}
    fraction = np.ones(n_vox, dtype=np.float32)
    r2 = np.zeros(n_vox, dtype=np.float32)
    for cols in tqdm(_chunks(n_vox, chunk_size), desc=f"{METHOD}: ridge", unit="chunk", **bar):
        if keep_steps:
            steps["lsa"][:, cols] = np.vstack([run.ols(canon, 0, cols) for run in runs])
        for h in np.unique(hrf_index[cols]):
            vox = cols[hrf_index[cols] == h]
            if keep_steps:
                steps["+hrf"][:, vox] = np.vstack([run.ols(h, 0, vox) for run in runs])
            s_all, yt_all, vts, ss_resid = [], [], [], np.zeros(len(vox))
            for run in runs:
                U, s, Vt = run.basis(h, n_pcs)
                Y = run.Y[:, vox].astype(np.float64)
                yt = U.T @ Y
                # sum of squares left after nuisance and noise components, for R2
                ss_resid += (Y**2).sum(axis=0) - ((run.Qn.T @ Y) ** 2).sum(axis=0)
                if n_pcs:
                    ss_resid -= ((run.P[:, :n_pcs].T @ Y) ** 2).sum(axis=0)
                s_all.append(s)
                yt_all.append(yt)
                vts.append(Vt)
            s_all = np.concatenate(s_all)
            yt_all = np.vstack(yt_all)
            bounds = np.cumsum([0] + [len(v) for v in vts])

            def betas_for(alpha):
                coef = shrink(s_all, yt_all, alpha)   # rotated coefficients, all runs
                return np.vstack([vt.T @ coef[a:b] for vt, a, b in zip(vts, bounds[:-1], bounds[1:])]), coef

            ols, _ = betas_for(np.zeros(len(vox)))
            if keep_steps:
                steps["+denoise"][:, vox] = ols
            if can_xval and len(fractions) > 1:
                # the achieved fractions are within ~1e-4 of the targets without polishing
                alphas = fraction_alphas(s_all, yt_all, fractions, n_polish=0)
                # each held-out trial's beta (at this fraction, or unregularised as
                # GLMsingle) is predicted by the mean ridge beta of its stimulus elsewhere
                target = ols if ridge_xval == "ols" else None
                scores = np.stack([xval.r2(betas_for(a)[0], target) for a in alphas])
                best = np.argmax(np.nan_to_num(scores, nan=-np.inf), axis=0)  # ties: larger fraction
                alpha = alphas[best, np.arange(len(vox))]
                fraction[vox] = fractions[best]
            else:
                alpha = np.zeros(len(vox))
                fraction[vox] = 1.0
            ridge, coef = betas_for(alpha)
            rss = ss_resid - 2 * (s_all[:, None] * coef * yt_all).sum(axis=0) \
                + ((s_all[:, None] * coef) ** 2).sum(axis=0)
            with np.errstate(divide="ignore", invalid="ignore"):
                r2[vox] = np.where(ss_resid > 0, 100 * (1 - rss / ss_resid), 0.0)
            out[:, vox] = _match_scale(ridge, ols)
            if keep_steps:
                steps["+ridge"][:, vox] = out[:, vox]
    return DenoiseFit(
        betas=out, hrf_index=hrf_index.astype(np.int16), hrf_peaks=peaks, r2=r2,
        onoff_r2=onoff_r2.astype(np.float32), n_pcs=n_pcs, pc_scores=pc_scores,
        fraction=fraction, noise_pool=noise_pool, good_voxels=good, step_betas=steps,
    )


def _match_scale(ridge: np.ndarray, ols: np.ndarray) -> np.ndarray:
    """Per voxel, ``a * ridge + b`` closest to ``ols`` (undoes ridge's shrinkage of units)."""
    rc = ridge - ridge.mean(axis=0)
    var = (rc**2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(var > 0, (rc * (ols - ols.mean(axis=0))).sum(axis=0) / var, 1.0)
    return a * rc + ols.mean(axis=0)


#: Drift bases of the ``denoised`` GLM (config ``glm.drift_model``).
DRIFT_MODELS = ("polynomial", "cosine")


def polynomial_degree(frame_times) -> int:
    """GLMsingle's drift degree: round(run duration in minutes / 2), at least 1."""
    duration = float(frame_times[-1] - frame_times[0]) + float(np.median(np.diff(frame_times)))
    return max(1, int(round(duration / 60 / 2)))


def _nuisance(frame_times, high_pass, confounds, drift_model: str = "cosine") -> np.ndarray:
    """Drift, constant and confounds: the LSA design without its trials.

    ``drift_model``: ``"cosine"`` (nilearn's basis up to ``high_pass`` Hz) or
    ``"polynomial"`` (Legendre-like polynomials of :func:`polynomial_degree`, as
    GLMsingle; ``high_pass`` unused).
    """
    if drift_model not in DRIFT_MODELS:
        raise ValueError(f"drift_model must be one of {DRIFT_MODELS}, got {drift_model!r}")
    add = {}
    if confounds is not None:
        add = {"add_regs": confounds.to_numpy(), "add_reg_names": list(confounds.columns)}
    drift = ({"drift_model": "cosine", "high_pass": high_pass} if drift_model == "cosine"
             else {"drift_model": "polynomial", "drift_order": polynomial_degree(frame_times)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        X = make_first_level_design_matrix(frame_times, None, **drift, **add)
    return X.to_numpy()


def denoised_betas(
    runs: list[dict],
    splits: dict,
    high_pass: float = 0.01,
    confounds: str = "motion6",
    drift_model: str = "polynomial",
    mask_img=None,
    progress: bool = True,
    xval_split: str = "train",
    keep_steps: bool = False,
    **options,
) -> tuple[Betas, DenoiseFit]:
    """Single-trial betas of one subject with method ``denoised``.

    Reads the runs as :func:`fmrirecon.glm.single_trial_betas` does (same events,
    mask, confounds, percent signal change and cosine drift) and fits
    :func:`fit_denoised`.

    Parameters
    ----------
    runs, splits, high_pass, confounds, mask_img, progress
        As for :func:`fmrirecon.glm.single_trial_betas`.
    drift_model : {"polynomial", "cosine"}, default="polynomial"
        Drift basis (see the module docstring); ``high_pass`` applies to cosine only.
    xval_split : {"train", "test", "all"}, default="train"
        Whose repeated stimuli cross-validate the number of noise components and the
        ridge fractions. If that split has too few, all splits are used (warning).
    keep_steps : bool, default=False
        Keep the betas of every step (:data:`STEPS`) in ``DenoiseFit.step_betas``.
    **options
        Passed to :func:`fit_denoised` (``n_hrfs``, ``hrf_peak_range``, ``hrf_fit``,
        ``max_pcs``, ``pc_tolerance``, ``fractions``, ``chunk_size``).

    Returns
    -------
    betas : Betas
        Trial table and geometry as for LSA; ``attrs`` record the settings and
        the number of noise components.
    fit : DenoiseFit
    """
    from fmrirecon.glm import CONFOUND_STRATEGIES, load_run, select_runs, subject_mask, trial_table

    if confounds not in CONFOUND_STRATEGIES:
        raise ValueError(f"confounds must be one of {list(CONFOUND_STRATEGIES)}, got {confounds!r}")
    if xval_split not in ("train", "test", "all"):
        raise ValueError(f"xval_split must be 'train', 'test' or 'all', got {xval_split!r}")
    used, task_split = select_runs(runs, splits)
    mask, mask_ref, mask_name = subject_mask(used, mask_img)
    data, designs, tables = [], [], []
    for run in tqdm(used, desc=f"{METHOD}: load", unit="run", file=sys.stderr, disable=not progress):
        events, Y, conf = load_run(run, mask, mask_ref, mask_name, confounds)
        frame_times = np.arange(Y.shape[0]) * float(run["tr"])
        data.append(Y.astype(np.float32))
        designs.append({"onsets": events["onset"].to_numpy(), "durations": events["duration"].to_numpy(),
                        "frame_times": frame_times, "nuisance": _nuisance(frame_times, high_pass, conf, drift_model)})
        tables.append(events.assign(task=str(run["task"]), run=int(run["run"]), split=task_split[run["task"]]))
        del Y
    trials = trial_table(tables)
    conditions = _xval_conditions(trials, xval_split)
    fit = fit_denoised(data, designs, conditions, keep_steps=keep_steps, progress=progress, **options)
    attrs = {
        "glm_method": METHOD, "high_pass": float(high_pass), "confounds": confounds,
        "drift_model": drift_model, "units": "percent signal change (peak of the trial response)",
        "noise_model": "ols", "n_noise_components": int(fit.n_pcs), "xval_split": xval_split,
        "hrf_library": f"{len(fit.hrf_peaks)} stretched Glover HRFs, peaks "
                       f"{fit.hrf_peaks[0]:g}-{fit.hrf_peaks[-1]:g} s",
        **{k: (str(v) if isinstance(v, (tuple, list, np.ndarray)) else v) for k, v in options.items()},
    }
    betas = Betas(
        betas=fit.betas, trials=trials, voxel_ijk=np.argwhere(mask).astype(np.int32),
        affine=np.asarray(mask_ref.affine, dtype=np.float64),
        shape=tuple(int(s) for s in mask_ref.shape[:3]), attrs=attrs,
    )
    return betas, fit


def _xval_conditions(trials: pd.DataFrame, xval_split: str) -> list:
    """Cross-validation label of each trial (``split/stim_file``; None if not used).

    The split is part of the label: an imagined image is not a repeat of the seen one.
    """
    labels = (trials["split"].astype(str) + "/" + trials["stim_file"].astype(str)).to_numpy(dtype=object)
    splits = trials["split"].to_numpy(dtype=str)

    def pick(chosen):
        keep = np.ones(len(trials), dtype=bool) if chosen == "all" else splits == chosen
        out = np.where(keep, labels, None)
        runs = (trials["task"].astype(str) + "/" + trials["run"].astype(str)).to_numpy()
        return list(out), _CrossValidation(out, runs).n

    conditions, n = pick(xval_split)
    if n < MIN_XVAL_TRIALS and xval_split != "all":
        logger.warning("split %r has %d trials repeated across runs; cross-validating on all "
                       "splits", xval_split, n)
        conditions, n = pick("all")
    return conditions


def denoise_maps(fit: DenoiseFit, betas: Betas) -> dict[str, nib.Nifti1Image]:
    """The per-voxel outputs as images on the BOLD grid.

    Returns
    -------
    dict
        ``hrf`` (1-based HRF index, 0 outside; the peak times are in the image's
        ``descrip`` and in the betas file), ``r2`` (percent), ``npcs`` (the number
        of noise components, the same in every voxel), ``fraction`` (ridge fraction)
        as float32 maps (NaN outside, except ``hrf``), and ``noisepool`` (uint8 mask).
    """
    i, j, k = np.asarray(betas.voxel_ijk).T
    affine = np.asarray(betas.affine, dtype=np.float64)

    def image(values, dtype, fill):
        vol = np.full(tuple(betas.shape), fill, dtype=dtype)
        vol[i, j, k] = values
        return nib.Nifti1Image(vol, affine)

    maps = {
        "hrf": image(fit.hrf_index.astype(np.int16) + 1, np.int16, 0),
        "r2": image(fit.r2, np.float32, np.nan),
        "npcs": image(np.full(len(i), fit.n_pcs), np.float32, np.nan),
        "fraction": image(fit.fraction, np.float32, np.nan),
        "noisepool": image(fit.noise_pool.astype(np.uint8), np.uint8, 0),
    }
    peaks = " ".join(f"{p:.2f}" for p in fit.hrf_peaks)
    maps["hrf"].header["descrip"] = f"HRF peak (s) by index: {peaks}"[:79]
    return maps


def step_reliability(fit: DenoiseFit, trials: pd.DataFrame, split: str = "test") -> dict[str, np.ndarray]:
    """Split-half reliability (:func:`fmrirecon.reliability.split_half_reliability`)
    of every step's betas over the repeated stimuli of ``split``.

    The default ``test`` split is not used to cross-validate (``xval_split="train"``),
    so the comparison is out of sample.
    """
    from fmrirecon.reliability import split_half_reliability

    if not fit.step_betas:
        raise ValueError("the fit has no step betas; fit with keep_steps=True")
    rows = (trials["split"] == split).to_numpy() if split != "all" else np.ones(len(trials), bool)
    stims = trials["stim_file"].to_numpy(dtype=str)[rows]
    return {s: split_half_reliability(fit.step_betas[s][rows], stims) for s in STEPS}


def write_denoise(path, fit: DenoiseFit, reliability_steps: dict | None = None,
                  split: str | None = None) -> None:
    """Add the fit's per-voxel outputs to a betas HDF5 file, in group ``denoise``.

    Datasets ``hrf_index``, ``hrf_peaks``, ``r2``, ``onoff_r2``, ``fraction``,
    ``noise_pool``, ``good_voxels``, ``pc_scores``; attribute ``n_pcs``; and, given
    ``reliability_steps`` (from :func:`step_reliability`), ``step_reliability``
    (n_steps, n_voxels) with attributes ``steps`` and ``split``.
    """
    with h5py.File(path, "a") as f:
        if "denoise" in f:
            del f["denoise"]
        g = f.create_group("denoise")
        for name in ("hrf_index", "hrf_peaks", "r2", "onoff_r2", "fraction", "noise_pool",
                     "good_voxels", "pc_scores"):
            g.create_dataset(name, data=np.asarray(getattr(fit, name)))
        g.attrs["n_pcs"] = int(fit.n_pcs)
        if reliability_steps is not None:
            d = g.create_dataset("step_reliability",
                                 data=np.stack([reliability_steps[s] for s in STEPS]).astype(np.float32))
            d.attrs["steps"] = list(STEPS)
            d.attrs["split"] = split or ""


def reliability_by_step(betas_paths: dict, voxels: str = "responsive"):
    """Reliability distributions of LSA and each added step, per subject, for the report.

    Parameters
    ----------
    betas_paths : dict of str to path
        Subject label -> betas HDF5 written by the ``denoised`` GLM with step
        reliabilities (:func:`write_denoise`).
    voxels : {"responsive", "all"}, default="responsive"
        Summarise the task-responsive voxels (high on-off R2, ``good_voxels``) or all.

    Returns
    -------
    table : DataFrame
        One row per subject and step: ``subject``, ``step``, ``n_voxels``,
        ``median``, ``q25``, ``q75``, ``gain`` (median over the LSA median), ``split``.
    figure : matplotlib.figure.Figure
        Box plots of the per-voxel reliability, one panel per subject.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if voxels not in ("responsive", "all"):
        raise ValueError(f"voxels must be 'responsive' or 'all', got {voxels!r}")
    rows, dists = [], {}
    for subject, path in betas_paths.items():
        with h5py.File(path, "r") as f:
            if "denoise/step_reliability" not in f:
                raise ValueError(f"{path}: no denoise/step_reliability (not a '{METHOD}' GLM "
                                 "written with step reliabilities)")
            d = f["denoise/step_reliability"]
            values, steps = d[()], [str(s) for s in d.attrs["steps"]]
            split = str(d.attrs.get("split", ""))
            keep = f["denoise/good_voxels"][()] if voxels == "responsive" else np.ones(values.shape[1], bool)
        dists[subject] = {}
        for step, v in zip(steps, values):
            v = v[keep]
            v = v[np.isfinite(v)]
            dists[subject][step] = v
            rows.append({"subject": subject, "step": step, "n_voxels": len(v),
                         "median": float(np.median(v)) if len(v) else np.nan,
                         "q25": float(np.percentile(v, 25)) if len(v) else np.nan,
                         "q75": float(np.percentile(v, 75)) if len(v) else np.nan, "split": split})
    table = pd.DataFrame(rows)
    if len(table):
        lsa = table[table["step"] == "lsa"].set_index("subject")["median"]
        table["gain"] = table["median"] / table["subject"].map(lsa)
    n = max(1, len(dists))
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n + 1, 3.2), sharey=True, squeeze=False)
    for ax, (subject, by_step) in zip(axes[0], dists.items()):
        ax.boxplot([by_step[s] for s in by_step], showfliers=False)
        ax.set_xticks(range(1, len(by_step) + 1), list(by_step), rotation=30)
        ax.axhline(0, color="0.7", lw=0.8)
        ax.set_title(f"sub-{subject}")
    axes[0][0].set_ylabel(f"split-half reliability ({voxels} voxels)")
    fig.tight_layout()
    return table, fig
