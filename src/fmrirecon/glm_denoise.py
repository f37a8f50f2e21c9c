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

import numpy as np
import pandas as pd
from nilearn.glm.first_level import make_first_level_design_matrix
from tqdm import tqdm

from fmrirecon.betas import Betas
from fmrirecon.denoise_algebra import _chunks, _CrossValidation, _match_scale, _Run
# the fit's record and its outputs (re-exported: this module's public interface)
from fmrirecon.denoise_outputs import (METHOD, STEPS, DenoiseFit, denoise_maps,
                                       reliability_by_step, step_reliability, write_denoise)
from fmrirecon.fracridge import DEFAULT_FRACTIONS, fraction_alphas, shrink
from fmrirecon.hrf_library import canonical_hrf, hrf_library

__all__ = ["METHOD", "STEPS", "DenoiseFit", "fit_denoised", "denoised_betas", "denoise_maps",
           "write_denoise", "step_reliability", "reliability_by_step"]

logger = logging.getLogger(__name__)

#: Fewer cross-validated trials than this: no cross-validation (0 PCs, OLS).
MIN_XVAL_TRIALS = 6
#: At most this many responsive voxels score the number of noise components.
MAX_GOOD_VOXELS = 20000


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

    onoff = _onoff_fits(runs, n_vox, len(hrfs), chunk_size, bar)            # 1.
    onoff_r2 = onoff[canon]
    pool, good = _noise_pool(onoff_r2, noise_pool)
    hrf_index = _hrf_choice(runs, onoff, canon, hrf_fit, chunk_size, bar)   # 2.
    n_pcs, pc_scores = _noise_components(runs, pool, good, hrf_index, xval,  # 3.
                                         int(max_pcs) if can_xval else 0, pc_tolerance,
                                         len(trial_runs), bar)
    out, steps, fraction, r2 = _final_fits(                                  # 4.
        runs, n_vox, len(trial_runs), canon, hrf_index, n_pcs, xval,
        fractions if can_xval else fractions[:1], ridge_xval, keep_steps, chunk_size, bar)
    return DenoiseFit(
        betas=out, hrf_index=hrf_index.astype(np.int16), hrf_peaks=peaks, r2=r2,
        onoff_r2=onoff_r2.astype(np.float32), n_pcs=n_pcs, pc_scores=pc_scores,
        fraction=fraction, noise_pool=pool, good_voxels=good, step_betas=steps,
    )


def _onoff_fits(runs, n_vox: int, n_hrfs: int, chunk_size: int, bar) -> np.ndarray:
    """1. Percent variance (nuisance-free) one on-off regressor (all trials) explains
    under every HRF, (n_hrfs, n_voxels)."""
    ss_total = np.zeros(n_vox)
    xy = np.zeros((n_hrfs, n_vox))
    xx = np.zeros(n_hrfs)
    for run in tqdm(runs, desc=f"{METHOD}: on-off fits", unit="run", **bar):
        on = run.X.sum(axis=2)                        # (n_hrf + 1, T), nuisance-free
        for cols in _chunks(n_vox, chunk_size):
            Y = run.Y[:, cols].astype(np.float64)
            ss_total[cols] += (Y**2).sum(axis=0) - ((run.Qn.T @ Y) ** 2).sum(axis=0)
            xy[:, cols] += on @ Y
        xx += (on**2).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_total > 0, 100 * (xy**2 / xx[:, None]) / ss_total, 0.0)


def _noise_pool(onoff_r2: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """The noise pool, below the threshold between the non-responsive and responsive
    groups of on-off R2 (GLMsingle's findtailthreshold), and the responsive voxels that
    score the number of noise components (at least 50, at most MAX_GOOD_VOXELS)."""
    n_vox = len(onoff_r2)
    if mode == "mixture":
        threshold, responsive = noise_threshold(onoff_r2)
        pool, good = onoff_r2 < threshold, onoff_r2 > responsive
    else:
        centre, spread = _robust_noise_level(onoff_r2)
        pool, good = onoff_r2 < centre + spread, onoff_r2 > centre + 4 * spread
    min_good = min(n_vox, 50)
    if good.sum() < min_good or good.sum() > MAX_GOOD_VOXELS:
        # too few responsive voxels to score (or more than needed): take the best ones
        n_take = int(np.clip(good.sum(), min_good, MAX_GOOD_VOXELS))
        good = np.zeros(n_vox, dtype=bool)
        good[np.argsort(-onoff_r2, kind="stable")[:n_take]] = True
    return pool & ~good, good


def _hrf_choice(runs, onoff: np.ndarray, canon: int, hrf_fit: str, chunk_size: int,
                bar) -> np.ndarray:
    """2. Each voxel's HRF: the on-off model's best, or the single-trial design's."""
    n_vox = onoff.shape[1]
    if hrf_fit == "onoff":
        return np.argmax(onoff[:canon], axis=0)
    hrf_index = np.empty(n_vox, dtype=int)
    stacked = [np.vstack([run.basis(h, 0)[0].T for h in range(canon)]) for run in runs]
    sizes = [[run.basis(h, 0)[0].shape[1] for h in range(canon)] for run in runs]
    for cols in tqdm(_chunks(n_vox, chunk_size), desc=f"{METHOD}: HRF choice", unit="chunk", **bar):
        explained = np.zeros((canon, len(cols)))
        for run, B, n_h in zip(runs, stacked, sizes):
            proj = (B @ run.Y[:, cols].astype(np.float64)) ** 2
            explained += np.add.reduceat(proj, np.r_[0, np.cumsum(n_h)[:-1]], axis=0)
        hrf_index[cols] = np.argmax(explained, axis=0)
    return hrf_index


def _noise_components(runs, noise_pool, good, hrf_index, xval, max_pcs: int,
                      pc_tolerance: float, n_trials: int, bar) -> tuple[int, np.ndarray]:
    """3. The pool's principal components per run (``run.P``), and their number: the
    fewest reaching ``1 - pc_tolerance`` of the best gain in median cross-validated R2
    of the scoring voxels. Returns (n_pcs, score per number)."""
    n_pool = int(noise_pool.sum())
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
    can_xval = xval.n >= MIN_XVAL_TRIALS
    for n in tqdm(range(max_pcs + 1), desc=f"{METHOD}: noise components", unit="pcs", **bar):
        betas = np.empty((n_trials, len(good_idx)))
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
    return n_pcs, pc_scores


def _final_fits(runs, n_vox, n_trials, canon, hrf_index, n_pcs, xval, fractions, ridge_xval,
                keep_steps, chunk_size, bar):
    """4. Per chunk of voxels, OLS with the chosen HRF and components, then fractional
    ridge with the fraction chosen per voxel. Returns (betas, step betas, fraction, R2)."""
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
            fit = _ridge_fit(runs, h, vox, n_pcs, xval, fractions, ridge_xval)
            if keep_steps:
                steps["+denoise"][:, vox] = fit["ols"]
            fraction[vox], r2[vox] = fit["fraction"], fit["r2"]
            out[:, vox] = _match_scale(fit["ridge"], fit["ols"])
            if keep_steps:
                steps["+ridge"][:, vox] = out[:, vox]
    return out, steps, fraction, r2


def _ridge_fit(runs, h: int, vox, n_pcs: int, xval, fractions, ridge_xval: str) -> dict:
    """OLS and fractional-ridge betas of voxels ``vox`` (one HRF ``h``) over every run,
    the fraction each keeps, and the R2 of its ridge fit."""
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
    fraction = np.ones(len(vox))
    alpha = np.zeros(len(vox))
    if len(fractions) > 1:
        # the achieved fractions are within ~1e-4 of the targets without polishing
        alphas = fraction_alphas(s_all, yt_all, fractions, n_polish=0)
        # each held-out trial's beta (at this fraction, or unregularised as
        # GLMsingle) is predicted by the mean ridge beta of its stimulus elsewhere
        target = ols if ridge_xval == "ols" else None
        scores = np.stack([xval.r2(betas_for(a)[0], target) for a in alphas])
        best = np.argmax(np.nan_to_num(scores, nan=-np.inf), axis=0)  # ties: larger fraction
        alpha = alphas[best, np.arange(len(vox))]
        fraction = fractions[best]
    ridge, coef = betas_for(alpha)
    rss = ss_resid - 2 * (s_all[:, None] * coef * yt_all).sum(axis=0) \
        + ((s_all[:, None] * coef) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_resid > 0, 100 * (1 - rss / ss_resid), 0.0)
    return {"ols": ols, "ridge": ridge, "fraction": fraction, "r2": r2}


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


def _canonical_design(events: pd.DataFrame, frame_times: np.ndarray, nuisance: np.ndarray) -> np.ndarray:
    """One run's single-trial design with the canonical (Glover) HRF: trials in events
    order, then the nuisance columns."""
    names = [f"trial{i:05d}" for i in range(len(events))]
    frame = pd.DataFrame({"onset": events["onset"], "duration": events["duration"], "trial_type": names})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # partial HRFs at the end of a run
        X = make_first_level_design_matrix(frame_times, frame, hrf_model="glover", drift_model=None)
    return np.hstack([X[names].to_numpy(), nuisance])


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
    from fmrirecon.glm import (CONFOUND_STRATEGIES, check_design_rank, load_run, select_runs, subject_mask,
                               trial_table)

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
        nuisance = _nuisance(frame_times, high_pass, conf, drift_model)
        # refused as the LSA/LSS path refuses it: no HRF of the library separates trials
        # that the canonical one cannot (a shared onset, a trial the nuisance reproduces)
        check_design_rank(_canonical_design(events, frame_times, nuisance), range(len(events)), events,
                          run["events"])
        designs.append({"onsets": events["onset"].to_numpy(), "durations": events["duration"].to_numpy(),
                        "frame_times": frame_times, "nuisance": nuisance})
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
