"""Index a BIDS raw dataset once into a manifest of its functional runs.

The manifest is a table with one row per functional run: ``subject``, every entity
that tells a subject's runs apart (``session``, ``task``, ``acquisition``, ``ceagent``,
``reconstruction``, ``direction``, ``run``, ``echo``; empty when the dataset does not
use it), ``bold``, ``events``, ``tr`` and ``n_volumes``. The workflow builds it once,
in the main Snakemake process, and every job reads it instead of re-indexing the
dataset (indexing a large dataset with pybids takes minutes and cluster jobs would all
repeat it).

A run's events are read by :func:`fmrirecon.events.read_trials`; its stimulus ids are
mapped to image files by :class:`fmrirecon.stimuli.StimulusResolver`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable

import pandas as pd

from .paths import RUN_ENTITIES

MANIFEST_COLUMNS = ["subject", *RUN_ENTITIES, "bold", "events", "tr", "n_volumes"]



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


def _check_json_files(bids_dir: Path, collect: Problems) -> None:
    """Raise :class:`BIDSInputError` for a missing or broken dataset_description.json,
    and for every broken JSON sidecar of the raw data."""
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
    _check_json_files(bids_dir, collect)
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
    # imported here: both import this module's Problems
    from .preflight import check_runs
    from .stimuli import stimuli_spec

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



def dataset_name(bids_dir: str | Path) -> str:
    """The Name in a dataset's dataset_description.json (folder name if absent)."""
    try:
        return json.loads((Path(bids_dir) / "dataset_description.json").read_text())["Name"]
    except (OSError, KeyError, ValueError):
        return Path(bids_dir).name

