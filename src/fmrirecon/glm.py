"""Single-trial response amplitudes (betas) with nilearn's first-level GLM.

Each trial gets its own regressor, either all together in one design per run
(least squares - all, LSA) or one design per trial with the trial against all others
(least squares - separate, LSS; Mumford et al. 2012, NeuroImage 59:2636). Betas are
in percent signal change of each voxel's run mean, so runs are comparable.

Designs come from nilearn's ``make_first_level_design_matrix``, so regressors are
nilearn's. With the OLS noise model the fits are ours, for speed (see
``benchmarks/solvers.py``): LSA is one pseudo-inverse per run applied to all voxels
(:func:`lsa_betas`), LSS a closed form over all trials and voxels from the same design
(:func:`lss_betas`) instead of one GLM per trial; both equal nilearn's fits to 1e-9
(tests/test_glm.py). AR(p) noise models keep nilearn's ``run_glm`` (one model per
trial for LSS), as their AR coefficients are estimated per model. One run of BOLD is
in memory at a time.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn.glm.first_level import make_first_level_design_matrix, run_glm
from nilearn.interfaces.fmriprep import load_confounds
from tqdm import tqdm

from fmrirecon.betas import SOURCE_COLUMNS, TRIAL_COLUMNS, Betas

__all__ = ["single_trial_betas", "load_trial_events", "select_runs", "subject_mask", "load_run",
           "trial_table", "lsa_betas", "lss_betas", "check_design_rank", "CONFOUND_STRATEGIES"]

logger = logging.getLogger(__name__)

#: ``confounds`` choices -> ``load_confounds`` motion option (None: no confounds).
CONFOUND_STRATEGIES = {"motion6": "basic", "motion24": "full", "none": None}
METHODS = ("lsa", "lss")
DENOISED = "denoised"  # implemented in fmrirecon.glm_denoise
_TRIAL = "trial{:05d}"  # zero-padded so nilearn's sorted column order is trial order
#: Largest condition number of a design we solve: beyond it, betas are noise amplified
#: by as much (two trials at one onset gave betas of 2e14 instead of ~1).
MAX_CONDITION = 1e8


def load_trial_events(events_path: str | Path, n_scans: int, tr: float) -> pd.DataFrame:
    """Read and check one run's BIDS events file.

    Parameters
    ----------
    events_path : str or Path
        BIDS ``_events.tsv`` with at least ``onset``, ``duration`` and ``stim_file``.
    n_scans : int
        Number of volumes in the run.
    tr : float
        Repetition time (s).

    Returns
    -------
    DataFrame
        Columns ``onset``, ``duration`` (float), ``stim_file`` (str), sorted by onset.

    Raises
    ------
    ValueError
        Naming ``events_path``: missing file or columns, non-numeric or missing values,
        negative durations, or onsets outside the run.
    """
    events_path = Path(events_path)
    if not events_path.is_file():
        raise ValueError(f"{events_path}: events file not found")
    events = pd.read_csv(events_path, sep="\t", na_values=["n/a"], dtype={"stim_file": str})
    missing = [c for c in ("onset", "duration", "stim_file") if c not in events.columns]
    if missing:
        raise ValueError(f"{events_path}: missing column(s) {missing}")
    if events.empty:
        raise ValueError(f"{events_path}: no events")
    for column in ("onset", "duration"):
        values = pd.to_numeric(events[column], errors="coerce")
        if values.isna().any():
            rows = np.flatnonzero(values.isna().to_numpy())[:5].tolist()
            raise ValueError(f"{events_path}: missing or non-numeric {column} in row(s) {rows}")
        events[column] = values.astype(float)
    if events["stim_file"].isna().any():
        rows = np.flatnonzero(events["stim_file"].isna().to_numpy())[:5].tolist()
        raise ValueError(f"{events_path}: missing stim_file in row(s) {rows}")
    if (events["duration"] < 0).any():
        raise ValueError(f"{events_path}: negative duration")
    run_length = n_scans * tr
    outside = (events["onset"] < 0) | (events["onset"] >= run_length)
    if outside.any():
        bad = events.loc[outside, "onset"].tolist()[:5]
        raise ValueError(
            f"{events_path}: onset(s) {bad} outside the run (0 to {run_length:g} s, "
            f"{n_scans} volumes x TR {tr:g} s)"
        )
    events = events.sort_values("onset", kind="stable").reset_index(drop=True)
    return events[["onset", "duration", "stim_file"]].astype({"stim_file": str})


def _load_mask(path) -> nib.Nifti1Image:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: mask file not found")
    img = nib.load(path)
    if len(img.shape) == 4 and img.shape[3] == 1:
        img = nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine)
    if len(img.shape) != 3:
        raise ValueError(f"{path}: mask must be 3-D, got shape {img.shape}")
    return img


def _check_grid(img, reference, path, reference_name) -> None:
    if img.shape[:3] != reference.shape[:3] or not np.allclose(img.affine, reference.affine, atol=1e-4):
        raise ValueError(
            f"{path}: voxel grid (shape {img.shape[:3]}) differs from {reference_name} "
            f"(shape {reference.shape[:3]}); all runs and masks must share one grid"
        )


def _subject_mask(runs, mask_img):
    """Boolean mask (intersection of the runs' masks, or ``mask_img``) and its image."""
    if mask_img is not None:
        name = mask_img if isinstance(mask_img, (str, Path)) else "mask_img"
        img = _load_mask(mask_img) if isinstance(mask_img, (str, Path)) else mask_img
        mask = np.asarray(img.dataobj) > 0
    else:
        name = runs[0]["mask"]
        img = _load_mask(name)
        mask = np.ones(img.shape[:3], dtype=bool)
        for run in runs:
            run_mask = _load_mask(run["mask"])
            _check_grid(run_mask, img, run["mask"], name)
            mask &= np.asarray(run_mask.dataobj) > 0
    if not mask.any():
        raise ValueError(f"{name}: the subject mask is empty")
    return mask, img, name


def _confounds(run: dict, strategy: str) -> pd.DataFrame | None:
    motion = CONFOUND_STRATEGIES[strategy]
    if motion is None:
        return None
    if run.get("confounds") is None:
        logger.warning("%s: no confounds file; fitting without confounds", run["bold"])
        return None
    if not Path(run["confounds"]).is_file():
        raise ValueError(f"{run['confounds']}: confounds file not found")
    try:
        # load_confounds finds the TSV from the fMRIPrep name of the BOLD file
        confounds, sample_mask = load_confounds(
            str(run["bold"]), strategy=("motion",), motion=motion, demean=True
        )
    except Exception as err:  # nilearn raises ValueError or its own MissingConfound
        raise ValueError(
            f"{run['confounds']}: could not load {strategy} confounds for {run['bold']} "
            f"with nilearn.interfaces.fmriprep.load_confounds: {err}"
        ) from err
    if sample_mask is not None:
        raise ValueError(f"{run['confounds']}: unexpected volume censoring with {strategy}")
    return confounds


def _fit_theta(Y: np.ndarray, X: np.ndarray, noise_model: str) -> np.ndarray:
    """Parameter estimates, shape (n_regressors, n_voxels), for any noise model."""
    labels, results = run_glm(Y, X, noise_model=noise_model)
    if len(results) == 1:
        return next(iter(results.values())).theta
    # AR models fit voxels grouped by their AR coefficient: put each group back in place
    theta = np.empty((X.shape[1], Y.shape[1]))
    for label, result in results.items():
        theta[:, labels == label] = result.theta
    return theta


def _percent_signal_change(Y: np.ndarray, bold_path) -> np.ndarray:
    # Same scaling as nilearn's FirstLevelModel(signal_scaling=0): 100 * (Y / mean - 1)
    mean = Y.mean(axis=0)
    bad = ~(mean > 0)
    if bad.any():
        logger.warning("%s: %d in-mask voxel(s) with mean <= 0 get betas 0", bold_path, bad.sum())
        mean = np.where(bad, np.inf, mean)
    return 100.0 * (Y / mean - 1.0)


def _run_betas(run, events, Y, method, hrf_model, high_pass, noise_model, confounds):
    n_scans = Y.shape[0]
    frame_times = np.arange(n_scans) * float(run["tr"])
    add = {}
    if confounds is not None:
        add = {"add_regs": confounds.to_numpy(), "add_reg_names": list(confounds.columns)}

    # images shown that are not trials (read_trials' attrs["nuisance"]): one regressor
    shown = events.attrs.get("nuisance")
    shown = pd.DataFrame(list(shown), columns=["onset", "duration"]).assign(
        trial_type="nuisance") if shown else None

    def design(trial_types):
        frame = pd.DataFrame(
            {"onset": events["onset"], "duration": events["duration"], "trial_type": trial_types}
        )
        if shown is not None:
            frame = pd.concat([frame, shown[["onset", "duration", "trial_type"]]], ignore_index=True)
        with warnings.catch_warnings():
            # trials near the end of a run have partial HRFs; nilearn warns, harmlessly
            warnings.simplefilter("ignore", UserWarning)
            return make_first_level_design_matrix(
                frame_times, frame, hrf_model=hrf_model, drift_model="cosine",
                high_pass=high_pass, **add,
            )

    # the LSA design is checked whatever the fit: if it is rank-deficient, no trial
    # model (LSA or LSS) can tell the colliding trials apart
    names = [_TRIAL.format(i) for i in range(len(events))]
    X = design(names)
    trial_cols = [X.columns.get_loc(n) for n in names]
    check_design_rank(X.to_numpy(), trial_cols, events, run["events"])

    if method == "lss" and noise_model != "ols":
        # AR(p) noise: nilearn's run_glm, one model per trial (the AR coefficients are
        # estimated from each model's own OLS residuals)
        betas = np.empty((len(events), Y.shape[1]))
        for i in range(len(events)):
            types = np.full(len(events), "other", dtype=object)
            types[i] = "target"
            X = design(types)
            theta = _fit_theta(Y, X.to_numpy(), noise_model)
            betas[i] = theta[X.columns.get_loc("target")]
        return betas

    if noise_model == "ols":
        fit = lsa_betas if method == "lsa" else lss_betas
        return fit(Y, X.to_numpy(), trial_cols)
    theta = _fit_theta(Y, X.to_numpy(), noise_model)
    # A contrast selecting a single regressor has effect size equal to that
    # regressor's theta, so reading theta avoids n_trials contrast calls.
    return theta[trial_cols]


def check_design_rank(X: np.ndarray, trial_cols, events: pd.DataFrame, where) -> None:
    """Refuse a design whose trial betas are not determined by the data.

    A design with collinear columns (two trials at one onset, a duplicated events row,
    a trial that a confound or drift regressor reproduces) has no unique solution: a
    pseudo-inverse returns one anyway, with betas of any size. The trials involved are
    those with weight in the design's (near) null space.

    Parameters
    ----------
    X : ndarray, shape (n_scans, n_regressors)
        The LSA design of one run.
    trial_cols : sequence of int
        Columns of ``X`` holding the trials, in the order of ``events``' rows.
    events : DataFrame
        The run's trials (``onset``, ``stim_file``), for the message.
    where : str or Path
        The events file, for the message.

    Raises
    ------
    ValueError
        Condition number above :data:`MAX_CONDITION`, naming the colliding trials.
    """
    scale = np.linalg.norm(X, axis=0)
    scale[scale == 0] = 1.0  # an all-zero column is itself the defect: its s is 0
    _, s, vt = np.linalg.svd(X / scale, full_matrices=False)
    null = s < s[0] / MAX_CONDITION
    if not null.any():
        return
    weight = np.abs(vt[null]).max(axis=0)[list(trial_cols)]
    involved = np.flatnonzero(weight > 0.1)
    described = ", ".join(f"onset {events['onset'].iloc[i]:g} s ({events['stim_file'].iloc[i]})"
                          for i in involved[:6])
    raise ValueError(
        f"{where}: the single-trial design is rank-deficient (condition number "
        f"{s[0] / max(s[-1], np.finfo(float).tiny):.2g}): "
        + (f"the trials at {described} cannot be told apart"
           if len(involved) else "a trial regressor is reproduced by the drift or confound regressors")
        + "; remove duplicated events or merge trials that share an onset"
    )


def lsa_betas(Y: np.ndarray, X: np.ndarray, trial_cols) -> np.ndarray:
    """OLS single-trial betas of all voxels from one least-squares solve (LSA).

    Equal to ``run_glm(Y, X, noise_model="ols")`` theta rows ``trial_cols``, which
    nilearn computes as ``pinv(X) @ Y`` too; only the trial rows of the
    pseudo-inverse are applied, and no residuals are formed (they are not needed).

    Parameters
    ----------
    Y : ndarray, shape (n_scans, n_voxels)
    X : ndarray, shape (n_scans, n_regressors)
        Full design: one column per trial plus drifts, confounds and constant.
    trial_cols : sequence of int
        Columns of ``X`` holding the trials, in trial order.

    Returns
    -------
    ndarray, shape (n_trials, n_voxels)
    """
    return np.linalg.pinv(X)[list(trial_cols)] @ Y


def lss_betas(Y: np.ndarray, X: np.ndarray, trial_cols) -> np.ndarray:
    """OLS least-squares-separate betas of all voxels and trials in closed form.

    LSS fits, per trial ``i``, the model ``[x_i, sum_{j != i} x_j, N]`` (``N`` the
    nuisance columns: drifts, confounds, constant). With ``P`` the projection out
    of ``N`` (Frisch-Waugh-Lovell), ``a = x_i' P x_i``, ``o_i = s - x_i`` (``s``
    the sum of the trial columns), ``b = x_i' P o_i`` and ``c = o_i' P o_i``, the
    trial's beta is ``(c x_i' P Y - b o_i' P Y) / (a c - b^2)``. The projections
    ``x_i' P Y`` of every trial come from one matrix product, so all trials cost
    about one LSA fit instead of one GLM each (Mumford et al. 2012's model,
    computed in the spirit of Turner et al.'s closed-form LSS). The "other" column
    nilearn convolves from the other trials' onsets is, by linearity of the HRF
    convolution, ``s - x_i``.

    Parameters
    ----------
    Y : ndarray, shape (n_scans, n_voxels)
    X : ndarray, shape (n_scans, n_regressors)
        The LSA design: one column per trial plus nuisance columns.
    trial_cols : sequence of int
        Columns of ``X`` holding the trials, in trial order.

    Returns
    -------
    ndarray, shape (n_trials, n_voxels)
    """
    trial_cols = list(trial_cols)
    trials = X[:, trial_cols]
    if trials.shape[1] == 1:  # no "other" regressor: LSS is LSA
        return lsa_betas(Y, X, trial_cols)
    nuisance = np.delete(X, trial_cols, axis=1)
    q, _ = np.linalg.qr(nuisance)
    xt = trials - q @ (q.T @ trials)  # P x_i for every trial
    st = xt.sum(1)  # P s
    a = (xt * xt).sum(0)
    xs = xt.T @ st  # x_i' P s
    ss = st @ st
    b = xs - a  # x_i' P (s - x_i)
    c = ss - 2 * xs + a  # (s - x_i)' P (s - x_i)
    xy = xt.T @ Y  # x_i' P Y, all trials and voxels in one product
    oy = xy.sum(0) - xy  # (s - x_i)' P Y
    return (c[:, None] * xy - b[:, None] * oy) / (a * c - b * b)[:, None]


def _repetitions(trials: pd.DataFrame) -> np.ndarray:
    # rows are in time order, so a running count per (split, stimulus) is the repetition
    return trials.groupby(["split", "stim_file"], sort=False).cumcount().to_numpy() + 1


def select_runs(runs: list[dict], splits: dict) -> tuple[list[dict], dict]:
    """The runs whose task is in a split, checked, and the task -> split map.

    A run dict with ``splits`` (the workflow's, from :func:`fmrirecon.events.run_splits`:
    by task, session or events column) is used when that list is non-empty, whatever
    its task. Raises ValueError for a task in two splits, a run lacking keys or no
    usable run; other runs are skipped with a logged warning.
    """
    task_split = {}
    for split, tasks in splits.items():
        for task in [tasks] if isinstance(tasks, str) else tasks:
            if task in task_split:
                raise ValueError(f"task {task!r} is in splits {task_split[task]!r} and {split!r}")
            task_split[task] = split

    used = []
    for run in runs:
        missing = {"bold", "mask", "events", "task", "run", "tr"} - set(run)
        if missing:
            raise ValueError(f"run {run} lacks key(s) {sorted(missing)}")
        if "splits" in run:
            if not run["splits"]:
                logger.warning("%s: in no split; skipped", run["bold"])
                continue
            # callers that look the split up by task still find one (the trials carry
            # their own, see load_run)
            task_split.setdefault(run["task"], run["splits"][0])
        elif run["task"] not in task_split:
            logger.warning("%s: task %r is in no split; skipped", run["bold"], run["task"])
            continue
        used.append(run)
    if not used:
        raise ValueError(f"no run has a task in the splits {splits}")
    return used, task_split


def subject_mask(runs, mask_img=None):
    """Boolean in-mask array, the mask image and its name (see ``single_trial_betas``)."""
    return _subject_mask(runs, mask_img)


def load_run(run: dict, mask, mask_ref, mask_name, confounds: str):
    """Events, in-mask data in percent signal change and confounds of one run.

    Returns
    -------
    events : DataFrame
        From :func:`load_trial_events`.
    Y : ndarray, shape (n_scans, n_voxels)
        float64, percent signal change of each voxel's run mean.
    confounds : DataFrame or None
    """
    bold_path = Path(run["bold"])
    if not bold_path.is_file():
        raise ValueError(f"{bold_path}: BOLD file not found")
    img = nib.load(bold_path)
    if img.ndim != 4:
        raise ValueError(f"{bold_path}: expected 4-D BOLD, got shape {img.shape}")
    _check_grid(img, mask_ref, bold_path, mask_name)
    tr = float(run["tr"])
    header_tr = float(img.header.get_zooms()[3]) if len(img.header.get_zooms()) > 3 else 0.0
    if header_tr > 0 and abs(header_tr - tr) > 1e-3:
        logger.warning("%s: header TR %g s differs from given TR %g s; using %g", bold_path, header_tr, tr, tr)
    n_scans = img.shape[3]
    if "design" in run:
        # the workflow's runs: the same reader as the pre-flight check (stimulus column,
        # non-stimulus rows, per-trial splits, stimuli folder and lookup table)
        from fmrirecon.events import read_trials

        events = read_trials(run["events"], run["design"], _resolver(run["stimuli"]),
                             splits=run.get("splits"), n_volumes=n_scans, tr=tr)
        nuisance = events.attrs["nuisance"]
        # trial_table prefers these to the columns its callers assign per run
        events = events.rename(columns={"split": "trial_split"}).assign(
            session=str(run.get("session") or ""))
        events.attrs["nuisance"] = nuisance  # images shown outside the trials (_run_betas)
    else:
        events = load_trial_events(run["events"], n_scans, tr)
    conf = _confounds(run, confounds)
    if conf is not None and len(conf) != n_scans:
        raise ValueError(f"{run['confounds']}: {len(conf)} rows but {bold_path} has {n_scans} volumes")

    Y = np.asarray(img.dataobj, dtype=np.float32)[mask].T.astype(np.float64)
    return events, _percent_signal_change(Y, bold_path), conf


def _resolver(spec: dict):
    """One :class:`fmrirecon.stimuli.StimulusResolver` per stimuli config (it lists the folder)."""
    from fmrirecon.stimuli import StimulusResolver

    key = json.dumps(spec, sort_keys=True, default=str)
    if key not in _RESOLVERS:
        _RESOLVERS[key] = StimulusResolver(spec)
        _RESOLVERS[key].problems.raise_if_any()
    return _RESOLVERS[key]


_RESOLVERS: dict = {}


def trial_table(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate per-run event tables (with task, run, split) into the trial table.

    A table's own ``trial_split`` (trials split by session or by an events column)
    replaces the run's ``split``; ``session`` and ``stim_id`` are empty / the stimulus
    file when the events did not carry them.
    """
    trials = pd.concat(tables, ignore_index=True)
    if "trial_split" in trials:
        trials["split"] = trials["trial_split"].where(trials["trial_split"].notna(), trials["split"])
    if "session" not in trials:
        trials["session"] = ""
    if "stim_id" not in trials:
        trials["stim_id"] = trials["stim_file"]
    trials["session"] = trials["session"].fillna("").astype(str)
    trials["trial"] = np.arange(len(trials))
    trials["repetition"] = _repetitions(trials)
    return trials[TRIAL_COLUMNS + SOURCE_COLUMNS]


# Over 80 lines for its numpydoc docstring (56 lines, every option): the code is 58.
def single_trial_betas(
    runs: list[dict],
    splits: dict[str, list[str]],
    method: str = "lsa",
    hrf_model: str = "glover",
    high_pass: float = 0.01,
    noise_model: str = "ols",
    confounds: str = "motion6",
    mask_img=None,
    progress: bool = True,
    denoise: dict | None = None,
) -> Betas:
    """Estimate one beta per trial of every run of one subject.

    Per run, the design (from
    :func:`nilearn.glm.first_level.make_first_level_design_matrix` with a cosine
    drift model) holds the trial regressors, the motion confounds (loaded with
    :func:`nilearn.interfaces.fmriprep.load_confounds`) and is fit to the in-mask
    voxels: for ``noise_model="ols"`` by :func:`lsa_betas` / :func:`lss_betas` (equal to
    nilearn's OLS fit), else with :func:`nilearn.glm.first_level.run_glm`. The data are first scaled
    to percent signal change of each voxel's run mean, as ``FirstLevelModel`` does
    by default, so betas equal its effect sizes.

    Parameters
    ----------
    runs : list of dict
        One dict per run, in acquisition order, with ``bold`` (4-D NIfTI path),
        ``mask`` (3-D NIfTI path), ``confounds`` (fMRIPrep confounds TSV path or None
        for none), ``events`` (BIDS events TSV with ``onset``, ``duration``,
        ``stim_file``), ``task`` (str), ``run`` (int) and ``tr`` (float, s). The
        workflow's runs also carry ``session``, ``splits`` (the run's splits,
        :func:`fmrirecon.events.run_splits`), ``design`` and ``stimuli`` (config sections):
        their events are then read by :func:`fmrirecon.events.read_trials` (stimulus
        column, lookup table, non-stimulus rows, per-trial splits), as the pre-flight
        check read them.
    splits : dict of str to list of str
        Split name -> task names, e.g. ``{"train": ["train"], "test": ["test"]}``.
        Runs of tasks in no split are skipped with a logged warning.
    method : {"lsa", "lss", "denoised"}, default="lsa"
        LSA: one design per run with one regressor per trial. LSS: per trial, a
        design with that trial and one regressor for all the run's other trials.
        ``denoised``: per-voxel HRF, GLMdenoise noise regressors and fractional
        ridge (:func:`fmrirecon.glm_denoise.denoised_betas`; ``hrf_model`` and
        ``noise_model`` do not apply).
    hrf_model : str, default="glover"
        nilearn HRF model (single-regressor models only: ``glover``, ``spm``).
    high_pass : float, default=0.01
        Cosine drift cut-off (Hz).
    noise_model : {"ols", "ar1"}, default="ols"
        Temporal noise model of ``run_glm``.
    confounds : {"motion6", "motion24", "none"}, default="motion6"
        ``motion6`` = ``load_confounds(strategy=("motion",), motion="basic")``;
        ``motion24`` = ``motion="full"`` (with derivatives and squares).
    mask_img : str, Path, Nifti1Image or None, default=None
        Subject mask; by default the intersection of the runs' masks.
    progress : bool, default=True
        Progress bar over runs on stderr.
    denoise : dict or None, default=None
        Keyword arguments of :func:`fmrirecon.glm_denoise.denoised_betas` (method
        ``denoised`` only).

    Returns
    -------
    Betas
        ``betas`` (n_trials, n_voxels) float32 in percent signal change, rows in the
        order of ``runs`` then onset; trial table per docs/formats.md section 3;
        ``voxel_ijk`` the in-mask voxels (C order); geometry of the mask.
    """
    if method == DENOISED:
        # HRF library + GLMdenoise + fractional ridge lives in its own module
        from fmrirecon.glm_denoise import denoised_betas

        if hrf_model != "glover" or noise_model != "ols":
            logger.warning("method %r fits its own HRFs with OLS; hrf_model=%r and noise_model=%r "
                           "are ignored", method, hrf_model, noise_model)
        betas, _ = denoised_betas(runs, splits, high_pass=high_pass, confounds=confounds,
                                  mask_img=mask_img, progress=progress, **(denoise or {}))
        return betas
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS + (DENOISED,)}, got {method!r}")
    if confounds not in CONFOUND_STRATEGIES:
        raise ValueError(f"confounds must be one of {list(CONFOUND_STRATEGIES)}, got {confounds!r}")
    if not (noise_model == "ols" or noise_model.startswith("ar")):
        raise ValueError(f"noise_model must be 'ols' or 'arN', got {noise_model!r}")
    used, task_split = select_runs(runs, splits)

    mask, mask_ref, mask_name = _subject_mask(used, mask_img)

    all_betas, tables = [], []
    for run in tqdm(used, desc=f"{method} betas", unit="run", file=sys.stderr, disable=not progress):
        events, Y, conf = load_run(run, mask, mask_ref, mask_name, confounds)
        # float32 per run: the subject's betas are held once, at output precision
        # (NSD-like, 10,000 trials x 100,000 voxels: 4 GB, not 8 GB plus a float64 copy)
        all_betas.append(_run_betas(run, events, Y, method, hrf_model, high_pass, noise_model,
                                    conf).astype(np.float32))
        tables.append(events.assign(task=str(run["task"]), run=int(run["run"]), split=task_split[run["task"]]))
        del Y

    return Betas(
        betas=np.concatenate(all_betas),
        trials=trial_table(tables),
        voxel_ijk=np.argwhere(mask).astype(np.int32),
        affine=np.asarray(mask_ref.affine, dtype=np.float64),
        shape=tuple(int(s) for s in mask_ref.shape[:3]),
        attrs={
            "glm_method": method,
            "hrf_model": hrf_model,
            "high_pass": float(high_pass),
            "noise_model": noise_model,
            "confounds": confounds,
            "drift_model": "cosine",
            "units": "percent signal change",
        },
    )
