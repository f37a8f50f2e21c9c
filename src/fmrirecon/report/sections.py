"""Sections after the main ones: training curves, category classification (and its rows of
the long table) and compute resources per stage."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .formatting import _fmt, figure_to_base64
from .records import _check_record, _metric_table


def training_curves_section(curves: Iterable[Mapping]) -> dict | None:
    """A report section plotting the per-epoch losses of iteratively trained methods.

    Parameters
    ----------
    curves : iterable of mapping
        ``{"label", "curves"}``: a label (e.g. ``sub-01 selfsup``, ``generator``) and a
        ``_curves.tsv`` (columns ``epoch`` plus one per loss term, optionally ``phase``
        and ``variant``); empty tables are skipped.

    Returns
    -------
    dict or None
        An ``extra_sections`` entry, or None when no method trains iteratively.
    """
    tables = []
    for record in curves:
        _check_record(record, ("label", "curves"), "training curves")
        table = pd.read_csv(record["curves"], sep="\t", na_values="n/a")
        if len(table):
            tables.append((record["label"], table))
    if not tables:
        return None
    ncols = min(3, len(tables))
    nrows = math.ceil(len(tables) / ncols)
    fig = Figure(figsize=(4.4 * ncols, 3.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (label, table) in zip(axes, tables):
        groups = [c for c in ("phase", "variant") if c in table.columns]
        # everything numeric is a loss term, except the epoch and its wall time
        losses = [c for c in table.select_dtypes("number").columns if c not in ("epoch", "seconds")]
        for key, part in (table.groupby(groups) if groups else [((), table)]):
            key = key if isinstance(key, tuple) else (key,)
            for loss in losses:
                if part[loss].notna().any():
                    ax.plot(part["epoch"], part[loss], label=" ".join(map(str, (*key, loss))))
        ax.set_yscale("log")
        ax.set_title(label, fontsize=11)
        ax.set_xlabel("epoch", fontsize=10)
        ax.set_ylabel("loss", fontsize=10)
        ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for ax in axes[len(tables):]:
        ax.set_visible(False)
    return {"title": "Training curves", "figure": fig}


def _read_classification(record: Mapping) -> dict:
    _check_record(record, ("subject", "classifier", "summary"), "classification")
    return json.loads(Path(record["summary"]).read_text())


def classification_metrics(records: Iterable[Mapping]) -> pd.DataFrame:
    """Rows of the long metrics table for category classification results.

    Parameters
    ----------
    records : iterable of mapping
        ``{"subject", "classifier", "summary"}`` with the ``_classification.json`` of
        :func:`fmrirecon.stages.classify`.

    Returns
    -------
    DataFrame
        Columns :data:`METRIC_COLUMNS`: ``method`` is the classifier, ``split`` the
        trials classified, ``metric`` ``accuracy_<label>`` with its bootstrap interval
        and chance level, ``n`` the number of items.
    """
    rows = []
    for record in records:
        summary = _read_classification(record)
        accuracy = summary["accuracy"]
        rows.append({"subject": record["subject"], "method": record["classifier"], "split": summary["split"],
                     "metric": f"accuracy_{summary['label']}", "n": summary["n_items"], "baseline": None,
                     "size": None, **{k: accuracy[k] for k in ("mean", "ci_low", "ci_high", "chance")}})
    return _metric_table(rows)


def classification_section(records: Iterable[Mapping]) -> dict | None:
    """A report section: accuracy per subject and the pooled confusion matrix.

    ``records``: ``{"subject", "classifier", "summary", "items"}`` (the
    ``_classification.json`` and per-item ``_classification.tsv``). Returns None
    without classification results.
    """
    records = list(records)
    if not records:
        return None
    rows, items = [], []
    for record in records:
        s = _read_classification(record)
        acc, binom = s["accuracy"], s["binomial"]
        rows.append({"subject": f"sub-{record['subject']}", "label": s["label"],
                     "classifier": record["classifier"], "trials": s["split"], "items": s["n_items"],
                     "runs left out": s["n_groups"], "accuracy": _fmt(acc["mean"]),
                     "95% CI (bootstrap)": f"[{_fmt(acc['ci_low'])}, {_fmt(acc['ci_high'])}]",
                     "95% CI (exact)": f"[{_fmt(binom['ci_low'])}, {_fmt(binom['ci_high'])}]",
                     "chance": _fmt(acc["chance"]), "p (binomial)": f"{binom['p_value']:.2g}"})
        items.append(pd.read_csv(record["items"], sep="\t"))
    table = pd.DataFrame(rows)
    pooled = pd.concat(items, ignore_index=True)
    classes = sorted(set(pooled["label"].astype(str)) | set(pooled["predicted"].astype(str)))
    confusion = (pd.crosstab(pooled["label"].astype(str), pooled["predicted"].astype(str))
                 .reindex(index=classes, columns=classes, fill_value=0))
    fig = Figure(figsize=(1.6 + 0.5 * len(classes), 1.2 + 0.5 * len(classes)), layout="constrained")
    ax = fig.subplots()
    shown = ax.imshow(confusion.to_numpy() / np.maximum(confusion.to_numpy().sum(1, keepdims=True), 1),
                      cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=10)
    ax.set_yticks(range(len(classes)), classes, fontsize=10)
    ax.set_xlabel("predicted", fontsize=11)
    ax.set_ylabel("true", fontsize=11)
    ax.set_title("Confusion (row-normalised, all subjects)", fontsize=11)
    fig.colorbar(shown, ax=ax, shrink=0.8)
    html = (table.to_html(index=False, escape=True, classes="data", border=0) +
            f'<img alt="confusion matrix" src="data:image/png;base64,{figure_to_base64(fig)}">')
    return {"title": "Category classification (leave one run out)", "html": html}


def resources_section(benchmark_dir: str | Path) -> dict | None:
    """A report section: wall time and peak memory of each stage of the workflow.

    Reads the Snakemake benchmark files under ``benchmark_dir`` (one TSV per job,
    ``<rule>/<job>.tsv`` or ``<rule>.tsv``, columns ``s`` and ``max_rss`` in MB among
    others). Jobs run in an earlier invocation keep their file, so the table covers
    every job whose output is current.

    Returns
    -------
    dict or None
        ``{"title", "table"}`` with one row per rule (longest total first) and a last
        row ``all stages``: jobs, total and longest wall time (s) and the largest
        peak resident memory of a job (MB); None without benchmark files.
    """
    rows = []
    root = Path(benchmark_dir)
    for path in sorted(root.rglob("*.tsv")):
        table = pd.read_csv(path, sep="\t")
        missing = {"s", "max_rss"} - set(table.columns)
        if missing:
            raise ValueError(f"{path}: not a Snakemake benchmark file (no {sorted(missing)})")
        rule = path.relative_to(root).parts[0].removesuffix(".tsv")
        # a failed measurement is written as "-"; repeats are rows: keep their median
        values = table[["s", "max_rss"]].apply(pd.to_numeric, errors="coerce").median()
        rows.append({"rule": rule, "s": values["s"], "max_rss": values["max_rss"]})
    if not rows:
        return None
    jobs = pd.DataFrame(rows)
    summary = (jobs.groupby("rule", sort=False)
               .agg(jobs=("s", "size"), total_s=("s", "sum"), longest_s=("s", "max"),
                    peak_rss_mb=("max_rss", "max"))
               .sort_values("total_s", ascending=False).reset_index())
    total = pd.DataFrame([{"rule": "all stages", "jobs": int(summary["jobs"].sum()),
                           "total_s": summary["total_s"].sum(), "longest_s": summary["longest_s"].max(),
                           "peak_rss_mb": summary["peak_rss_mb"].max()}])
    summary = pd.concat([summary, total], ignore_index=True)
    for col in ("total_s", "longest_s", "peak_rss_mb"):
        summary[col] = summary[col].round(1)
    summary = summary.rename(columns={"rule": "stage (rule)", "jobs": "jobs",
                                      "total_s": "total wall time (s)", "longest_s": "longest job (s)",
                                      "peak_rss_mb": "peak memory of a job (MB)"})
    return {"title": "Compute resources per stage (wall time, peak memory)", "table": summary,
            "note": "Summed over the jobs whose outputs are current (Snakemake benchmark files); "
                    "jobs of one run overlap in time, so the total exceeds the run's wall time."}
