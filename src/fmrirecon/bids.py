"""Index a BIDS raw dataset once into a manifest, and check it before any compute.

The manifest is a table with one row per functional run (``subject``, ``task``,
``run``, ``bold``, ``events``, ``tr``, ``n_volumes``). The workflow builds it once, in
the main Snakemake process, and every job reads it instead of re-indexing the dataset
(indexing a large dataset with pybids takes minutes and cluster jobs would all repeat
it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import nibabel as nib
import numpy as np
import pandas as pd

MANIFEST_COLUMNS = ["subject", "task", "run", "bold", "events", "tr", "n_volumes"]
EVENT_COLUMNS = ["onset", "duration", "stim_file"]


class BIDSInputError(ValueError):
    """A problem with the input dataset, naming the file at fault."""


def index_bids(bids_dir: str | Path, subjects: Iterable[str] = (), tasks: Iterable[str] = (),
               database_path: str | Path | None = None) -> pd.DataFrame:
    """Index the functional runs of a BIDS dataset with pybids.

    Parameters
    ----------
    bids_dir : path
        Root of a BIDS raw dataset.
    subjects, tasks : iterables of str
        Restrict to these labels (empty: all).
    database_path : path, optional
        pybids SQL index to reuse between invocations on large datasets.

    Returns
    -------
    DataFrame with :data:`MANIFEST_COLUMNS`, sorted by subject, task and run.
    """
    from bids import BIDSLayout

    bids_dir = Path(bids_dir)
    if not (bids_dir / "dataset_description.json").is_file():
        raise BIDSInputError(f"{bids_dir / 'dataset_description.json'}: missing; "
                             "bids_dir must be the root of a BIDS raw dataset")
    layout = BIDSLayout(bids_dir, validate=False, database_path=database_path)
    query = dict(datatype="func", suffix="bold", extension=[".nii", ".nii.gz"])
    if subjects:
        query["subject"] = list(subjects)
    if tasks:
        query["task"] = list(tasks)
    rows = []
    for bold in layout.get(**query):
        entities = bold.get_entities()
        events = bold.path.replace("_bold.nii.gz", "_events.tsv").replace("_bold.nii", "_events.tsv")
        metadata = bold.get_metadata()  # applies the BIDS inheritance principle
        if "RepetitionTime" not in metadata:
            raise BIDSInputError(f"{bold.path}: no RepetitionTime in its JSON sidecar")
        rows.append(dict(
            subject=entities["subject"], task=entities["task"],
            # the label as written (run-1 or run-01): derivatives keep it
            run=str(entities.get("run", "1")), bold=bold.path, events=events,
            tr=float(metadata["RepetitionTime"]), n_volumes=None,
        ))
    if not rows:
        raise BIDSInputError(
            f"{bids_dir}: no functional runs found"
            + (f" for subjects {list(subjects)}" if subjects else "")
            + (f" and tasks {list(tasks)}" if tasks else "")
        )
    return sort_manifest(pd.DataFrame(rows, columns=MANIFEST_COLUMNS))


def sort_manifest(manifest: pd.DataFrame) -> pd.DataFrame:
    """Rows in the one canonical order (subject, task, run number).

    Every downstream table (trials, betas rows) inherits this order, so a dataset gives
    the same numbers whether it was simulated here or indexed from disk.
    """
    order = manifest.assign(run_number=manifest.run.astype(int))
    return manifest.loc[order.sort_values(["subject", "task", "run_number"]).index].reset_index(drop=True)


def check_manifest(manifest: pd.DataFrame, stimuli_dir: str | Path) -> pd.DataFrame:
    """Check every run's files before compute; fill ``n_volumes``.

    Reads only headers and events tables. Raises :class:`BIDSInputError` naming the
    first file at fault.
    """
    stimuli_dir = Path(stimuli_dir)
    manifest = manifest.copy()
    n_volumes = []
    for row in manifest.itertuples():
        try:
            img = nib.load(row.bold)
        except Exception as err:  # nibabel raises several types for broken files
            raise BIDSInputError(f"{row.bold}: cannot read NIfTI header ({err})") from err
        if len(img.shape) != 4:
            raise BIDSInputError(f"{row.bold}: BOLD must be 4-D, got shape {img.shape}")
        n_volumes.append(int(img.shape[3]))
        check_events(row.events, stimuli_dir, run_duration=img.shape[3] * row.tr)
    manifest["n_volumes"] = n_volumes
    return manifest


def check_events(path: str | Path, stimuli_dir: str | Path, run_duration: float) -> pd.DataFrame:
    """Read an events file and check columns, onsets and that stimuli exist."""
    path = Path(path)
    if not path.is_file():
        raise BIDSInputError(f"{path}: events file missing")
    events = pd.read_csv(path, sep="\t", na_values="n/a")
    missing = [c for c in EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise BIDSInputError(f"{path}: missing column(s) {', '.join(missing)}")
    trials = events.dropna(subset=["stim_file"])
    if trials.empty:
        raise BIDSInputError(f"{path}: no trial has a stim_file")
    bad = trials[(trials.onset < 0) | (trials.onset + trials.duration > run_duration)]
    if len(bad):
        raise BIDSInputError(
            f"{path}: onset {bad.onset.iloc[0]} s outside the run (0 to {run_duration:g} s)")
    for stim in trials.stim_file.unique():
        if not (Path(stimuli_dir) / stim).is_file():
            raise BIDSInputError(f"{path}: stim_file {stim!r} not found in {stimuli_dir}")
    return events


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
    return pd.read_csv(path, sep="\t", dtype={"subject": str, "task": str, "run": str})


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
    return sort_manifest(pd.DataFrame(rows, columns=MANIFEST_COLUMNS))


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
