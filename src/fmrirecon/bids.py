"""Index a BIDS raw dataset once into a manifest, and read its trials.

The manifest is a table with one row per functional run: ``subject``, every entity
that tells a subject's runs apart (``session``, ``task``, ``acquisition``, ``ceagent``,
``reconstruction``, ``direction``, ``run``, ``echo``; empty when the dataset does not
use it), ``bold``, ``events``, ``tr`` and ``n_volumes``. The workflow builds it once,
in the main Snakemake process, and every job reads it instead of re-indexing the
dataset (indexing a large dataset with pybids takes minutes and cluster jobs would all
repeat it).

:func:`read_trials` is the one reader of a run's events: which rows are stimulus
trials (config ``design.exclude``, rows without a stimulus), which image each shows
(config ``stimuli``: the events column, the folder, an optional id -> file table) and
which split each belongs to (by task, session or an events column). The pre-flight
check (:mod:`fmrirecon.preflight`) and the GLM job both call it, so they agree on
every trial.
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
import re
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from .paths import RUN_ENTITIES

MANIFEST_COLUMNS = ["subject", *RUN_ENTITIES, "bold", "events", "tr", "n_volumes"]
SPLITS = ("train", "test", "imagery")
#: Image files a stimulus id may name without its extension.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
#: Defaults of the config sections ``design`` and ``stimuli`` (the schema repeats them).
DESIGN_DEFAULTS = {
    "split_by": "task",
    "train_tasks": ["train"], "test_tasks": ["test"], "imagery_tasks": ["imagery"],
    "train_sessions": [], "test_sessions": [], "imagery_sessions": [],
    "split_column": None,
    "split_values": {"train": ["train"], "test": ["test"], "imagery": ["imagery"]},
    "tasks": [],
    "exclude": {},
    "exclude_split": {},
    "allow_test_in_train": False,
}
STIMULI_DEFAULTS = {"column": "stim_file", "folder": None, "table": None,
                    "table_id": None, "table_file": "stim_file"}


class BIDSInputError(ValueError):
    """Problems with the input dataset, one line each, naming the file at fault."""


class Problems(list):
    """Problems found while checking inputs, collected so that all are reported at once."""

    def add(self, where, message: str) -> None:
        """Record one problem: ``<where>: <message>``."""
        self.append(f"{where}: {message}")

    def raise_if_any(self) -> None:
        """Raise :class:`BIDSInputError` listing every problem, one per line."""
        if self:
            raise BIDSInputError("\n".join(dict.fromkeys(self)))


def _first_problem(problems: Problems | None) -> tuple[Problems, bool]:
    """The list to append to, and whether to raise at the first problem."""
    return (Problems(), True) if problems is None else (problems, False)


# ---------------------------------------------------------------- indexing


_PYBIDS_ENTITIES = {"session": "session", "task": "task", "acquisition": "acquisition",
                    "ceagent": "ceagent", "reconstruction": "reconstruction",
                    "direction": "direction", "run": "run", "echo": "echo"}


def index_bids(bids_dir: str | Path, subjects: Iterable[str] = (), tasks: Iterable[str] = (),
               database_path: str | Path | None = None,
               problems: Problems | None = None) -> pd.DataFrame:
    """Index the functional runs of a BIDS dataset with pybids.

    Parameters
    ----------
    bids_dir : path
        Root of a BIDS raw dataset.
    subjects, tasks : iterables of str
        Restrict to these labels (empty: all).
    database_path : path, optional
        pybids SQL index to reuse between invocations on large datasets.
    problems : Problems, optional
        Collects what is wrong (a run without ``RepetitionTime``, a surface-only run...)
        instead of raising at the first.

    Returns
    -------
    DataFrame with :data:`MANIFEST_COLUMNS`, sorted by :func:`sort_manifest`; entities
    the dataset does not use are empty strings; ``tr`` is NaN where it is missing.
    """
    from bids import BIDSLayout, BIDSLayoutIndexer

    collect, raise_now = _first_problem(problems)
    bids_dir = Path(bids_dir)
    description = bids_dir / "dataset_description.json"
    if not description.is_file():
        raise BIDSInputError(f"{description}: missing; bids_dir must be the root of a BIDS raw dataset")
    try:
        json.loads(description.read_text())
    except ValueError as err:
        raise BIDSInputError(f"{description}: not valid JSON ({err}); fix the file") from err
    # pybids reads every sidecar while indexing and stops at the first broken one:
    # name them all first
    broken = Problems()
    for sidecar in sorted(bids_dir.rglob("*.json")):
        rel = sidecar.relative_to(bids_dir).parts
        if rel[0] in ("derivatives", "sourcedata", "code", "stimuli") or any(p.startswith(".") for p in rel):
            continue
        try:
            json.loads(sidecar.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            broken.add(sidecar, f"not valid JSON ({err}); fix the sidecar")
    if broken:
        collect.extend(broken)
        collect.raise_if_any()
    # derivatives and the workflow's own outputs are never raw data
    ignore = [re.compile(r"^/(code|models|sourcedata|stimuli|derivatives)"), re.compile(r"/\.")]
    layout = BIDSLayout(bids_dir, database_path=database_path,
                        indexer=BIDSLayoutIndexer(validate=False, ignore=ignore))
    query = dict(datatype="func", suffix="bold")
    if subjects:
        query["subject"] = list(subjects)
    if tasks:
        query["task"] = list(tasks)
    rows = []
    volumetric = set()
    for bold in layout.get(**query, extension=[".nii", ".nii.gz"]):
        entities = bold.get_entities()
        stem = bold.path[: -len(".nii.gz")] if bold.path.endswith(".nii.gz") else bold.path[: -len(".nii")]
        events = stem.removesuffix("_bold") + "_events.tsv"
        metadata = bold.get_metadata()  # applies the BIDS inheritance principle
        tr = metadata.get("RepetitionTime")
        try:
            tr = float(tr)
        except (TypeError, ValueError):
            collect.add(bold.path, f"RepetitionTime {tr!r} in its JSON sidecar is not a number; "
                        "write the TR in seconds in the _bold.json sidecar" if tr is not None else
                        "no RepetitionTime in its JSON sidecar; add it (seconds) to the _bold.json sidecar")
            tr = float("nan")
        row = dict(subject=entities["subject"], bold=bold.path, events=events, tr=tr, n_volumes=None)
        for column, name in _PYBIDS_ENTITIES.items():
            value = entities.get(name)
            # the label as written (run-1 or run-01): derivatives keep it
            row[column] = "" if value is None else str(value)
        rows.append(row)
        volumetric.add(stem)
    for surface in layout.get(**query, extension=[".func.gii", ".dtseries.nii"]):
        collect.add(surface.path, "surface data only are not supported; give the volumetric "
                    "BOLD run (_bold.nii.gz), or preprocessed volumes with preprocess.method: precomputed")
    if not rows and not collect:
        collect.add(bids_dir, "no functional runs (sub-*/[ses-*/]func/*_bold.nii[.gz]) found"
                    + (f" for subjects {list(subjects)}" if subjects else "")
                    + (f" and tasks {list(tasks)}" if tasks else ""))
    if raise_now:
        collect.raise_if_any()
    return sort_manifest(pd.DataFrame(rows, columns=MANIFEST_COLUMNS))


def sort_manifest(manifest: pd.DataFrame) -> pd.DataFrame:
    """Rows in the one canonical order (subject, session, task, run number, other entities).

    Every downstream table (trials, betas rows) inherits this order, so a dataset gives
    the same numbers whether it was simulated here or indexed from disk.
    """
    manifest = manifest.copy()
    for column in RUN_ENTITIES:
        if column not in manifest:
            manifest[column] = ""
        manifest[column] = manifest[column].fillna("").astype(str)
    run_number = pd.to_numeric(manifest["run"], errors="coerce").fillna(0)
    keys = ["subject", "session", "task", "run_number", "acquisition", "ceagent",
            "reconstruction", "direction", "echo"]
    order = manifest.assign(run_number=run_number).sort_values(keys, kind="stable").index
    return manifest.loc[order, MANIFEST_COLUMNS].reset_index(drop=True)


def check_manifest(manifest: pd.DataFrame, stimuli_dir: str | Path) -> pd.DataFrame:
    """Check every run's files before compute (see :func:`fmrirecon.preflight.check_runs`),
    whatever its task; fill ``n_volumes``. Raises :class:`BIDSInputError` listing every
    problem."""
    from .preflight import check_runs

    problems = Problems()
    every_task = {"train_tasks": sorted(set(manifest["task"])), "test_tasks": [], "imagery_tasks": []}
    manifest = check_runs(manifest, stimuli_spec({"folder": str(stimuli_dir)}, None), every_task,
                          problems=problems)
    problems.raise_if_any()
    return manifest


def write_manifest(manifest: pd.DataFrame, path: str | Path) -> None:
    """Write the manifest as TSV."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(path, sep="\t", index=False)


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest written by :func:`write_manifest`."""
    path = Path(path)
    if not path.is_file():
        raise BIDSInputError(f"{path}: manifest missing; run snakemake from the main process "
                             "once so that it indexes the dataset")
    manifest = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    for column in RUN_ENTITIES:
        if column not in manifest:
            manifest[column] = ""
    manifest["tr"] = pd.to_numeric(manifest["tr"], errors="coerce")
    manifest["n_volumes"] = pd.to_numeric(manifest["n_volumes"], errors="coerce")
    return manifest[MANIFEST_COLUMNS]


def manifest_from_plan(plan: dict, bids_dir: str | Path, tr: float) -> pd.DataFrame:
    """The manifest of a simulated study, known before its files exist."""
    bids_dir = Path(bids_dir)
    rows = []
    for r in plan["runs"]:
        run = f"{int(r['run']):02d}"
        stem = f"sub-{r['subject']}/func/sub-{r['subject']}_task-{r['task']}_run-{run}"
        rows.append(dict(subject=r["subject"], task=r["task"], run=run,
                         bold=str(bids_dir / f"{stem}_bold.nii.gz"),
                         events=str(bids_dir / f"{stem}_events.tsv"), tr=tr, n_volumes=None))
    return sort_manifest(pd.DataFrame(rows))


# ---------------------------------------------------------------- splits


def design_settings(design: dict | None) -> dict:
    """The config section ``design`` over :data:`DESIGN_DEFAULTS`."""
    return {**DESIGN_DEFAULTS, **(design or {})}


def _matches(label: str, patterns) -> bool:
    """A session label against glob patterns, or regular expressions written ``re:<regex>``."""
    for pattern in patterns:
        if pattern.startswith("re:"):
            if re.fullmatch(pattern[3:], label):
                return True
        elif fnmatch.fnmatchcase(label, pattern):
            return True
    return False


def run_splits(row, design: dict) -> list[str]:
    """The splits a run's trials may go to, from its task or session (``design.split_by``).

    ``split_by: column`` gives every split (each trial's own value decides); a run
    whose task is not in ``design.tasks`` (when given) gets none. Several splits for a
    ``task`` or ``session`` rule mean the config puts the run in two splits.
    """
    design = design_settings(design)
    get = row.get if isinstance(row, dict) else lambda k, d="": getattr(row, k, d)
    task, session = str(get("task", "")), str(get("session", "") or "")
    if design["tasks"] and task not in design["tasks"]:
        return []
    by = design["split_by"]
    if by == "task":
        return [s for s in SPLITS if task in design[f"{s}_tasks"]]
    if by == "session":
        return [s for s in SPLITS if _matches(session, design[f"{s}_sessions"])]
    if by == "column":
        return list(SPLITS)
    raise ValueError(f"config['design']['split_by']: {by!r} is not task, session or column")


# ---------------------------------------------------------------- stimuli


def stimuli_spec(stimuli: dict | None, bids_dir: str | Path | None) -> dict:
    """The config section ``stimuli`` with its folder resolved (default ``<bids_dir>/stimuli``)."""
    spec = {**STIMULI_DEFAULTS, **(stimuli or {})}
    if not spec["folder"]:
        spec["folder"] = str(Path(bids_dir) / "stimuli") if bids_dir is not None else None
    return spec


class StimulusResolver:
    """Map the stimulus ids of events files to image files inside one folder.

    An id names its file by a lookup table (``stimuli.table``: id column ->
    file column, paths relative to the folder), or is itself the file's path relative to
    the folder, or that path without its image extension (``n01443537_22563`` for
    ``n01443537_22563.JPEG``) when exactly one image file matches. A path leading out of
    the folder (``../x.png``, ``/abs.png``) is never followed.

    Parameters
    ----------
    spec : dict
        :func:`stimuli_spec` output.
    """

    def __init__(self, spec: dict):
        self.spec = spec
        self.folder = Path(spec["folder"]) if spec["folder"] else None
        self.problems = Problems()
        self.files: set[str] = set()
        self._by_stem: dict[str, list[str]] = {}
        if self.folder is not None and self.folder.is_dir():
            for dirpath, _, names in os.walk(self.folder, followlinks=True):
                rel = Path(dirpath).relative_to(self.folder).as_posix()
                for name in names:
                    path = name if rel == "." else f"{rel}/{name}"
                    self.files.add(path)
                    stem, ext = posixpath.splitext(path)
                    if ext.lower() in IMAGE_SUFFIXES:
                        self._by_stem.setdefault(stem, []).append(path)
        self.lookup = self._read_table() if spec["table"] else None

    def _read_table(self) -> dict | None:
        path = Path(self.spec["table"])
        id_col = self.spec["table_id"] or self.spec["column"]
        file_col = self.spec["table_file"]
        try:
            table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        except FileNotFoundError:
            self.problems.add(path, "stimulus table (config stimuli.table) not found")
            return {}
        except (OSError, ValueError, pd.errors.ParserError) as err:
            self.problems.add(path, f"cannot read the stimulus table ({err})")
            return {}
        missing = [c for c in (id_col, file_col) if c not in table]
        if missing:
            self.problems.add(path, f"no column(s) {missing} (config stimuli.table_id / "
                              f"stimuli.table_file); it has {list(table.columns)}")
            return {}
        repeated = table[id_col][table[id_col].map(_id_key).duplicated()].unique()
        if len(repeated):
            self.problems.add(path, f"stimulus id(s) {list(repeated[:5])} appear twice; "
                              "give each id one row")
        return {_id_key(k): v for k, v in zip(table[id_col], table[file_col])}

    def inside(self, relative: str) -> str | None:
        """``relative`` normalised, or None when it leads out of the folder."""
        if not relative or relative.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", relative):
            return None
        norm = posixpath.normpath(relative.replace("\\", "/"))
        return None if norm == ".." or norm.startswith("../") else norm

    def resolve(self, stim_id: str) -> tuple[str | None, str]:
        """The file (relative to the folder) of one id, or None and the reason."""
        stim_id = str(stim_id).strip()
        if self.folder is None:
            return None, "no stimuli folder configured (config stimuli.folder)"
        if self.lookup is not None:
            if _id_key(stim_id) not in self.lookup:
                return None, (f"stimulus id {stim_id!r} has no row in {self.spec['table']} "
                              "(config stimuli.table)")
            target = self.lookup[_id_key(stim_id)]
        else:
            target = stim_id
        relative = self.inside(target)
        if relative is None:
            return None, (f"stimulus {target!r} leads outside the stimuli folder {self.folder}; "
                          "name images relative to it")
        if relative in self.files:
            return relative, ""
        if relative.startswith(f"{self.folder.name}/") and relative.split("/", 1)[1] in self.files:
            return relative.split("/", 1)[1], ""  # written from the dataset root: stimuli/x.png
        matches = self._by_stem.get(relative, [])
        if len(matches) == 1:
            return matches[0], ""
        if len(matches) > 1:
            return None, (f"stimulus {target!r} matches several files {sorted(matches)} in "
                          f"{self.folder}; name the file with its extension")
        return None, f"stimulus {target!r} not found in {self.folder}"


# ---------------------------------------------------------------- events


def _numeric(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce")


def read_trials(path: str | Path, design: dict, resolver: StimulusResolver,
                splits: list[str] | None = None, n_volumes: int | None = None,
                tr: float | None = None, problems: Problems | None = None,
                counts: dict | None = None) -> pd.DataFrame | None:
    """The stimulus trials of one run's events file.

    Rows matching ``design.exclude`` (column -> values, e.g. ``{trial_type: [rest]}``)
    and rows without a stimulus id are not stimulus trials and are dropped; with
    ``design.split_by: column`` rows whose value is in no split are dropped too. Dropped
    rows that still name an image (one-back repetitions, cues, practice trials: something
    was on the screen) are returned in ``attrs["nuisance"]`` (``(onset, duration)`` pairs):
    the GLM models them together as one regressor, so that their responses do not leak
    into the trials' betas.

    Parameters
    ----------
    path : path
        BIDS ``_events.tsv``.
    design : dict
        Config section ``design`` (:func:`design_settings`).
    resolver : StimulusResolver
        The stimuli folder and lookup table.
    splits : list of str, optional
        The run's splits (:func:`run_splits`); one split for task or session rules.
    n_volumes, tr : optional
        The run's length, to check onsets against.
    problems : Problems, optional
        Collects every problem of the file; without it the first raises
        :class:`BIDSInputError`.
    counts : dict, optional
        Incremented with ``excluded``, ``no_stimulus`` and ``no_split`` row counts.

    Returns
    -------
    DataFrame or None
        ``onset``, ``duration`` (float), ``stim_id``, ``stim_file`` (relative to the
        stimuli folder), ``split``, sorted by onset, with ``attrs["nuisance"]``; None
        when the file has problems.
    """
    collect, raise_now = _first_problem(problems)
    before = len(collect)
    path = Path(path)
    design = design_settings(design)
    column = resolver.spec["column"]
    if not path.is_file():
        collect.add(path, "events file missing; every run in a split needs its _events.tsv "
                    "(or leave its task out with design.tasks, or its session out of the split)")
        return _done(collect, raise_now, before)
    try:
        events = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        collect.add(path, "empty file; write a header (onset, duration, "
                    f"{column}) and one row per event")
        return _done(collect, raise_now, before)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        collect.add(path, f"cannot read as a tab-separated table ({str(err).splitlines()[0]})")
        return _done(collect, raise_now, before)
    events.columns = [str(c).strip() for c in events.columns]
    events = events.apply(lambda values: values.str.strip())  # "2.0 " and " a.png" are 2.0 and a.png
    needed = ["onset", "duration", column] + ([design["split_column"]] if design["split_by"] == "column" else [])
    missing = [c for c in needed if c not in events.columns]
    if missing:
        hint = (" (set stimuli.column to the events column naming the image)"
                if column in missing else "")
        collect.add(path, f"missing column(s) {', '.join(missing)}{hint}; it has {list(events.columns)}")
        return _done(collect, raise_now, before)
    if events.empty:
        collect.add(path, "no events (header only); every run needs its stimulus trials")
        return _done(collect, raise_now, before)
    events["_row"] = np.arange(len(events)) + 2  # line number in the file (header is 1)

    keep = ~_excluded(events, design["exclude"] or {}, path, "design.exclude", collect)
    n_excluded = int((~keep).sum())
    stim = events[column].str.strip()
    named = ~stim.isin(["", "n/a", "nan", "NaN"]).to_numpy()
    no_stim = ~named & keep
    keep &= ~no_stim
    shown = events[named & ~keep]  # excluded rows that put an image on the screen
    trials = events[keep].copy()
    trials[column] = trials[column].str.strip()

    if design["split_by"] == "column":
        value_split = {str(v): s for s, values in design["split_values"].items() for v in values}
        trials["split"] = trials[design["split_column"]].str.strip().map(value_split)
        n_no_split = int(trials["split"].isna().sum())
        shown = pd.concat([shown, trials[trials["split"].isna()]])
        trials = trials[trials["split"].notna()]
    else:
        n_no_split = 0
        trials["split"] = splits[0] if splits else None
    for split, rules in (design["exclude_split"] or {}).items():
        drop = (trials["split"] == split).to_numpy() & _excluded(
            trials, rules, path, f"design.exclude_split.{split}", collect)
        n_excluded += int(drop.sum())
        shown = pd.concat([shown, trials[drop]])
        trials = trials[~drop]
    if counts is not None:
        counts["excluded"] = counts.get("excluded", 0) + n_excluded
        counts["no_stimulus"] = counts.get("no_stimulus", 0) + int(no_stim.sum())
        counts["no_split"] = counts.get("no_split", 0) + n_no_split

    for col in ("onset", "duration"):
        values = _numeric(trials[col])
        bad = trials.loc[values.isna().to_numpy(), ["_row", col]]
        if len(bad):
            shown = ", ".join(f"line {r} {v!r}" for r, v in bad.head(3).itertuples(index=False))
            collect.add(path, f"{col} must be a number in seconds for every stimulus trial; got {shown}")
        negative = trials.loc[(values < 0).to_numpy(), ["_row", col]]
        if len(negative):
            shown = ", ".join(f"line {r} {v}" for r, v in negative.head(3).itertuples(index=False))
            collect.add(path, f"negative {col} ({shown}); onsets count from the first stored "
                        "volume and durations must be >= 0")
        trials[col] = values.astype(float)
    duplicated = events.drop(columns="_row").duplicated(keep="first") & pd.Series(keep, index=events.index)
    if duplicated.any():
        lines = (events.loc[duplicated, "_row"]).tolist()[:5]
        collect.add(path, f"row(s) repeated verbatim at line(s) {lines}; delete the copies")
    else:
        same_onset = trials["onset"].duplicated(keep=False) & trials["onset"].notna()
        if same_onset.any():
            shown = trials.loc[same_onset, ["_row", "onset"]].head(4)
            collect.add(path, "two stimulus trials at the same onset ("
                        + ", ".join(f"line {r}: {o:g} s" for r, o in shown.itertuples(index=False))
                        + "); their regressors are identical and their betas meaningless. "
                          "Fix the onsets, or drop the extra rows with design.exclude")
    if n_volumes is not None and tr is not None and np.isfinite(tr) and tr > 0:
        length = n_volumes * tr
        late = trials.loc[(trials["onset"] >= length).to_numpy(), ["_row", "onset"]]
        if len(late):
            shown = ", ".join(f"line {r}: {o:g} s" for r, o in late.head(3).itertuples(index=False))
            collect.add(path, f"onset(s) past the end of the run ({shown}; the run lasts "
                        f"{n_volumes} volumes x TR {tr:g} s = {length:g} s); check the "
                        "onsets' units (seconds) and the sidecar's RepetitionTime")

    files = []
    unresolved = {}
    for stim_id in trials[column]:
        file, reason = resolver.resolve(stim_id)
        files.append(file)
        if file is None:
            unresolved.setdefault(reason, 0)
            unresolved[reason] += 1
    for reason in list(unresolved)[:5]:
        collect.add(path, reason)
    if len(collect) > before:
        return _done(collect, raise_now, before)
    out = pd.DataFrame({
        "onset": trials["onset"].to_numpy(float), "duration": trials["duration"].to_numpy(float),
        "stim_id": trials[column].to_numpy(str), "stim_file": np.asarray(files, dtype=str),
        "split": trials["split"].to_numpy(object),
    })
    out = out.sort_values("onset", kind="stable").reset_index(drop=True)
    onset, duration = _numeric(shown["onset"]), _numeric(shown["duration"])
    valid = (onset >= 0) & (duration >= 0)  # other rows are not trials: no need to refuse them
    if n_volumes is not None and tr is not None and np.isfinite(tr) and tr > 0:
        valid &= onset < n_volumes * tr
    # a tuple: pandas compares attrs when it concatenates frames
    out.attrs["nuisance"] = tuple(zip(onset[valid].astype(float), duration[valid].astype(float)))
    if counts is not None:
        counts["modelled"] = counts.get("modelled", 0) + int(valid.sum())
    return out


def _excluded(events: pd.DataFrame, rules: dict, path, key: str, collect: Problems) -> np.ndarray:
    """Rows whose value in a column is one of the rule's values (``1`` and ``1.0`` are
    one value)."""
    drop = np.zeros(len(events), dtype=bool)
    for col, values in rules.items():
        if col not in events:
            collect.add(path, f"no column {col!r} for config {key}; it has "
                        f"{[c for c in events.columns if c != '_row']}")
            continue
        hit = events[col].str.strip().isin([str(v) for v in values])
        numeric = _numeric(events[col])
        wanted = [float(v) for v in values if _is_number(v)]
        hit |= numeric.isin(wanted) & numeric.notna()
        drop |= hit.to_numpy()
    return drop


def _id_key(value) -> str:
    """A stimulus id as a lookup key: numbers written 1518009.008 or 1518009.0080 are one id."""
    value = str(value).strip()
    return repr(float(value)) if _is_number(value) else value


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _done(collect: Problems, raise_now: bool, before: int):
    if raise_now and len(collect) > before:
        collect.raise_if_any()
    return None


def dataset_name(bids_dir: str | Path) -> str:
    """The Name in a dataset's dataset_description.json (folder name if absent)."""
    try:
        return json.loads((Path(bids_dir) / "dataset_description.json").read_text())["Name"]
    except (OSError, KeyError, ValueError):
        return Path(bids_dir).name


def read_stimuli_table(stimuli_dir: str | Path) -> pd.DataFrame | None:
    """``stimuli/stimuli.tsv`` (``stim_file`` plus attributes) when the dataset has one."""
    path = Path(stimuli_dir) / "stimuli.tsv"
    return pd.read_csv(path, sep="\t", na_values="n/a") if path.is_file() else None


def stimulus_sources(table: pd.DataFrame | None) -> set[tuple[str, str]]:
    """``(family, source_file)`` of every stimulus drawn from an image folder.

    ``family`` is the folder's name and ``source_file`` the image's path in it (the
    simulator writes both, :func:`fmrirecon.simulate.write_stimuli`). Unpaired image
    folders leave these images out: test images must stay unseen, training ones are
    already paired. Empty without a table or without those columns.
    """
    if table is None or not {"family", "source_file"} <= set(table):
        return set()
    rows = table[["family", "source_file"]].dropna()
    return set(zip(rows["family"].astype(str), rows["source_file"].astype(str)))


def stimulus_column(table: pd.DataFrame | None, stim_files, column: str, source) -> np.ndarray:
    """The value of ``column`` of the stimulus table for each of ``stim_files``.

    Parameters
    ----------
    table : DataFrame or None
        The stimulus table (:func:`read_stimuli_table`).
    stim_files : array-like of str
        Stimuli, as named in the events' ``stim_file``.
    column : str
        Attribute to read (e.g. ``category``, ``family``).
    source : str or Path
        What the table was read from, for error messages.

    Returns
    -------
    ndarray of object, shape (n,)
        NaN where the table has no value for a stimulus.

    Raises
    ------
    ValueError
        No table, no such column, or a stimulus without a row; the message names
        ``source``.
    """
    if table is None or column not in table:
        raise ValueError(f"{source}: no column {column!r}")
    lookup = dict(zip(table["stim_file"].astype(str), table[column]))
    stim_files = [str(s) for s in stim_files]
    unknown = sorted(set(stim_files) - set(lookup))
    if unknown:
        raise ValueError(f"{source}: no row for {unknown[:5]}")
    return np.array([lookup[s] for s in stim_files], dtype=object)
