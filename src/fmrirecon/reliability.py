"""How reproducible each voxel's single-trial responses are across stimulus repeats."""

from __future__ import annotations

import dataclasses
import logging

import nibabel as nib
import numpy as np
import pandas as pd

from fmrirecon.betas import Betas

__all__ = ["split_half_reliability", "noise_ceiling", "add_reliability", "reliability_map"]

logger = logging.getLogger(__name__)

#: Fewer repeated stimuli than this give no reliability (NaN).
MIN_REPEATED_STIMULI = 3


def _check(betas, stim_files):
    betas = np.asarray(betas, dtype=np.float64)
    stim_files = np.asarray(stim_files).astype(str)
    if betas.ndim != 2 or betas.shape[0] != len(stim_files):
        raise ValueError(f"betas of shape {betas.shape} do not match {len(stim_files)} stim_files")
    return betas, stim_files


def _repeat_groups(stim_files: np.ndarray) -> list[np.ndarray]:
    """Row indices of each stimulus shown at least twice, in order of appearance."""
    codes, uniques = pd.factorize(stim_files)
    # a stable sort keeps each stimulus' rows in presentation order
    order = np.argsort(codes, kind="stable")
    groups = np.split(order, np.cumsum(np.bincount(codes, minlength=len(uniques)))[:-1])
    return [g for g in groups if len(g) >= 2]


def _rowwise_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of columns of ``a`` and ``b`` (NaN for constant columns)."""
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    denom = np.sqrt((a**2).sum(axis=0) * (b**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * b).sum(axis=0) / denom, np.nan)


def split_half_reliability(betas: np.ndarray, stim_files) -> np.ndarray:
    """Spearman-Brown corrected split-half reliability of each voxel.

    For every stimulus shown at least twice, its odd presentations (1st, 3rd, ...)
    and even ones (2nd, 4th, ...) are averaged; the two averages are correlated
    across stimuli per voxel and the correlation ``r`` is stepped up to the full
    data by Spearman-Brown, ``2 r / (1 + r)``.

    Parameters
    ----------
    betas : ndarray, shape (n_trials, n_voxels)
        Rows in presentation order.
    stim_files : array-like of str, shape (n_trials,)
        Stimulus of each row.

    Returns
    -------
    ndarray, shape (n_voxels,)
        NaN everywhere if fewer than 3 stimuli are repeated, and for voxels whose
        half-averages are constant.
    """
    betas, stim_files = _check(betas, stim_files)
    groups = _repeat_groups(stim_files)
    if len(groups) < MIN_REPEATED_STIMULI:
        return np.full(betas.shape[1], np.nan)
    odd = np.stack([betas[g[0::2]].mean(axis=0) for g in groups])
    even = np.stack([betas[g[1::2]].mean(axis=0) for g in groups])
    r = _rowwise_corr(odd, even)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 2 * r / (1 + r)


def noise_ceiling(betas: np.ndarray, stim_files, n_average: int) -> np.ndarray:
    """NSD noise ceiling of each voxel (Allen et al. 2022, Nat. Neurosci. 25:116).

    Betas are z-scored per voxel over all given rows (NSD z-scores within session;
    here over the rows passed). The noise sd is the square root of the mean, over
    stimuli shown at least twice, of the variance across their repeats (ddof=1);
    the signal sd is ``sqrt(max(0, 1 - noise_sd**2))``; ``ncsnr = signal_sd /
    noise_sd``; the noise ceiling for responses averaged over ``n_average`` repeats
    is ``100 * ncsnr**2 / (ncsnr**2 + 1 / n_average)``.

    Parameters
    ----------
    betas : ndarray, shape (n_trials, n_voxels)
    stim_files : array-like of str, shape (n_trials,)
    n_average : int
        Number of repeats averaged in the response the ceiling applies to.

    Returns
    -------
    ndarray, shape (n_voxels,)
        Percent of variance explainable; NaN without repeated stimuli or for
        constant voxels.
    """
    betas, stim_files = _check(betas, stim_files)
    if int(n_average) < 1:
        raise ValueError(f"n_average must be >= 1, got {n_average}")
    groups = _repeat_groups(stim_files)
    if not groups:
        return np.full(betas.shape[1], np.nan)
    sd = betas.std(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (betas - betas.mean(axis=0)) / np.where(sd > 0, sd, np.nan)
        noise_var = np.mean([z[g].var(axis=0, ddof=1) for g in groups], axis=0)
        signal_sd = np.sqrt(np.maximum(0.0, 1.0 - noise_var))
        ncsnr = signal_sd / np.sqrt(noise_var)
        return 100.0 * ncsnr**2 / (ncsnr**2 + 1.0 / int(n_average))


def add_reliability(betas: Betas, split: str = "train") -> Betas:
    """Return ``betas`` with ``reliability`` and ``noise_ceiling`` filled in.

    Parameters
    ----------
    betas : Betas
    split : {"train", "test", "all"}, default="train"
        Trials the split-half reliability is computed from. If that split has fewer
        than 3 repeated stimuli, the test split is used instead (with a warning).
        The noise ceiling always comes from the test split, for its typical
        (median) number of repeats.

    Returns
    -------
    Betas
        A copy with ``reliability``, ``noise_ceiling`` and ``attrs`` entries
        ``reliability_split`` (the split actually used) and ``noise_ceiling_n_average``.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")

    def rows(name):
        if name == "all":
            return np.ones(len(betas.trials), dtype=bool)
        return (betas.trials["split"] == name).to_numpy()

    def n_repeated(keep):
        return len(_repeat_groups(betas.trials["stim_file"].to_numpy()[keep].astype(str)))

    used = split
    if n_repeated(rows(split)) < MIN_REPEATED_STIMULI and split != "test":
        logger.warning(
            "split %r has fewer than %d repeated stimuli; reliability from the test split",
            split, MIN_REPEATED_STIMULI,
        )
        used = "test"
    keep = rows(used)
    reliability = split_half_reliability(betas.betas[keep], betas.trials["stim_file"][keep])
    if np.isnan(reliability).all():
        logger.warning("reliability could not be computed (too few repeated stimuli); all NaN")

    test = rows("test")
    test_stims = betas.trials["stim_file"].to_numpy()[test].astype(str)
    counts = pd.Series(test_stims).value_counts()
    n_average = int(np.median(counts)) if len(counts) else 1
    if (counts >= 2).any():
        ceiling = noise_ceiling(betas.betas[test], test_stims, n_average)
    else:
        logger.warning("the test split has no repeated stimuli; noise ceiling is NaN")
        ceiling = np.full(betas.betas.shape[1], np.nan)

    attrs = dict(betas.attrs, reliability_split=used, noise_ceiling_n_average=n_average)
    return dataclasses.replace(
        betas,
        reliability=reliability.astype(np.float32),
        noise_ceiling=ceiling.astype(np.float32),
        attrs=attrs,
    )


def reliability_map(betas: Betas) -> nib.Nifti1Image:
    """The reliability as a 3-D image on the BOLD grid (NaN outside the voxels)."""
    if betas.reliability is None:
        raise ValueError("betas have no reliability; run add_reliability first")
    data = np.full(tuple(betas.shape), np.nan, dtype=np.float32)
    i, j, k = np.asarray(betas.voxel_ijk).T
    data[i, j, k] = betas.reliability
    return nib.Nifti1Image(data, np.asarray(betas.affine, dtype=np.float64))
