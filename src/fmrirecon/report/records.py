"""The long metrics table: every score of every evaluation record, baselines as rows.

Records come from the workflow (``report.smk``), never parsed from file names; a
record lacking a key is an error naming the record.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Iterable

import pandas as pd

from fmrirecon.evaluation import BASELINES, read_summary


#: Columns of the long metrics table. ``baseline`` is empty (n/a) for the method's own
#: score and names the baseline otherwise; ``size`` is the image side the metric was
#: computed at (pixels).
METRIC_COLUMNS = ["subject", "method", "split", "metric", "n", "baseline", "size", "mean",
                  "ci_low", "ci_high", "chance"]

SPLITS = ("test", "imagery")


#: Human names of the baselines (docs/formats.md, section 5).
BASELINE_LABELS = {
    "mean_image": "mean training image",
    "retrieval": "retrieval (nearest training image)",
    "shuffled": "shuffled pairs (wrong images)",
}


_STANDARD = ("pixcorr", "ssim", "ident2")


def _metric_table(rows: list[dict]) -> pd.DataFrame:
    # rows -> the long table with its column types (an empty table keeps them too)
    table = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    for col in ("n", "size"):
        table[col] = pd.to_numeric(table[col], errors="coerce").astype("Int64")
    for col in ("mean", "ci_low", "ci_high", "chance"):
        table[col] = pd.to_numeric(table[col], errors="coerce").astype(float)
    for col in ("subject", "method", "split", "metric"):
        table[col] = table[col].astype(str)
    table["baseline"] = table["baseline"].astype(object).where(table["baseline"].notna(), None)
    return table


def _check_record(record: Mapping, keys: Iterable[str], what: str) -> None:
    missing = [k for k in keys if k not in record]
    if missing:
        raise ValueError(f"{what} record {dict(record)!r}: no {', '.join(missing)}")


def _entry_rows(key: dict, metric: str, n, size, entry: dict) -> list[dict]:
    base = {**key, "metric": metric, "n": n, "size": size}
    rows = [{**base, "baseline": None, **{k: entry.get(k) for k in ("mean", "ci_low", "ci_high", "chance")}}]
    for name, b in (entry.get("baselines") or {}).items():
        rows.append({**base, "baseline": name, "chance": entry.get("chance"),
                     **{k: b.get(k) for k in ("mean", "ci_low", "ci_high")}})
    return rows


def collect_metrics(evaluations: Iterable[Mapping], field: Iterable[Mapping] = ()) -> pd.DataFrame:
    """Gather the summaries of every evaluation (and of the field's table) into one long table.

    Parameters
    ----------
    evaluations : iterable of mapping
        ``{"subject", "method", "split", "summary"}`` records; ``summary`` is an
        evaluation ``_summary.json``.
    field : iterable of mapping, optional
        ``{"subject", "split", "summary"}`` records of ``_fieldmetrics.json`` files;
        their metrics are named ``<key>_field`` (e.g. ``pixcorr_field``, at 425 px).

    Returns
    -------
    DataFrame
        Columns :data:`METRIC_COLUMNS`: one row per subject, method, split, metric
        (``pixcorr``, ``ssim``, ``ident2``, ``nway``, method metrics, field metrics),
        n (``nway`` only) and baseline (none for the method's own score).
    """
    rows, seen = [], {}
    for record in evaluations:
        _check_record(record, ("subject", "method", "split", "summary"), "evaluation")
        key = {k: str(record[k]) for k in ("subject", "method", "split")}
        ident = tuple(key.values())
        if ident in seen:
            raise ValueError(f"{record['summary']} and {seen[ident]} describe the same {ident}")
        seen[ident] = record["summary"]
        summary = read_summary(record["summary"])
        size = (summary.get("images") or {}).get("height")
        for metric, entry in summary.items():
            if metric == "nway":
                for n, values in entry.items():
                    rows += _entry_rows(key, "nway", int(n), size, values)
            elif isinstance(entry, Mapping) and "mean" in entry:
                rows += _entry_rows(key, metric, None, size if metric in _STANDARD else None, entry)
    for record in field:
        _check_record(record, ("subject", "split", "summary"), "field metrics")
        summary = json.loads(Path(record["summary"]).read_text())
        for method, entries in summary["methods"].items():
            key = {"subject": str(record["subject"]), "method": method, "split": str(record["split"])}
            for metric, entry in entries.items():
                size = summary["metrics"][metric]["size"]
                rows += _entry_rows(key, f"{metric}_field", None, size,
                                    {k: (math.nan if v is None and k != "chance" else v)
                                     for k, v in entry.items()})
    table = _metric_table(rows)
    order = {"pixcorr": 0, "ssim": 1, "ident2": 2, "nway": 3}
    table = (table.assign(_split=table["split"].map({s: i for i, s in enumerate(SPLITS)}).fillna(9),
                          _metric=table["metric"].map(order).fillna(len(order)),
                          _base=table["baseline"].map({b: i + 1 for i, b in enumerate(BASELINES)}).fillna(0))
             .sort_values(["subject", "method", "_split", "_metric", "metric", "n", "_base"], kind="stable")
             .drop(columns=["_split", "_metric", "_base"]).reset_index(drop=True))
    return table


def write_metrics_table(metrics: pd.DataFrame, path: str | Path) -> None:
    """Write the long metrics table as TSV (missing values as ``n/a``, as in BIDS)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    metrics.to_csv(path, sep="\t", index=False, na_rep="n/a")
