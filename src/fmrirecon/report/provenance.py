"""The provenance header: command, dates, commit, package versions, input checksum,
the configuration's departures from the defaults and what ran."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Iterable

import numpy as np
import yaml

from fmrirecon import __version__


#: Packages whose versions are printed in the provenance header.
KEY_PACKAGES = ("snakemake", "numpy", "scipy", "scikit-learn", "pandas", "nilearn", "nibabel",
                "torch", "torchvision", "scikit-image", "himalaya")


def sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def git_commit(folder: str | Path) -> str | None:
    """The checked-out commit of the repository at ``folder`` (``+dirty`` when it has
    uncommitted changes), or None outside a git repository."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def package_versions(names: Iterable[str] = KEY_PACKAGES) -> dict[str, str]:
    """Installed version of each package (``absent`` when not installed)."""
    out = {"python": platform.python_version(), "fmrirecon": __version__}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def config_diff(config: Mapping, defaults: Mapping, prefix: str = "") -> list[dict]:
    """The settings of ``config`` that differ from ``defaults``, as dotted keys.

    Returns
    -------
    list of dict
        ``{"key", "value", "default"}`` (values as compact YAML), sorted by key.
    """
    out = []
    for key in sorted(set(config) | set(defaults), key=str):
        here, there = config.get(key, "(absent)"), defaults.get(key, "(not a default)")
        name = f"{prefix}{key}"
        if isinstance(here, Mapping) and isinstance(there, Mapping):
            out += config_diff(here, there, f"{name}.")
        elif _plain(here) != _plain(there):
            out.append({"key": name, "value": _short(here), "default": _short(there)})
    return out


def _short(value) -> str:
    text = yaml.safe_dump(_plain(value), default_flow_style=True, width=10_000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _plain(obj):
    # Config values from Snakemake or code may be Paths, numpy scalars or tuples;
    # safe_dump only knows plain types.
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def provenance(what_ran: Mapping, config: Mapping, defaults: Mapping | None = None,
               run_info: str | Path | None = None, repository: str | Path | None = None) -> dict:
    """The provenance header of the report.

    Parameters
    ----------
    what_ran : mapping
        From the workflow (``report.smk``): ``entry`` (``betas``, ``bids`` or
        ``simulated``), ``dataset`` (name), ``input`` (the BIDS folder or betas file),
        ``preprocessing``, ``glm`` (None where they did not run), ``methods``
        (config name -> implementation), ``subjects``, ``splits``.
    config, defaults : mapping
        The run's configuration and the schema's defaults (for the diff).
    run_info : path, optional
        JSON written when the run started (``command``, ``started``, ``snakemake``).
    repository : path, optional
        The workflow's folder, for its git commit.

    Returns
    -------
    dict
        ``what_ran`` plus ``command``, ``started``, ``date`` (of the report), ``commit``,
        ``versions``, ``checksum`` (SHA-256 of a betas file input) and ``config_diff``.
    """
    info = {}
    if run_info and Path(run_info).is_file():
        info = json.loads(Path(run_info).read_text())
    out = dict(what_ran)
    out["command"] = info.get("command", "n/a (run without the workflow's start hook)")
    out["started"] = info.get("started")
    out["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out["commit"] = (git_commit(repository) if repository else None) or f"fmrirecon {__version__} (no git checkout)"
    out["versions"] = package_versions()
    checksum = None
    if what_ran.get("entry") == "betas" and what_ran.get("input") and Path(what_ran["input"]).is_file():
        checksum = sha256(what_ran["input"])
    out["checksum"] = checksum
    out["config_diff"] = config_diff(config, defaults or {})
    out.setdefault("methods", {})
    out["entry_text"], out["ran_text"] = _what_ran_text(out)
    return out


def _what_ran_text(ran: Mapping) -> tuple[str, str]:
    # one sentence each: where the data came from, and which stages made the betas
    entry = ran.get("entry")
    name = ran.get("dataset") or "unnamed dataset"
    if entry == "betas":
        where = f"ready-made single-trial betas (entry point betas:) of {name}: {ran.get('input')}"
        made = "betas imported as given: no preprocessing, no GLM"
    elif entry == "simulated":
        where = f"the built-in simulated study ({ran.get('input')})"
        made = f"preprocessing {ran.get('preprocessing')}, single-trial GLM {ran.get('glm')}"
    else:
        where = f"BIDS dataset {name}: {ran.get('input')}"
        made = f"preprocessing {ran.get('preprocessing')}, single-trial GLM {ran.get('glm')}"
    voxels = ran.get("voxels")
    if voxels:
        made += f"; voxels: {voxels}"
    subjects = ran.get("subjects") or []
    if ran.get("methods"):
        made += (f"; decoders fitted per subject ({len(subjects)}: {', '.join(subjects)}) on the training "
                 f"trials, evaluated on the repetition-averaged {' and '.join(ran.get('splits') or ['test'])} trials")
    if ran.get("classify"):
        made += f"; {ran['classify']}"
    return where, made
