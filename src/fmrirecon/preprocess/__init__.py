"""Preprocessed BOLD in fMRIPrep's derivatives layout (docs/formats.md, section 2).

Every preprocessing route (the built-in :mod:`~fmrirecon.preprocess.light`, a real
fMRIPrep run, or precomputed derivatives) ends in the same file names, so that the
GLM stage reads one layout only.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..paths import bids_path, run_entities

__all__ = ["derivative_paths", "derivative_files", "write_dataset_description"]


def derivative_paths(
    deriv_dir: str | Path,
    subject: str,
    task: str,
    run: int | str,
    space: str | None = None,
) -> dict[str, Path]:
    """fMRIPrep file names of one preprocessed run.

    Parameters
    ----------
    deriv_dir : str or Path
        Root of the derivatives dataset (holds ``dataset_description.json``).
    subject : str
        BIDS label without the ``sub-`` prefix (``"01"``).
    task : str
        BIDS task label.
    run : int or str
        Run label. A string is kept as written in the raw file name (fMRIPrep keeps
        ``run-1`` as ``run-1``); an int is zero-padded to two digits (``run-01``).
    space : str or None, default=None
        Output space label (``space-<space>`` entity). None or ``""`` for the native
        BOLD space, which has no ``space`` entity.

    Returns
    -------
    dict
        ``bold``, ``mask`` and ``confounds`` paths (``pathlib.Path``). The confounds
        file never carries a ``space`` entity, as in fMRIPrep.
    """
    for name, value in (("subject", subject), ("task", task)):
        if not value or not str(value).isalnum():
            raise ValueError(f"{name} label must be non-empty and alphanumeric, got {value!r}")
    if space and not str(space).replace("+", "").isalnum():
        raise ValueError(f"space label must be alphanumeric, got {space!r}")
    if isinstance(run, str):
        if not run.isdigit():
            raise ValueError(f"run label must be digits, got {run!r}")
    elif int(run) < 0:
        raise ValueError(f"run must be a non-negative integer, got {run}")
    else:
        run = f"{int(run):02d}"
    return derivative_files(deriv_dir, {"subject": subject, "task": task, "run": run}, space=space)


def derivative_files(deriv_dir: str | Path, row, space: str | None = None,
                     res: str | None = None) -> dict[str, Path]:
    """fMRIPrep's names of one run's preprocessed BOLD, brain mask and confounds.

    Parameters
    ----------
    deriv_dir : str or Path
        Root of the derivatives dataset.
    row : dict or namedtuple
        The run's entities as in the manifest (``subject``, ``session``, ``task``,
        ``acquisition``, ``ceagent``, ``reconstruction``, ``direction``, ``run``,
        ``echo``; empty ones left out): every one is kept, as fMRIPrep 23-25 keep them.
    space, res : str or None
        ``space-`` and ``res-`` entities of the BOLD and mask (None: native space); the
        confounds file carries neither.

    Returns
    -------
    dict
        ``bold``, ``mask`` and ``confounds`` paths (``pathlib.Path``).
    """
    entities = run_entities(row)
    spaced = {**entities, "space": space or None, "res": res or None}
    return {
        "bold": bids_path(deriv_dir, "func", "bold", ".nii.gz", **spaced, desc="preproc"),
        "mask": bids_path(deriv_dir, "func", "mask", ".nii.gz", **spaced, desc="brain"),
        "confounds": bids_path(deriv_dir, "func", "timeseries", ".tsv", **entities, desc="confounds"),
    }


def write_dataset_description(
    deriv_dir: str | Path, name: str, generated_by: list[dict] | dict | str
) -> Path:
    """Write a BIDS-derivatives ``dataset_description.json``.

    Parameters
    ----------
    deriv_dir : str or Path
        Root of the derivatives dataset; created if missing.
    name : str
        Dataset ``Name``.
    generated_by : list of dict, dict or str
        ``GeneratedBy`` entries (each at least ``{"Name": ...}``); a bare string is
        taken as one entry's ``Name``.

    Returns
    -------
    Path
        The written file.
    """
    if isinstance(generated_by, str):
        generated_by = [{"Name": generated_by}]
    elif isinstance(generated_by, dict):
        generated_by = [generated_by]
    generated_by = [dict(entry) for entry in generated_by]
    if not generated_by or any("Name" not in entry for entry in generated_by):
        raise ValueError("generated_by needs at least one entry, each with a 'Name'")

    deriv_dir = Path(deriv_dir)
    deriv_dir.mkdir(parents=True, exist_ok=True)
    description = {
        "Name": name,
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": generated_by,
    }
    path = deriv_dir / "dataset_description.json"
    path.write_text(json.dumps(description, indent=2) + "\n")
    return path
