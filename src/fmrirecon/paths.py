"""One builder for every BIDS-style file name the workflow reads or writes.

Raw runs, fMRIPrep derivatives, the workflow's own outputs and their logs are all named
by :func:`bids_name` / :func:`bids_path` from a dict of BIDS entities, so an entity a
dataset carries (``ses``, ``acq``, ``ce``, ``rec``, ``dir``, ``run``, ``echo``, ``space``,
``res``...) reaches every file derived from it, in the order the BIDS specification
fixes, and no rule writes ``sub-{subject}`` strings by hand.

This is the idea of snakebids' ``bids()``, written here because snakebids does not fit
the project's environment: its releases that know Snakemake 9 pin ``pybids~=0.21``
(the workflow uses pybids 0.22) and pull in copier and boutiques; under our constraints
pip falls back to snakebids 0.3.16 (2021).
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["ENTITIES", "RUN_ENTITIES", "bids_name", "bids_path", "run_entities", "run_key"]

#: BIDS entities in the order the specification puts them in a file name:
#: (short key written in the name, long name as pybids and snakebids call it).
ENTITIES = (
    ("sub", "subject"), ("ses", "session"), ("task", "task"), ("acq", "acquisition"),
    ("ce", "ceagent"), ("rec", "reconstruction"), ("dir", "direction"), ("run", "run"),
    ("echo", "echo"), ("part", "part"), ("space", "space"), ("cohort", "cohort"),
    ("res", "resolution"), ("den", "density"), ("label", "label"), ("desc", "desc"),
)
_SHORT = {long: short for short, long in ENTITIES} | {short: short for short, _ in ENTITIES}
_ORDER = {short: i for i, (short, _) in enumerate(ENTITIES)}
#: The entities that tell the functional runs of one subject apart (manifest columns,
#: long names): everything a raw BOLD file name can carry before its suffix.
RUN_ENTITIES = ("session", "task", "acquisition", "ceagent", "reconstruction", "direction",
                "run", "echo")
# letters and digits, or Snakemake wildcards such as {subject} standing for them
_LABEL = re.compile(r"(?:[a-zA-Z0-9]|\{[a-zA-Z_][a-zA-Z0-9_]*\})+")


def _check_label(key: str, value: str) -> str:
    value = str(value)
    if not _LABEL.fullmatch(value):
        raise ValueError(f"BIDS entity {key}: label {value!r} must be letters and digits only")
    return value


def bids_name(suffix: str, extension: str = "", **entities) -> str:
    """A BIDS file name from its entities: ``sub-01_ses-02_task-x_run-01_bold.nii.gz``.

    Parameters
    ----------
    suffix : str
        The name's last part (``bold``, ``mask``, ``betas``...); ``""`` for none.
    extension : str, default=""
        With its leading dot (``.nii.gz``).
    **entities
        Entity labels by short (``ses``) or long (``session``) name. ``None`` and ``""``
        leave the entity out; Snakemake wildcards (``"{subject}"``, ``"{method}{split}"``)
        are kept as they are.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        An unknown entity, or a label that is not alphanumeric.
    """
    parts = []
    for key, value in entities.items():
        if key not in _SHORT:
            raise ValueError(f"unknown BIDS entity {key!r}; known: {[s for s, _ in ENTITIES]}")
        if value is None or value == "":
            continue
        parts.append((_ORDER[_SHORT[key]], f"{_SHORT[key]}-{_check_label(key, value)}"))
    if len({order for order, _ in parts}) != len(parts):
        raise ValueError(f"an entity is given twice in {entities}")
    return "_".join([p for _, p in sorted(parts)] + ([suffix] if suffix else [])) + extension


def bids_path(root: str | Path, datatype: str | None, suffix: str, extension: str = "",
              **entities) -> Path:
    """``root/sub-<s>[/ses-<t>][/<datatype>]/<bids_name>``, as BIDS lays files out.

    Parameters
    ----------
    root : str or Path
        Dataset (or derivatives) root.
    datatype : str or None
        ``func``, ``anat``...; None for files directly in the subject (or session) folder.
    suffix, extension, **entities
        As in :func:`bids_name`; ``sub`` (or ``subject``) is required.
    """
    norm = {_SHORT.get(k, k): v for k, v in entities.items()}
    if not norm.get("sub"):
        raise ValueError("bids_path needs a subject")
    folder = Path(root) / f"sub-{_check_label('sub', norm['sub'])}"
    if norm.get("ses"):
        folder = folder / f"ses-{_check_label('ses', norm['ses'])}"
    if datatype:
        folder = folder / datatype
    return folder / bids_name(suffix, extension, **entities)


def run_entities(row) -> dict:
    """The entities of one manifest row (``subject`` plus :data:`RUN_ENTITIES`), absent
    ones left out."""
    get = row.get if isinstance(row, dict) else lambda k, d=None: getattr(row, k, d)
    out = {"subject": str(get("subject"))}
    for key in RUN_ENTITIES:
        value = get(key, "")
        if value is not None and value == value and str(value) != "":  # NaN-safe
            out[key] = str(value)
    return out


def run_key(row) -> str:
    """A run's name without suffix, unique within a dataset:
    ``sub-01_ses-02_task-train_run-01``."""
    return bids_name("", **run_entities(row))


def is_inside(child: str | Path, parent: str | Path) -> bool:
    """Whether ``child`` is ``parent`` or lies below it (symlinks resolved): a
    results_dir there would write into a dataset."""
    child, parent = Path(child).resolve(), Path(parent).resolve()
    return child == parent or parent in child.parents
