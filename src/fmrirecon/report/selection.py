"""The model-selection section: how each fit's settings were chosen on held-out training
pairs (:mod:`fmrirecon.validation`), and whether a guard replaced it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Iterable

from .formatting import _fmt
from .records import _check_record


_ROLE_LABELS = {"candidate": "candidate", "ablation": "own ablation", "baseline pca": "pca baseline"}
_FALLBACK_TEXT = {"ablation": "fell back to its own ablation", "baseline pca": "fell back to the pca baseline"}


def _settings_label(settings: Mapping) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(settings.items())) or "as configured"


def _held_out_text(record: Mapping) -> str:
    # what the validation scored on: always part of the training pairs
    folds, n_images = int(record["folds"]), int(record["n_validation_images"])
    fit = [int(n) for n in record.get("n_fit_pairs") or []]
    fitted = (f"; fitted on {min(fit)}" + (f"–{max(fit)}" if max(fit) != min(fit) else "")
              + " pairs" + (" per fold" if folds > 1 else "")) if fit else ""
    if record["held_out"] == "runs":
        where = ("whole runs held out" if folds == 1 else f"whole runs held out in {folds} folds")
    else:
        where = ("images held out with their repetitions" if folds == 1
                 else f"images held out in {folds} folds, with their repetitions")
    return f"{n_images} training images scored ({where}){fitted}"


def validation_rows(record: Mapping) -> list[dict]:
    """Rows of the model-selection table for one subject and method.

    ``record``: ``{"subject", "method", "validation"}``, the last the
    ``_validation.json`` the fit wrote (:func:`fmrirecon.validation.fit_validated`).
    Every score in it is on held-out *training* pairs, never the test split.

    Returns
    -------
    list of dict
        Disabled validation: one row, ``kind="disabled"``, saying so. Otherwise one
        ``kind="entry"`` row per scored entry (candidates, the own ablation, the pca
        baseline): ``role``, ``settings``, ``pixcorr`` and ``ident2`` (mean over the
        held-out images, formatted), ``chosen``, ``by`` (which score chose), and the
        group's ``held_out`` text; then one ``kind="outcome"`` row: ``text`` (what was
        kept), ``fallback`` (None or the guard's role), ``reasons`` (the guards' notes)
        and ``fit_notes`` (guards that acted inside the validation fits).
    """
    _check_record(record, ("subject", "method", "validation"), "validation")
    data = json.loads(Path(record["validation"]).read_text())
    key = {"subject": f"sub-{record['subject']}", "method": record["method"]}
    if not data.get("enabled"):
        return [{**key, "kind": "disabled",
                 "text": "validation disabled: fitted with the configured settings, none chosen on "
                         "held-out training pairs and no guard against its ablation or the pca baseline"}]
    metric, chosen = data["metric"], data["chosen"]
    held_out = _held_out_text(data)
    rows = []
    for entry in data["entries"]:
        rows.append({**key, "kind": "entry", "held_out": held_out, "by": metric,
                     "role": _ROLE_LABELS.get(entry["role"], entry["role"]),
                     "settings": "—" if entry["role"] == "baseline pca" else _settings_label(entry["settings"]),
                     "pixcorr": _fmt(entry.get("pixcorr")), "ident2": _fmt(entry.get("ident2")),
                     "chosen": entry["role"] == chosen["role"] and entry["settings"] == chosen["settings"]})
    fallback = data.get("fallback")
    n_candidates = sum(e["role"] == "candidate" for e in data["entries"])
    guards = [{"ablation": "its own ablation", "baseline pca": "the pca baseline"}.get(e["role"], e["role"])
              for e in data["entries"] if e["role"] != "candidate"]
    if fallback is None:
        text = (f"kept {_settings_label(chosen['settings'])}"
                + (f", the best {metric} of {n_candidates} candidates" if n_candidates > 1 else "")
                + (f"; {' and '.join(guards)} did not replace it" if guards else ""))
    else:
        what = "" if fallback == "baseline pca" else f" ({_settings_label(chosen['settings'])})"
        text = (f"{_FALLBACK_TEXT.get(fallback, f'fell back to {fallback}')}{what}: the test rows of "
                f"{record['method']} are this model's")
    rows.append({**key, "kind": "outcome", "text": text, "fallback": fallback,
                 "reasons": list(data.get("notes") or []),
                 "fit_notes": list(data.get("validation_fit_notes") or [])})
    return rows


def _selection_groups(validation: Iterable[Mapping]) -> list[dict]:
    # one group of rows per subject and method, in the order of the metrics table
    groups = [{"rows": validation_rows(r)} for r in validation]
    for g in groups:
        g["subject"], g["method"] = g["rows"][0]["subject"], g["rows"][0]["method"]
        g["entries"] = [r for r in g["rows"] if r["kind"] == "entry"]
        g["outcome"] = next((r for r in g["rows"] if r["kind"] != "entry"), None)
    return sorted(groups, key=lambda g: (g["subject"], g["method"]))
