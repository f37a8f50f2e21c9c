"""Data quality of one subject: what fMRIPrep's report and a GLM's diagnostics show.

The maps behind the decoders are computed anyway (brain mask, reliability, noise
ceiling, voxel selection); this module draws them and adds what a reader checks before
trusting a decoder: head motion per run, the design matrix of one run, how much of the
BOLD variance the single-trial model explains, and the counts of runs, trials, repeats
and voxels. Figures use nilearn's plotting (``plot_epi``, ``plot_stat_map``,
``plot_design_matrix``), as fMRIPrep's and NiReports' reports do.

:func:`subject_quality` writes one JSON (counts, summaries, warnings) and the figures
as PNG files, so that Snakemake's ``--report`` files them as images.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files: no display needed

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .betas import Betas, read_betas  # noqa: E402

log = logging.getLogger(__name__)

#: Figures of a BOLD study, in display order: key -> caption.
BOLD_FIGURES = {
    "brain": "Mean EPI of the first run with the brain mask (red) and the selected voxels (green).",
    "reliability": "Split-half reliability of each voxel over the mean EPI; green: the selected voxels.",
    "noiseceiling": "Noise ceiling (% of variance explainable, NSD definition) over the mean EPI.",
    "histograms": ("Reliability, noise ceiling and single-trial partial R2 (variance left by confounds and "
                   "drifts that the trials explain) of every voxel; selected voxels in green."),
    "motion": "Framewise displacement and translations of every run (fMRIPrep confounds).",
    "design": "The single-trial (LSA) design matrix of the first training run.",
}
#: Figures of imported betas (no BOLD, no voxel grid to draw).
BETAS_FIGURES = {"histograms": "Reliability and noise ceiling of every voxel; selected voxels in green "
                               "(imported betas: no BOLD, so no maps, motion or design)."}

#: Framewise displacement (mm) above which a volume counts as a motion outlier
#: (Power et al. 2012's 0.5 mm).
FD_THRESHOLD = 0.5


def _counts(betas: Betas, selected: np.ndarray) -> dict:
    trials = betas.trials
    out = {"voxels": int(betas.betas.shape[1]), "voxels_selected": int(selected.sum()), "splits": {}}
    for split, rows in trials.groupby("split", sort=False):
        repeats = rows["stim_file"].value_counts()
        out["splits"][split] = {
            # a run is its session, task and run label: labels repeat across sessions
            "runs": int(rows[[c for c in ("session", "task", "run") if c in rows]].drop_duplicates().shape[0]),
            "trials": int(len(rows)),
            "images": int(len(repeats)),
            "repeats_min": int(repeats.min()), "repeats_median": float(repeats.median()),
            "repeats_max": int(repeats.max()),
        }
    return out


def _describe(values: np.ndarray) -> dict:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return {"n": 0, "n_nan": int(len(values)), "median": None, "p90": None}
    return {"n": int(len(finite)), "n_nan": int(len(values) - len(finite)),
            "median": float(np.median(finite)), "p90": float(np.percentile(finite, 90))}


def _int(value):
    return None if value is None else int(value)


def _selected_columns(betas: Betas, voxels_path) -> np.ndarray:
    mask = np.asarray(nib.load(voxels_path).dataobj) > 0
    i, j, k = betas.voxel_ijk.T
    return mask[i, j, k]


def _histograms(panels: list[tuple[str, np.ndarray]], selected: np.ndarray) -> Figure:
    fig = Figure(figsize=(4.2 * len(panels), 3.2), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, values) in zip(axes, panels):
        finite = np.isfinite(values)
        if not finite.any():
            ax.text(0.5, 0.5, f"{label}: not computed (NaN)", ha="center", va="center",
                    transform=ax.transAxes, fontsize=11)
            ax.set_axis_off()
            continue
        bins = np.histogram_bin_edges(values[finite], bins=40)
        ax.hist(values[finite & ~selected], bins=bins, color="0.6", label="not selected")
        ax.hist(values[finite & selected], bins=bins, color="tab:green", alpha=0.8, label="selected")
        ax.set_xlabel(label, fontsize=11)
        ax.set_ylabel("voxels", fontsize=11)
        ax.tick_params(labelsize=10)
        ax.spines[["top", "right"]].set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:  # above the panels, never over the bars
        fig.legend(handles, labels, loc="outside upper center", ncols=2, fontsize=10, frameon=False)
    return fig


def _volume(betas: Betas, values: np.ndarray) -> nib.Nifti1Image:
    data = np.zeros(tuple(betas.shape), dtype=np.float32)
    i, j, k = betas.voxel_ijk.T
    data[i, j, k] = np.nan_to_num(values)
    return nib.Nifti1Image(data, np.asarray(betas.affine, dtype=np.float64))


def _save(fig, path) -> None:
    fig.savefig(path, dpi=100, bbox_inches="tight")


def _n_cuts(img) -> int:
    # five axial slices, or as many as a thin volume has
    return int(min(5, img.shape[2]))


def _map_figure(stat: nib.Nifti1Image, background: nib.Nifti1Image, selected: nib.Nifti1Image,
                title: str, path, vmax: float, cmap: str) -> None:
    from nilearn import plotting

    display = plotting.plot_stat_map(stat, bg_img=background, display_mode="z",
                                     cut_coords=_n_cuts(stat),
                                     cmap=cmap, vmax=vmax, threshold=1e-6, title=title,
                                     black_bg=False, draw_cross=False, annotate=False)
    display.add_contours(selected, levels=[0.5], colors="lime", linewidths=1.2)
    display.savefig(str(path), dpi=100)
    display.close()


def _motion_figure(runs: list[dict]) -> tuple[Figure, list[dict]]:
    # every run one after the other (a grey line between runs): two panels at any run count
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_fd, ax_tr = fig.subplots(2, 1, sharex=True)
    summary, offset, ticks = [], 0, []
    for k, run in enumerate(runs):
        name = f"{run['task']} run {run['run']}"
        conf = (pd.read_csv(run["confounds"], sep="\t", na_values="n/a")
                if run.get("confounds") and Path(run["confounds"]).is_file() else None)
        if conf is None or "framewise_displacement" not in conf:
            summary.append({"run": name, "fd_mean": None, "fd_max": None, "outliers": None})
            continue
        fd = conf["framewise_displacement"].to_numpy(dtype=float)
        x = offset + np.arange(len(fd))
        ax_fd.plot(x, fd, color="tab:blue", linewidth=0.8)
        for col, colour in (("trans_x", "tab:orange"), ("trans_y", "tab:green"), ("trans_z", "tab:purple")):
            if col in conf:
                ax_tr.plot(x, conf[col], color=colour, linewidth=0.8, label=col if k == 0 else None)
        ticks.append((offset + len(fd) / 2, name))
        offset += len(fd)
        for ax in (ax_fd, ax_tr):
            ax.axvline(offset, color="0.75", linewidth=0.8)
        summary.append({"run": name, "fd_mean": float(np.nanmean(fd)), "fd_max": float(np.nanmax(fd)),
                        "outliers": int(np.sum(fd > FD_THRESHOLD))})
    ax_fd.axhline(FD_THRESHOLD, color="tab:red", linestyle="--", linewidth=1.2,
                  label=f"{FD_THRESHOLD} mm")
    ax_fd.set_ylabel("FD (mm)", fontsize=11)
    ax_tr.set_ylabel("translation (mm)", fontsize=11)
    ax_fd.legend(fontsize=10, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if ax_tr.get_legend_handles_labels()[0]:
        ax_tr.legend(fontsize=10, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if len(ticks) <= 24:  # run names under their runs, while they fit
        ax_tr.set_xticks([t for t, _ in ticks], [n for _, n in ticks], rotation=45, ha="right", fontsize=9)
    else:
        ax_tr.set_xlabel("volume (runs one after the other)", fontsize=11)
    for ax in (ax_fd, ax_tr):
        ax.tick_params(labelsize=10)
        ax.spines[["top", "right"]].set_visible(False)
    ax_fd.set_title("head motion of every run (fMRIPrep confounds; grey lines separate runs)", fontsize=11)
    return fig, summary


def single_trial_fit(run: dict, glm: dict, mask_runs: list[dict]) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The LSA design of one run and, per voxel, the variance it explains.

    Parameters
    ----------
    run : dict
        One run as :func:`fmrirecon.glm.single_trial_betas` takes it.
    glm : dict
        Config section ``glm`` (``hrf_model``, ``high_pass``, ``confounds``).
    mask_runs : list of dict
        The runs whose masks' intersection is the subject mask (as in the GLM).

    Returns
    -------
    design : DataFrame
        One regressor per trial, then the confounds and the cosine drifts.
    r2_full : ndarray, shape (n_voxels,)
        R2 of the whole model (trials, confounds, drifts) per in-mask voxel.
    r2_trials : ndarray, shape (n_voxels,)
        Partial R2 of the trial regressors: the fraction of the variance left by the
        nuisance regressors (confounds, drifts) that the trials explain,
        ``(RSS_nuisance - RSS_full) / RSS_nuisance``. With k trials in n volumes a
        voxel of pure noise scores about k / (n - nuisance regressors).
    """
    from nilearn.glm.first_level import make_first_level_design_matrix

    from .glm import load_run, subject_mask

    mask, mask_img, mask_name = subject_mask(mask_runs)
    events, Y, conf = load_run(run, mask, mask_img, mask_name, glm["confounds"])
    frame_times = np.arange(Y.shape[0]) * float(run["tr"])
    names = [f"trial_{i:03d}" for i in range(len(events))]
    frame = pd.DataFrame({"onset": events["onset"], "duration": events["duration"], "trial_type": names})
    add = {} if conf is None else {"add_regs": conf.to_numpy(), "add_reg_names": list(conf.columns)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # partial HRFs at the run's end
        design = make_first_level_design_matrix(frame_times, frame, hrf_model=glm.get("hrf_model", "glover"),
                                                drift_model="cosine", high_pass=glm["high_pass"], **add)
    X = design.to_numpy()
    nuisance = X[:, [design.columns.get_loc(c) for c in design.columns if c not in names]]

    def rss(A):
        coef, *_ = np.linalg.lstsq(A, Y, rcond=None)
        return ((Y - A @ coef) ** 2).sum(axis=0)

    tss = ((Y - Y.mean(axis=0)) ** 2).sum(axis=0)
    tss = np.where(tss > 0, tss, np.nan)
    full, reduced = rss(X), rss(nuisance)
    reduced = np.where(reduced > 0, reduced, np.nan)
    return design, 1.0 - full / tss, (reduced - full) / reduced


def subject_quality(betas_path, trials_path, voxels_path, out_json, out_figures: dict,
                    runs: list[dict] | None = None, glm: dict | None = None,
                    train_tasks: list[str] | None = None) -> dict:
    """Counts, summaries, warnings and figures of one subject's data.

    Parameters
    ----------
    betas_path, trials_path : path
        The subject's single-trial betas (``_betas.h5``, ``_trials.tsv``).
    voxels_path : path
        The selected voxels (``_desc-selected_mask.nii.gz``).
    out_json : path
        Where to write the summary (see Returns).
    out_figures : dict
        Figure key (:data:`BOLD_FIGURES` with ``runs``, else :data:`BETAS_FIGURES`)
        -> PNG path.
    runs : list of dict, optional
        The subject's runs (``bold``, ``mask``, ``confounds``, ``events``, ``task``,
        ``run``, ``tr``), as the GLM took them; None for imported betas.
    glm : dict, optional
        Config section ``glm`` (with ``runs``).
    train_tasks : list of str, optional
        Tasks of the training runs: the design and R2 are those of the first one.

    Returns
    -------
    dict
        ``counts`` (voxels, voxels kept, per split: runs, trials, distinct images,
        repeats), ``reliability``, ``noise_ceiling`` and (BOLD) ``r2_trials``
        summaries (median, 90th percentile, NaN count; ``selected`` for the kept
        voxels), ``motion`` per run, ``warnings`` (one sentence each), ``figures``
        (key -> caption). Also written to ``out_json``.
    """
    betas = read_betas(betas_path, trials_path)
    expected = BOLD_FIGURES if runs else BETAS_FIGURES
    if set(out_figures) != set(expected):
        raise ValueError(f"out_figures: expected keys {sorted(expected)}, got {sorted(out_figures)}")
    selected = _selected_columns(betas, voxels_path)
    reliability = (betas.reliability if betas.reliability is not None
                   else np.full(betas.betas.shape[1], np.nan))
    ceiling = (betas.noise_ceiling if betas.noise_ceiling is not None
               else np.full(betas.betas.shape[1], np.nan))
    # 1. counts, reliability and noise ceiling, and the warnings they call for
    summary = _betas_summary(betas, betas_path, selected, reliability, ceiling, expected)
    panels = [("split-half reliability", reliability), ("noise ceiling (%)", ceiling)]
    if runs:
        # 2. what the trials explain in the first training run; 3. the BOLD figures
        first = ([r for r in runs if r["task"] in (train_tasks or [])] or runs)[0]
        design, summary["r2_trials"], r2_cols = _r2_trials(betas, first, glm, runs, selected)
        panels.append((f"single-trial partial R2 ({first['task']} run {first['run']})", r2_cols))
        _bold_figures(betas, runs, first, design, voxels_path, reliability, ceiling,
                      out_figures, summary)
    _save(_histograms(panels, selected), out_figures["histograms"])
    # 4. the log and the file
    for w in summary["warnings"]:
        log.warning("%s", w)
    counts = summary["counts"]
    log.info("%d voxels, %d kept; %s", counts["voxels"], counts["voxels_selected"],
             "; ".join(f"{s}: {c['runs']} runs, {c['trials']} trials, {c['images']} images, "
                       f"repeats {c['repeats_min']}-{c['repeats_max']}" for s, c in counts["splits"].items()))
    Path(out_json).write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return summary


def _betas_summary(betas, betas_path, selected, reliability, ceiling, expected) -> dict:
    """The summary of :func:`subject_quality` from the betas alone, with its warnings."""
    summary = {"counts": _counts(betas, selected),
               "reliability": {"all": _describe(reliability), "selected": _describe(reliability[selected]),
                               "split": betas.attrs.get("reliability_split")},
               "noise_ceiling": {"all": _describe(ceiling), "selected": _describe(ceiling[selected]),
                                 "n_average": _int(betas.attrs.get("noise_ceiling_n_average"))},
               "motion": [], "warnings": [], "figures": {k: expected[k] for k in expected}}
    warn = summary["warnings"]
    n_nan = summary["reliability"]["all"]["n_nan"]
    if n_nan:
        warn.append(f"{n_nan} of {len(reliability)} voxels have NaN reliability "
                    f"({betas_path}: too few repeated stimuli, or constant betas)")
    if summary["noise_ceiling"]["all"]["n"] == 0:
        warn.append(f"{betas_path}: no noise ceiling (no test trials with repeated images)")
    med = summary["reliability"]["selected"]["median"]
    if med is not None and med <= 0.05:
        warn.append(f"the selected voxels' median reliability is {med:.3f}: "
                    "the decoders read mostly noise")
    return summary


def _r2_trials(betas, first: dict, glm: dict | None, runs: list[dict], selected):
    """The design of run ``first``, the ``r2_trials`` summary and the partial R2 of each
    beta column."""
    from .glm import subject_mask

    design, r2_full, r2_trials = single_trial_fit(first, glm, runs)
    n_trials = sum(c.startswith("trial_") for c in design.columns)
    # R2 per beta column: find each beta voxel among the subject mask's voxels
    mask, _, _ = subject_mask(runs)
    in_mask = np.flatnonzero(mask.ravel())
    flat = np.ravel_multi_index(tuple(betas.voxel_ijk.T), mask.shape)
    order = np.clip(np.searchsorted(in_mask, flat), 0, len(in_mask) - 1)
    found = in_mask[order] == flat
    r2_cols = np.where(found, r2_trials[order], np.nan)
    entry = {"all": _describe(r2_cols), "selected": _describe(r2_cols[selected]),
             "run": f"{first['task']} run {first['run']}",
             "r2_full_median": float(np.nanmedian(r2_full)),
             # what k trial regressors explain of pure noise, in n volumes
             # with p nuisance regressors: k / (n - p)
             "noise_level": float(n_trials / max(len(design) - (design.shape[1] - n_trials), 1))}
    return design, entry, r2_cols


def _bold_figures(betas, runs: list[dict], first: dict, design, voxels_path, reliability,
                  ceiling, out_figures: dict, summary: dict) -> None:
    """The brain, reliability, noise-ceiling, motion and design figures; ``motion`` and
    its warning into ``summary``."""
    from nilearn import plotting
    from nilearn.image import mean_img

    mean_epi = mean_img(runs[0]["bold"], copy_header=True)
    mask_img = nib.load(runs[0]["mask"])
    selected_img = nib.load(voxels_path)
    display = plotting.plot_epi(mean_epi, display_mode="z", cut_coords=_n_cuts(mean_epi), cmap="gray",
                                title="mean EPI", draw_cross=False,
                                annotate=False, black_bg=True, colorbar=False)
    display.add_contours(mask_img, levels=[0.5], colors="red", linewidths=1.0)
    display.add_contours(selected_img, levels=[0.5], colors="lime", linewidths=1.0)
    display.savefig(str(out_figures["brain"]), dpi=100)
    display.close()
    rel_max = float(np.nanpercentile(np.abs(reliability), 99)) if np.isfinite(reliability).any() else 1.0
    _map_figure(_volume(betas, reliability), mean_epi, selected_img, "split-half reliability",
                out_figures["reliability"], max(rel_max, 1e-3), "cold_hot")
    ceil_max = float(np.nanpercentile(ceiling, 99)) if np.isfinite(ceiling).any() else 1.0
    _map_figure(_volume(betas, ceiling), mean_epi, selected_img, "noise ceiling (%)",
                out_figures["noiseceiling"], max(ceil_max, 1e-3), "inferno")
    fig, summary["motion"] = _motion_figure(runs)
    _save(fig, out_figures["motion"])
    moved = [m for m in summary["motion"] if m["fd_max"] is not None and m["outliers"]]
    if moved:
        worst = max(moved, key=lambda m: m["fd_max"])
        summary["warnings"].append(f"{len(moved)} of {len(runs)} runs have volumes with FD > {FD_THRESHOLD} mm "
                    f"({sum(m['outliers'] for m in moved)} volumes; worst {worst['run']}, "
                    f"{worst['fd_max']:.2f} mm): no volume is censored, motion regressors only")
    design_fig = plotting.plot_design_matrix(design)
    design_fig.figure.set_size_inches(11, 4.5)
    design_fig.set_title(f"LSA design, {first['task']} run {first['run']} "
                         f"({len(design)} volumes x {design.shape[1]} regressors)", fontsize=11)
    design_fig.tick_params(labelsize=6)
    design_fig.figure.savefig(str(out_figures["design"]), dpi=100, bbox_inches="tight")
    matplotlib.pyplot.close(design_fig.figure)
