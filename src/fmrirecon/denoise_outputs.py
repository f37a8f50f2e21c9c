"""The outputs of the ``denoised`` GLM: its fit record, maps, step reliabilities, report.

:class:`DenoiseFit` is what :func:`fmrirecon.glm_denoise.fit_denoised` returns; the
functions here turn it into the files of ``docs/formats.md`` section 3 (statistic maps,
the ``denoise`` group of the betas file) and into the report's step-by-step table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h5py
import nibabel as nib
import numpy as np
import pandas as pd

from fmrirecon.betas import Betas

METHOD = "denoised"
#: The cumulative steps whose betas ``keep_steps`` returns, in order.
STEPS = ("lsa", "+hrf", "+denoise", "+ridge")


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
