"""Pre-flight: everything the input files alone can tell, checked before any job runs.

The workflow calls :func:`preflight` in the main Snakemake process, after indexing the
dataset and before building the job graph. It checks every run of every subject and
lists *all* problems at once, one line each naming the file, the value and the fix:

- the layout: ``results_dir`` outside ``bids_dir``, no multi-echo or surface-only runs,
  anatomy present when fMRIPrep runs, precomputed derivatives present for every run;
- each BOLD run: the whole gzip stream readable (cached by size and modification time,
  so a rerun reads nothing again), 4-D with more than one volume, finite, not
  constant; the sidecar's ``RepetitionTime`` present, positive and equal to the
  header's ``pixdim[4]``; one voxel grid per subject where the GLM needs one;
- each events file (:func:`fmrirecon.events.read_trials`): numeric onsets and durations
  >= 0, no duplicated rows, no two stimulus trials at one onset, onsets inside the run,
  each stimulus a readable image inside the stimuli folder;
- the design: non-empty splits per subject, test images absent from training (an
  error unless ``design.allow_test_in_train``), ``evaluation.n_way`` no larger than
  the number of test images.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from .bids import Problems
from .events import design_settings, read_trials, run_splits
from .stimuli import StimulusResolver
from .paths import is_inside, run_key
from .preprocess import derivative_files

__all__ = ["Preflight", "preflight", "check_bids_study", "check_runs", "nifti_summary"]

log = logging.getLogger(__name__)
_CACHE_VERSION = 1


class _Cache:
    """Results of expensive file checks keyed by path, size and modification time."""

    def __init__(self, path: Path | None):
        self.path = path
        self.entries = {}
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text())
                if data.get("version") == _CACHE_VERSION:
                    self.entries = data["entries"]
            except (OSError, ValueError, KeyError):
                self.entries = {}
        self.changed = False

    def get(self, file: Path, compute):
        try:
            stat = file.stat()
        except OSError:
            return compute(file)
        key = str(file.resolve())
        stamp = [stat.st_size, stat.st_mtime_ns]
        hit = self.entries.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        value = compute(file)
        self.entries[key] = [stamp, value]
        self.changed = True
        return value

    def save(self):
        if self.path is not None and self.changed:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"version": _CACHE_VERSION, "entries": self.entries}))


def nifti_summary(path: Path) -> dict:
    """Read a NIfTI file once, whole (gzip integrity), and summarise what pre-flight checks.

    Returns
    -------
    dict
        ``error`` (None or the reason it cannot be read), ``shape``, ``affine``,
        ``tr_header`` (pixdim[4] in seconds, None when unset), ``finite``, ``constant``.
    """
    try:
        img = nib.load(path)
        shape = [int(s) for s in img.shape]
        zooms = img.header.get_zooms()
        tr_header = float(zooms[3]) if len(zooms) > 3 else None
        if tr_header is not None:
            unit = img.header.get_xyzt_units()[1]
            tr_header = tr_header / 1000.0 if unit == "msec" else tr_header / 1e6 if unit == "usec" else tr_header
        data = np.asanyarray(img.dataobj)  # decompresses the whole stream: truncation shows here
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as err:
        return {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'unreadable'}"}
    except MemoryError:
        return {"error": "too large to read in memory"}
    finite = bool(np.isfinite(data).all()) if data.dtype.kind == "f" else True
    constant = bool(data.size == 0 or np.nanmin(data) == np.nanmax(data))
    return {"error": None, "shape": shape, "affine": np.asarray(img.affine).round(4).tolist(),
            "tr_header": tr_header, "finite": finite, "constant": constant}


def image_summary(path: Path) -> dict:
    """Whether an image file decodes (PIL), with the reason when it does not."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            return {"error": None, "size": list(img.size)}
    except Exception as err:  # PIL raises many types for broken files
        return {"error": f"{type(err).__name__}: {err}"}


@dataclass
class Preflight:
    """What pre-flight found: the checked manifest, every trial, and what to print."""

    manifest: pd.DataFrame
    trials: pd.DataFrame
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_runs(manifest: pd.DataFrame, stimuli: dict, design: dict | None = None,
               problems: Problems | None = None, cache: _Cache | None = None,
               trials_out: list | None = None, counts: dict | None = None,
               skipped: list | None = None) -> pd.DataFrame:
    """Check each run's BOLD, sidecar TR and events; fill ``n_volumes``.

    Runs in no split (:func:`fmrirecon.events.run_splits`) are skipped (added to
    ``skipped``). Checked trials go to ``trials_out`` (one DataFrame per run).
    """
    problems = Problems() if problems is None else problems
    cache = cache or _Cache(None)
    design = design_settings(design)
    resolver = StimulusResolver(stimuli)
    problems.extend(resolver.problems)
    manifest = manifest.copy()
    n_volumes = []
    for row in manifest.itertuples():
        splits = run_splits(row._asdict(), design)
        if not splits:
            n_volumes.append(None)
            if skipped is not None:
                skipped.append(row)
            continue
        if len(splits) > 1 and design["split_by"] != "column":
            problems.add(row.bold, f"in splits {' and '.join(splits)} at once; give each "
                         f"{design['split_by']} to one split in config design")
        if row.echo:
            problems.add(row.bold, "multi-echo runs are not supported; combine the echoes "
                         "first (e.g. tedana, or fMRIPrep's optimally combined BOLD with "
                         "preprocess.method: precomputed) and index that")
            n_volumes.append(None)
            continue
        summary = cache.get(Path(row.bold), nifti_summary)
        n = None
        if summary["error"]:
            problems.add(row.bold, f"cannot read the NIfTI file ({summary['error']}); "
                         "re-download or re-convert this run")
        elif len(summary["shape"]) != 4 or summary["shape"][3] < 2:
            problems.add(row.bold, f"BOLD must be 4-D with more than one volume, got shape "
                         f"{tuple(summary['shape'])}")
        else:
            n = summary["shape"][3]
            if not summary["finite"]:
                problems.add(row.bold, "holds NaN or infinite values; replace them "
                             "(e.g. by 0 outside the brain) or re-export the run")
            if summary["constant"]:
                problems.add(row.bold, "every value is the same (an empty or all-zero run); "
                             "re-export it or leave it out of the design")
        tr = float(row.tr)
        if not math.isfinite(tr):
            pass  # no RepetitionTime: reported by the index
        elif tr <= 0:
            problems.add(row.bold, f"RepetitionTime {tr:g} s in its sidecar must be > 0; "
                         "write the TR in seconds in the _bold.json sidecar")
        elif summary.get("tr_header") and abs(summary["tr_header"] - tr) > 1e-3:
            problems.add(row.bold, f"RepetitionTime {tr:g} s in the JSON sidecar differs from "
                         f"the NIfTI header's pixdim[4] {summary['tr_header']:g} s; correct "
                         "whichever is wrong")
        n_volumes.append(n)
        valid_tr = math.isfinite(tr) and tr > 0
        trials = read_trials(row.events, design, resolver, splits=splits,
                             n_volumes=n if valid_tr else None, tr=tr if valid_tr else None,
                             problems=problems, counts=counts)
        if trials is not None and trials_out is not None:
            trials_out.append(trials.assign(subject=row.subject, run_key=run_key(row._asdict()),
                                            session=row.session, task=row.task, run=row.run))
    manifest["n_volumes"] = n_volumes
    cache.save()
    return manifest


# Over 80 lines for its numpydoc docstring (33 lines): the code is 53.
def preflight(manifest: pd.DataFrame, *, bids_dir, results_dir, design: dict, stimuli: dict,
              prep_method: str = "light", prep_dir=None, space=None, res=None,
              needs_test: bool = True, n_way=(), cache_path=None,
              problems: Problems | None = None) -> Preflight:
    """Check a BIDS dataset against the config before any compute.

    Parameters
    ----------
    manifest : DataFrame
        From :func:`fmrirecon.bids.index_bids` (problems of the index already collected
        by the caller are passed on through ``Problems``; see the workflow).
    bids_dir, results_dir : path
    design, stimuli : dict
        Config sections ``design`` and ``stimuli`` (:func:`fmrirecon.stimuli.stimuli_spec`).
    prep_method : {"light", "fmriprep", "precomputed"}
    prep_dir : path, optional
        The derivatives folder (``precomputed``).
    space, res : str, optional
        ``preprocess.space`` and ``preprocess.res``.
    needs_test : bool
        Reconstruction methods need test trials (a classification-only study does not).
    n_way : sequence of int
        ``evaluation.n_way``.
    cache_path : path, optional
        Where the file checks are cached.
    problems : Problems, optional
        Problems found before (by the index), reported with these.

    Returns
    -------
    Preflight

    Raises
    ------
    BIDSInputError
        Listing every problem, one per line.
    """
    problems = Problems() if problems is None else problems
    bids_dir, results_dir = Path(bids_dir), Path(results_dir)
    if is_inside(results_dir, bids_dir):
        problems.add(results_dir, f"results_dir is inside bids_dir {bids_dir}: outputs would be "
                     "written into the raw dataset (and indexed as raw data next time); "
                     "choose a results_dir outside it")
        cache_path = None  # nothing, not even the cache, goes into the dataset
    design = design_settings(design)
    if stimuli.get("folder") and not Path(stimuli["folder"]).is_dir():
        problems.add(stimuli["folder"], "stimuli folder not found; set config stimuli.folder "
                     "to the folder holding the images the events name")
    cache = _Cache(Path(cache_path) if cache_path else None)
    runs, counts, skipped = [], {}, []
    manifest = check_runs(manifest, stimuli, design, problems, cache, runs, counts, skipped)
    used = manifest.drop(index=[r.Index for r in skipped])

    if prep_method == "light":
        _same_grid(used, cache, problems, "light preprocessing realigns all runs of a subject "
                   "to one reference; use fMRIPrep (preprocess.method: fmriprep or precomputed) "
                   "to bring runs on different grids together")
    elif prep_method == "fmriprep":
        for subject in used["subject"].unique():
            anat = list((bids_dir / f"sub-{subject}").glob("**/anat/*_T1w.nii*"))
            if not anat:
                problems.add(bids_dir / f"sub-{subject}", "no anatomical T1w image (anat/*_T1w.nii.gz); "
                             "fMRIPrep needs one per subject: add it, or use preprocess.method: light")
    elif prep_method == "precomputed":
        _check_derivatives(used, Path(prep_dir), space, res, cache, problems)

    trials = pd.concat(runs, ignore_index=True) if runs else pd.DataFrame(
        columns=["onset", "duration", "stim_id", "stim_file", "split", "subject", "run_key"])
    result = Preflight(manifest=used.reset_index(drop=True), trials=trials)
    _check_design(result, manifest, design, needs_test, n_way, problems)
    _check_images(trials, stimuli, cache, problems)
    cache.save()
    if skipped:
        tasks = sorted({f"{r.session or '-'}/{r.task}" for r in skipped})
        result.lines.append(f"{len(skipped)} run(s) in no split skipped (session/task: "
                            f"{', '.join(tasks[:6])}{' ...' if len(tasks) > 6 else ''})")
    reasons = {"excluded": "by design.exclude", "no_stimulus": "without a stimulus",
               "no_split": "in no split"}
    dropped = {k: counts.get(k, 0) for k in reasons if counts.get(k, 0)}
    if dropped:
        result.lines.append(
            "events rows that are not stimulus trials: " + ", ".join(f"{v} {reasons[k]}" for k, v in dropped.items())
            + (f"; {counts['modelled']} of them showed an image, modelled as one nuisance regressor in the GLM"
               if counts.get("modelled") else ""))
    problems.raise_if_any()
    return result


def _same_grid(manifest, cache, problems, why):
    for subject, rows in manifest.groupby("subject", sort=False):
        reference = None
        for row in rows.itertuples():
            summary = cache.get(Path(row.bold), nifti_summary)
            if summary.get("error") or len(summary.get("shape", [])) != 4:
                continue
            grid = (summary["shape"][:3], summary["affine"])
            if reference is None:
                reference = (row.bold, grid)
            elif not (grid[0] == reference[1][0] and np.allclose(grid[1], reference[1][1], atol=1e-3)):
                problems.add(row.bold, f"voxel grid {tuple(grid[0])} differs from {reference[0]} "
                             f"{tuple(reference[1][0])}; {why}")


def _header_summary(path: Path) -> dict:
    try:
        img = nib.load(path)
        return {"error": None, "shape": [int(s) for s in img.shape],
                "affine": np.asarray(img.affine).round(4).tolist()}
    except Exception as err:  # nibabel raises several types
        return {"error": f"{type(err).__name__}: {err}"}


def _check_derivatives(manifest, prep_dir: Path, space, res, cache, problems):
    if not prep_dir.is_dir():
        problems.add(prep_dir, "derivatives folder (preprocess.derivatives_dir) not found")
        return
    grids = {}
    for row in manifest.itertuples():
        files = derivative_files(prep_dir, row._asdict(), space, res)
        for kind, path in files.items():
            if path.is_file():
                continue
            others = sorted(p.name for p in path.parent.glob(f"{run_key(row._asdict())}_*{path.name.split('_')[-1]}"))
            hint = (f"; the folder has {others[:4]} (check preprocess.space / preprocess.res)"
                    if others else "; is derivatives_dir the fMRIPrep output of this dataset?")
            if kind == "bold" and list(path.parent.glob(f"{run_key(row._asdict())}_*.func.gii")) and not others:
                hint = "; only surface (.func.gii) outputs exist: run fMRIPrep with a volumetric output space"
            old_name = path.with_name(path.name.replace("_timeseries.tsv", "_regressors.tsv"))
            if kind == "confounds" and old_name != path and old_name.is_file():
                hint = (f"; {old_name.name} is there: fMRIPrep before 20.2 named it so; rename it or "
                        "rerun fMRIPrep 23-25")
            problems.add(path, f"missing: the {kind} of raw run {Path(row.bold).name}{hint}")
        if files["bold"].is_file():
            summary = cache.get(files["bold"], _header_summary)
            if summary["error"]:
                problems.add(files["bold"], f"cannot read the NIfTI header ({summary['error']})")
            else:
                grids.setdefault(row.subject, []).append((files["bold"], summary))
    for subject, items in grids.items():
        first_path, first = items[0]
        for path, summary in items[1:]:
            same = summary["shape"][:3] == first["shape"][:3] and np.allclose(
                summary["affine"], first["affine"], atol=1e-3)
            if not same:
                problems.add(path, f"voxel grid {tuple(summary['shape'][:3])} differs from {first_path.name} "
                             f"{tuple(first['shape'][:3])}; the GLM needs all of a subject's runs in one "
                             "space: choose a common preprocess.space (e.g. T1w)")


def _check_design(result: Preflight, manifest, design, needs_test, n_way, problems):
    trials = result.trials
    needed = ("train", "test") if needs_test else ("train",)
    for subject in sorted(manifest["subject"].unique()):
        mine = trials[trials["subject"] == subject]
        for split in needed:
            if not (mine["split"] == split).any():
                keys = {"task": f"design.{split}_tasks", "session": f"design.{split}_sessions",
                        "column": f"design.split_values.{split}"}[design["split_by"]]
                problems.add(f"sub-{subject}", f"no {split} trials; check {keys} against the "
                             "dataset's tasks, sessions and events")
        train_files = set(mine.loc[mine["split"] == "train", "stim_file"])
        test_files = set(mine.loc[mine["split"] == "test", "stim_file"])
        shared = sorted(train_files & test_files)
        if shared:
            message = (f"{len(shared)} of {len(test_files)} test images also shown in training "
                       f"(e.g. {shared[:3]}); a reconstruction of them can be recalled rather than "
                       "generalised")
            if design["allow_test_in_train"]:
                result.warnings.append(f"sub-{subject}: {message} (design.allow_test_in_train)")
            else:
                problems.add(f"sub-{subject}", message + "; remove them from the training runs "
                             "or set design.allow_test_in_train: true")
        if needs_test and test_files:
            too_big = [n for n in n_way if n > len(test_files)]
            if too_big:
                problems.add("config['evaluation']['n_way']", f"{too_big} exceed the {len(test_files)} "
                             f"test images of sub-{subject}; use values <= {len(test_files)}")
    for split in ("train", "test", "imagery"):
        rows = trials[trials["split"] == split]
        if len(rows):
            per_subject = rows.groupby("subject").size()
            result.lines.append(
                f"{split}: {len(rows)} trials of {rows['stim_file'].nunique()} images in "
                f"{rows['run_key'].nunique()} runs ("
                + ", ".join(f"sub-{s} {n}" for s, n in per_subject.items()) + ")")


def _check_images(trials, stimuli, cache, problems):
    if not stimuli.get("folder"):
        return
    folder = Path(stimuli["folder"])
    for file in sorted(set(trials["stim_file"])):
        summary = cache.get(folder / file, image_summary)
        if summary["error"]:
            problems.add(folder / file, f"cannot read the image ({summary['error']}); replace the file")


def check_bids_study(config: dict) -> Preflight:
    """Index and check the BIDS study of a validated config (defaults filled): what the
    workflow runs in its main process before any job.

    Raises
    ------
    BIDSInputError
        Every problem of the dataset and of the config against it, one per line.
    """
    from .bids import BIDSInputError, index_bids
    from .events import design_settings
    from .stimuli import stimuli_spec

    problems = Problems()
    bids_dir = Path(config["bids_dir"])
    if not bids_dir.is_dir():
        raise BIDSInputError(f"{bids_dir}: bids_dir not found")
    manifest = index_bids(bids_dir, subjects=config["subjects"], problems=problems)
    unknown = sorted(set(config["subjects"]) - set(manifest["subject"]))
    if unknown:
        problems.add("config['subjects']", f"{', '.join(unknown)} not in {bids_dir}")
    prep = config["preprocess"]
    results = Path(config["results_dir"])
    prep_dir = Path(prep["derivatives_dir"]) if prep["method"] == "precomputed" else (
        results / "derivatives" / "fmriprep")
    return preflight(
        manifest, bids_dir=bids_dir, results_dir=results, design=design_settings(config["design"]),
        stimuli=stimuli_spec(config["stimuli"], bids_dir), prep_method=prep["method"],
        prep_dir=prep_dir, space=prep["space"], res=prep["res"],
        needs_test=bool(config["methods"]),
        n_way=config["evaluation"]["n_way"] if config["methods"] else (),
        cache_path=results / ".preflight" / "cache.json", problems=problems,
    )
