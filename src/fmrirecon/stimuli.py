"""The stimulus images of a dataset: the folder, the id -> file lookup and the table.

An events file names each trial's image by an id (config ``stimuli``: the events
column, the folder, an optional id -> file table); :class:`StimulusResolver` maps
those ids to files inside the stimuli folder. ``stimuli/stimuli.tsv`` (one row per
image, ``stim_file`` plus attributes such as ``category`` or ``family``) is read by
:func:`read_stimuli_table` and looked up by :func:`stimulus_column`.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .bids import Problems

#: Image files a stimulus id may name without its extension.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
#: Defaults of the config section ``stimuli`` (the schema repeats them).
STIMULI_DEFAULTS = {"column": "stim_file", "folder": None, "table": None,
                    "table_id": None, "table_file": "stim_file"}


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
