"""The field's table (the papers' metrics, :mod:`fmrirecon.perceptual_metrics`) per split,
with its means over subjects and the networks whose weights were found."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from fmrirecon.evaluation import BASELINES

from .formatting import _ci
from .records import BASELINE_LABELS, SPLITS
from .tables import _beats, across_subjects


def _field_mean_rows(records: list[Mapping], n_boot: int, seed: int) -> list[dict]:
    """Rows of the field's table averaged over subjects (from the per-image TSVs)."""
    from fmrirecon.perceptual_metrics import FIELD_METRICS

    tables = {r["subject"]: pd.read_csv(r["metrics"], sep="\t", na_values="n/a")
              for r in records if r.get("metrics")}
    if len(tables) < 2:
        return []
    methods = sorted(set.intersection(*(set(t["method"]) for t in tables.values())))
    rows = []
    for method in methods:
        variants = [("method", method, "value")] + [("baseline", BASELINE_LABELS[b], b) for b in BASELINES]
        for kind, label, column in variants:
            cells = []
            for key in FIELD_METRICS:
                parts = {s: t.loc[(t["method"] == method) & (t["metric"] == key), column].to_numpy(dtype=float)
                         for s, t in tables.items()}
                if any(len(v) == 0 for v in parts.values()):
                    cells.append({"text": "no weights" if kind == "method" else "",
                                  "cls": "missing" if kind == "method" else ""})
                    continue
                entry = across_subjects(parts, n_boot=n_boot, seed=seed)
                cells.append({"text": _ci(entry) if entry["n_subjects"] else "", "cls": ""})
            if any(c["text"] and c["text"] != "no weights" for c in cells):
                rows.append({"subject": f"{len(tables)} subjects" if kind == "method" else "",
                             "label": label, "kind": kind, "cells": cells})
    return rows


def _field_tables(field: list[Mapping], n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """The papers' table per split: rows subject x method (+ baselines); "no weights" columns."""
    from fmrirecon.perceptual_metrics import FIELD_METRICS

    out = {}
    for record in sorted(field, key=lambda r: (SPLITS.index(r["split"]) if r["split"] in SPLITS else 9,
                                               r["subject"])):
        summary = json.loads(Path(record["summary"]).read_text())
        table = out.setdefault(record["split"], {"split": record["split"], "rows": [], "networks": {}})
        table["networks"].update(summary["networks"])
        for method in sorted(summary["methods"]):
            entries = summary["methods"][method]
            cells, sub = [], {b: [] for b in BASELINES}
            for key, spec in FIELD_METRICS.items():
                network = spec["network"]
                if key not in entries:
                    status = summary["networks"].get(network, {})
                    text = "error" if status.get("error") else "no weights"
                    cells.append({"text": text, "cls": "missing"})
                    for b in BASELINES:
                        sub[b].append({"text": "", "cls": ""})
                    continue
                entry = entries[key]
                higher = spec["score"] != "distance"
                bound = entry["ci_low"] if higher else entry["ci_high"]
                bases = [b["mean"] for b in entry["baselines"].values()]
                if spec["score"] == "ident":
                    bases.append(0.5)
                cells.append({"text": _ci(entry), "cls": "beats" if _beats(bound, bases, higher) else ""})
                for b in BASELINES:
                    if b in entry["baselines"]:
                        sub[b].append({"text": _ci(entry["baselines"][b]), "cls": ""})
                    elif b == "shuffled" and spec["score"] == "ident":
                        sub[b].append({"text": "0.500 (chance)", "cls": ""})
                    else:
                        sub[b].append({"text": "", "cls": ""})
            table["rows"].append({"subject": f"sub-{record['subject']}", "label": method, "kind": "method",
                                  "cells": cells})
            for b in BASELINES:
                if any(c["text"] for c in sub[b]):
                    table["rows"].append({"subject": "", "label": BASELINE_LABELS[b], "kind": "baseline",
                                          "cells": sub[b]})
    headers = []
    for key, spec in FIELD_METRICS.items():
        arrow = "↓" if spec["score"] == "distance" else "↑"
        how = {"pixcorr": "pixel r", "ssim": "grayscale", "ident": f"2-way, {spec['layer']}",
               "distance": f"corr. distance, {spec['layer']}"}[spec["score"]]
        headers.append(f"{spec['label']} {arrow} ({how}, {spec['size']} px)")
    tables = list(out.values())
    for table in tables:
        table["headers"] = headers
        table["mean_rows"] = _field_mean_rows([r for r in field if r["split"] == table["split"]], n_boot, seed)
        table["networks"] = [
            {"name": name, "found": status["found"], "path": status["path"],
             "weights": status["weights"], "error": status.get("error", "")}
            for name, status in table["networks"].items()
        ]
    return tables
