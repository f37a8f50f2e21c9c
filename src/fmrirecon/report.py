"""The HTML report: metrics of every subject, method and split on one page.

The report is one self-contained HTML file (figures embedded as base64 PNG, inline
CSS) so that it can be mailed or opened offline. Metrics are read from the
``_summary.json`` files of the evaluation stage and kept in one long table
(:func:`collect_metrics`), which is also written next to the report.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Iterable

import jinja2
import numpy as np
import pandas as pd
import yaml
from markupsafe import Markup
from matplotlib.figure import Figure
from PIL import Image

from fmrirecon import __version__
from fmrirecon.evaluation import read_summary

#: Columns of the long metrics table.
METRIC_COLUMNS = ["subject", "method", "split", "metric", "n", "mean", "ci_low", "ci_high",
                  "chance"]

SPLITS = ("test", "imagery")

# sub-<label>_desc-<method><split>_<suffix>.<ext>; the method is lowercase alphanumeric
# and the split is glued to it (formats.md, sections 4-5).
_NAME = re.compile(
    r"^sub-(?P<subject>[A-Za-z0-9]+)_desc-(?P<method>[a-z0-9]+?)(?P<split>test|imagery)"
    r"_(?P<suffix>[A-Za-z0-9]+)\.(?P<ext>[A-Za-z0-9.]+)$"
)

_METRIC_ORDER = {"pixcorr": 0, "ssim": 1, "ident2": 2, "nway": 3}
_METRIC_LABELS = {"pixcorr": "PixCorr", "ssim": "SSIM", "ident2": "2-way ident. (exhaustive)"}


def parse_name(path: str | Path) -> dict:
    """Subject, method and split from an evaluation or reconstruction file name.

    Parameters
    ----------
    path : str or Path
        A file named ``sub-<subject>_desc-<method><split>_<suffix>.<ext>``, e.g.
        ``sub-01_desc-pcatest_summary.json``; ``<split>`` is ``test`` or ``imagery``.

    Returns
    -------
    dict
        ``{"subject": "01", "method": "pca", "split": "test"}``.

    Raises
    ------
    ValueError
        If the name does not fit the pattern; the message names the file.
    """
    name = Path(path).name
    match = _NAME.match(name)
    if match is None:
        raise ValueError(
            f"{name!r} ({path}): expected sub-<subject>_desc-<method><split>_<suffix>.<ext> "
            f"with <method> lowercase alphanumeric and <split> one of {', '.join(SPLITS)}"
        )
    return {key: match[key] for key in ("subject", "method", "split")}


def index_by_name(paths: Iterable[str | Path]) -> dict[tuple[str, str, str], Path]:
    """Map ``(subject, method, split)`` to each path, parsed with :func:`parse_name`.

    Convenient to turn the list of ``_recon.png`` grids of a workflow rule into the
    ``recon_pngs`` argument of :func:`build_report`.
    """
    out = {}
    for path in paths:
        key = tuple(parse_name(path).values())
        if key in out:
            raise ValueError(f"{path} and {out[key]} describe the same {key}")
        out[key] = Path(path)
    return out


def _metric_table(rows: list[dict]) -> pd.DataFrame:
    # rows -> the long table with its column types (an empty table keeps them too)
    table = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    table["n"] = table["n"].astype("Int64")
    for col in ("mean", "ci_low", "ci_high", "chance"):
        table[col] = pd.to_numeric(table[col], errors="coerce").astype(float)
    for col in ("subject", "method", "split", "metric"):
        table[col] = table[col].astype(str)
    return table


def collect_metrics(summary_paths: Iterable[str | Path]) -> pd.DataFrame:
    """Gather ``_summary.json`` files into one long table.

    Parameters
    ----------
    summary_paths : iterable of str or Path
        Summary files named as :func:`parse_name` expects.

    Returns
    -------
    DataFrame
        One row per subject, method, split and metric with columns ``subject``,
        ``method``, ``split``, ``metric`` (``pixcorr``, ``ssim``, ``ident2``, ``nway``),
        ``n`` (candidate-set size for ``nway``, missing otherwise), ``mean``, ``ci_low``,
        ``ci_high`` and ``chance`` (missing for SSIM).
    """
    rows, seen = [], {}
    for path in summary_paths:
        key = parse_name(path)
        ident = tuple(key.values())
        if ident in seen:
            raise ValueError(f"{path} and {seen[ident]} describe the same {ident}")
        seen[ident] = path
        summary = read_summary(path)
        for metric, entry in summary.items():
            entries = entry.items() if metric == "nway" else [(None, entry)]
            for n, values in entries:
                rows.append({
                    **key, "metric": metric, "n": None if n is None else int(n),
                    **{k: values.get(k) for k in ("mean", "ci_low", "ci_high", "chance")},
                })
    table = _metric_table(rows)
    # Readable order: test before imagery, metrics as in the summary files.
    table = (table.assign(_split=table["split"].map({s: i for i, s in enumerate(SPLITS)}),
                          _metric=table["metric"].map(_METRIC_ORDER).fillna(len(_METRIC_ORDER)))
             .sort_values(["subject", "method", "_split", "_metric", "n"], kind="stable")
             .drop(columns=["_split", "_metric"]).reset_index(drop=True))
    return table


def write_metrics_table(metrics: pd.DataFrame, path: str | Path) -> None:
    """Write the long metrics table as TSV (missing values as ``n/a``, as in BIDS)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    metrics.to_csv(path, sep="\t", index=False, na_rep="n/a")


# --- rendering helpers ---------------------------------------------------------------


def _png_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def figure_to_base64(fig: Figure, dpi: int = 110) -> str:
    """PNG bytes of a matplotlib figure, base64-encoded for a ``data:`` URI."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return _png_base64(buffer.getvalue())


def _label(metric: str, n) -> str:
    if metric == "nway":
        return f"{n}-way ident."
    return _METRIC_LABELS.get(metric, metric)


def _fmt(value, digits: int = 3) -> str:
    if value is None or pd.isna(value):
        return "n/a"
    return f"{value:.{digits}f}"


def _columns(metrics: pd.DataFrame) -> list[tuple[str, object]]:
    # (metric, n) pairs in display order.
    pairs = metrics[["metric", "n"]].drop_duplicates()
    pairs = pairs.assign(_o=pairs["metric"].map(_METRIC_ORDER).fillna(len(_METRIC_ORDER)))
    pairs = pairs.sort_values(["_o", "n"])
    return [(m, None if pd.isna(n) else int(n)) for m, n in zip(pairs["metric"], pairs["n"])]


def _select(metrics: pd.DataFrame, metric: str, n) -> pd.DataFrame:
    rows = metrics[metrics["metric"] == metric]
    return rows[rows["n"].isna()] if n is None else rows[rows["n"] == n]


def _summary_table(metrics: pd.DataFrame) -> dict:
    columns = _columns(metrics)
    chance = []
    for metric, n in columns:
        values = _select(metrics, metric, n)["chance"].dropna().unique()
        chance.append(_fmt(values[0]) if len(values) == 1 else "n/a")
    rows = []
    keys = metrics[["split", "subject", "method"]].drop_duplicates()
    keys = keys.assign(_s=keys["split"].map({s: i for i, s in enumerate(SPLITS)}).fillna(9))
    for _, key in keys.sort_values(["_s", "subject", "method"]).iterrows():
        here = metrics[(metrics["split"] == key["split"]) & (metrics["subject"] == key["subject"])
                       & (metrics["method"] == key["method"])]
        cells = []
        for metric, n in columns:
            sel = _select(here, metric, n)
            if sel.empty:
                cells.append("")
                continue
            r = sel.iloc[0]
            cells.append(f"{_fmt(r['mean'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]")
        rows.append({"subject": f"sub-{key['subject']}", "method": key["method"],
                     "split": key["split"], "cells": cells})
    return {"headers": [_label(m, n) for m, n in columns], "chance": chance, "rows": rows}


def _errors(rows: pd.DataFrame) -> np.ndarray:
    low = np.nan_to_num(rows["mean"].to_numpy() - rows["ci_low"].to_numpy())
    high = np.nan_to_num(rows["ci_high"].to_numpy() - rows["mean"].to_numpy())
    return np.vstack([np.clip(low, 0, None), np.clip(high, 0, None)])


def _bar_figure(metrics: pd.DataFrame, split: str) -> Figure | None:
    data = metrics[(metrics["split"] == split) & (metrics["metric"] != "nway")]
    names = [m for m, _ in _columns(data)]
    if not names:
        return None
    subjects = sorted(data["subject"].unique())
    methods = sorted(data["method"].unique())
    fig = Figure(figsize=(3.6 * len(names), 3.2), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    width = min(0.8 / len(methods), 0.3)
    x = np.arange(len(subjects))
    colours = [f"C{i % 10}" for i in range(len(methods))]
    for ax, name in zip(axes, names):
        rows = data[data["metric"] == name]
        for k, method in enumerate(methods):
            # Reindex on subjects so a missing subject leaves a gap, not a shifted bar.
            sel = rows[rows["method"] == method].set_index("subject").reindex(subjects)
            ax.bar(x + (k - (len(methods) - 1) / 2) * width, sel["mean"].to_numpy(), width,
                   yerr=_errors(sel), capsize=3, color=colours[k], label=method)
        chance = rows["chance"].dropna().unique()
        if len(chance) == 1:
            ax.axhline(chance[0], color="0.3", linestyle="--", linewidth=1, label="chance")
        ax.set_xticks(x, [f"sub-{s}" for s in subjects])
        ax.set_title(_label(name, None))
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].legend(fontsize="small", frameon=False)
    fig.suptitle(f"{split} images: mean and 95% bootstrap CI")
    return fig


def _nway_figure(metrics: pd.DataFrame, split: str) -> Figure | None:
    data = metrics[(metrics["split"] == split) & (metrics["metric"] == "nway")]
    data = data.dropna(subset=["n"])
    if data.empty:
        return None
    subjects = sorted(data["subject"].unique())
    methods = sorted(data["method"].unique())
    ncols = min(4, len(subjects))
    nrows = math.ceil(len(subjects) / ncols)
    fig = Figure(figsize=(3.6 * ncols, 3.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    n_all = np.sort(data["n"].astype(int).unique())
    grid = np.linspace(n_all.min(), n_all.max(), 200) if len(n_all) > 1 else n_all
    for ax, subject in zip(axes, subjects):
        for k, method in enumerate(methods):
            sel = data[(data["subject"] == subject) & (data["method"] == method)].sort_values("n")
            if sel.empty:
                continue
            n = sel["n"].astype(int).to_numpy()
            ax.plot(n, sel["mean"], marker="o", color=f"C{k % 10}", label=method)
            ax.fill_between(n, sel["ci_low"], sel["ci_high"], color=f"C{k % 10}", alpha=0.2,
                            linewidth=0)
        ax.plot(grid, 1 / grid, color="0.3", linestyle="--", linewidth=1, label="chance (1/n)")
        if n_all.max() / n_all.min() > 20:
            ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("n (candidates)")
        ax.set_title(f"sub-{subject}")
        ax.spines[["top", "right"]].set_visible(False)
    for ax in axes[len(subjects):]:
        ax.set_visible(False)
    axes[0].set_ylabel("identification accuracy")
    axes[0].legend(fontsize="small", frameon=False)
    fig.suptitle(f"{split} images: n-way identification")
    return fig


def _grid_entries(recon_pngs: Mapping) -> list[dict]:
    by_subject: dict[str, list[dict]] = {}
    for (subject, method, split), path in sorted(recon_pngs.items()):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"reconstruction grid {path} not found")
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            width = img.width
        # Small simulated grids are blown up (pixelated) so their content is visible.
        scale = max(1, min(8, 720 // max(width, 1)))
        by_subject.setdefault(subject, []).append({
            "method": method, "split": split, "png": _png_base64(data),
            "width": width * scale, "name": path.name,
        })
    return [{"subject": f"sub-{s}", "grids": g} for s, g in by_subject.items()]


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


def _extra(sections: Iterable[dict]) -> list[dict]:
    out = []
    for i, section in enumerate(sections):
        if "title" not in section:
            raise ValueError(f"extra section {i} has no 'title'")
        kinds = [k for k in ("html", "figure", "table") if k in section]
        if len(kinds) != 1:
            raise ValueError(f"extra section {section['title']!r} needs exactly one of "
                             f"'html', 'figure', 'table', got {kinds}")
        kind = kinds[0]
        if kind == "html":
            content = Markup(section["html"])  # trusted: written by our own stages
        elif kind == "figure":
            content = figure_to_base64(section["figure"])
        else:
            content = Markup(section["table"].to_html(index=False, na_rep="n/a", escape=True,
                                                      classes="data", border=0))
        out.append({"id": f"extra-{i + 1}", "title": section["title"], "kind": kind,
                    "content": content})
    return out


def _template() -> jinja2.Template:
    text = (resources.files("fmrirecon") / "templates" / "report.html.j2").read_text("utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    return env.from_string(text)


def build_report(
    metrics: pd.DataFrame,
    recon_pngs: Mapping[tuple[str, str, str], str | Path],
    config: Mapping,
    out_html: str | Path,
    extra_sections: list[dict] | None = None,
    title: str = "fmrirecon report",
) -> Path:
    """Write the self-contained HTML report.

    Parameters
    ----------
    metrics : DataFrame
        Long metrics table from :func:`collect_metrics`.
    recon_pngs : mapping
        ``(subject, method, split)`` -> reconstruction grid PNG (true images over
        reconstructions); see :func:`index_by_name`.
    config : mapping
        The workflow configuration, shown as YAML.
    out_html : str or Path
        Report file to write.
    extra_sections : list of dict, optional
        Sections appended after the main ones, each ``{"title": str}`` plus exactly one
        of ``"html"`` (str, trusted markup inserted as is), ``"figure"`` (a matplotlib
        Figure) or ``"table"`` (a DataFrame).
    title : str, default "fmrirecon report"
        Page title.

    Returns
    -------
    Path
        ``out_html``.
    """
    missing = set(METRIC_COLUMNS) - set(metrics.columns)
    if missing:
        raise ValueError(f"metrics table lacks columns {sorted(missing)}")
    splits = [s for s in SPLITS if s in set(metrics["split"])]
    splits += sorted(set(metrics["split"]) - set(splits))
    figures = []
    for split in splits:
        for kind, make in (("bars", _bar_figure), ("nway", _nway_figure)):
            fig = make(metrics, split)
            if fig is not None:
                figures.append({"split": split, "kind": kind, "png": figure_to_base64(fig)})
    html = _template().render(
        title=title,
        version=__version__,
        subjects=[f"sub-{s}" for s in sorted(metrics["subject"].unique())],
        methods=sorted(metrics["method"].unique()),
        splits=splits,
        table=_summary_table(metrics),
        bars=[f for f in figures if f["kind"] == "bars"],
        curves=[f for f in figures if f["kind"] == "nway"],
        grids=_grid_entries(recon_pngs),
        config_yaml=yaml.safe_dump(_plain(config), sort_keys=False, default_flow_style=False),
        extra=_extra(extra_sections or []),
    )
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(html, encoding="utf-8")
    return out_html


def training_curves_section(history_paths: Iterable[str | Path],
                            named: Mapping[str, str | Path] | None = None) -> dict | None:
    """A report section plotting the per-epoch losses of iteratively trained methods.

    Parameters
    ----------
    history_paths : iterable of path
        ``sub-<s>_desc-<method>_curves.tsv`` files (columns ``epoch`` plus one per
        loss term, optionally ``phase`` and ``variant``); empty tables are skipped.
    named : mapping, optional
        Further curves of the same layout, label -> path (e.g. the generator, shared by
        subjects and methods).

    Returns
    -------
    dict or None
        An ``extra_sections`` entry, or None when no method trains iteratively.
    """
    tables = []
    for path in history_paths:
        table = pd.read_csv(path, sep="\t", na_values="n/a")
        if len(table):
            match = re.match(r"sub-([A-Za-z0-9]+)_desc-([a-z0-9]+)_curves", Path(path).name)
            if match is None:
                raise ValueError(f"{path}: expected sub-<subject>_desc-<method>_curves.tsv")
            tables.append((f"sub-{match[1]} {match[2]}", table))
    for label, path in (named or {}).items():
        table = pd.read_csv(path, sep="\t", na_values="n/a")
        if len(table):
            tables.append((label, table))
    if not tables:
        return None
    fig = Figure(figsize=(4.5 * len(tables), 3.2), layout="constrained")
    axes = fig.subplots(1, len(tables), squeeze=False)
    for ax, (label, table) in zip(axes[0], tables):
        groups = [c for c in ("phase", "variant") if c in table.columns]
        # everything numeric is a loss term, except the epoch and its wall time
        losses = [c for c in table.select_dtypes("number").columns if c not in ("epoch", "seconds")]
        for key, part in (table.groupby(groups) if groups else [((), table)]):
            key = key if isinstance(key, tuple) else (key,)
            for loss in losses:
                if part[loss].notna().any():
                    ax.plot(part["epoch"], part[loss], label=" ".join(map(str, (*key, loss))))
        ax.set(title=label, xlabel="epoch", ylabel="loss", yscale="log")
        ax.legend(fontsize=6)
    return {"title": "Training curves", "figure": fig}


_CLASSIFICATION = re.compile(r"^sub-(?P<subject>[A-Za-z0-9]+)_desc-(?P<classifier>[a-z0-9]+)_classification\.json$")


def _read_classification(path) -> tuple[str, str, dict]:
    match = _CLASSIFICATION.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path}: expected sub-<subject>_desc-<classifier>_classification.json")
    return match["subject"], match["classifier"], json.loads(Path(path).read_text())


def classification_metrics(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Rows of the long metrics table for category classification results.

    Parameters
    ----------
    paths : iterable of path
        ``sub-<s>_desc-<classifier>_classification.json`` files
        (:func:`fmrirecon.stages.classify`).

    Returns
    -------
    DataFrame
        Columns :data:`METRIC_COLUMNS`: ``method`` is the classifier, ``split`` the
        trials classified, ``metric`` ``accuracy_<label>`` with its bootstrap interval
        and chance level, ``n`` the number of items.
    """
    rows = []
    for path in paths:
        subject, classifier, summary = _read_classification(path)
        accuracy = summary["accuracy"]
        rows.append({"subject": subject, "method": classifier, "split": summary["split"],
                     "metric": f"accuracy_{summary['label']}", "n": summary["n_items"],
                     **{k: accuracy[k] for k in ("mean", "ci_low", "ci_high", "chance")}})
    return _metric_table(rows)


def classification_section(paths: Iterable[str | Path]) -> dict | None:
    """A report section: accuracy per subject and the pooled confusion matrix.

    Reads each ``_classification.json`` and the per-item ``_classification.tsv``
    beside it. Returns None without classification results.
    """
    paths = list(paths)
    if not paths:
        return None
    rows, items = [], []
    for path in paths:
        subject, classifier, s = _read_classification(path)
        acc, binom = s["accuracy"], s["binomial"]
        rows.append({"subject": f"sub-{subject}", "label": s["label"], "classifier": classifier,
                     "trials": s["split"], "items": s["n_items"], "runs left out": s["n_groups"],
                     "accuracy": _fmt(acc["mean"]),
                     "95% CI (bootstrap)": f"[{_fmt(acc['ci_low'])}, {_fmt(acc['ci_high'])}]",
                     "95% CI (exact)": f"[{_fmt(binom['ci_low'])}, {_fmt(binom['ci_high'])}]",
                     "chance": _fmt(acc["chance"]), "p (binomial)": f"{binom['p_value']:.2g}"})
        items.append(pd.read_csv(Path(str(path).removesuffix(".json") + ".tsv"), sep="\t"))
    table = pd.DataFrame(rows)
    pooled = pd.concat(items, ignore_index=True)
    classes = sorted(set(pooled["label"].astype(str)) | set(pooled["predicted"].astype(str)))
    confusion = (pd.crosstab(pooled["label"].astype(str), pooled["predicted"].astype(str))
                 .reindex(index=classes, columns=classes, fill_value=0))
    fig = Figure(figsize=(1.0 + 0.45 * len(classes), 0.8 + 0.45 * len(classes)), layout="constrained")
    ax = fig.subplots()
    shown = ax.imshow(confusion.to_numpy() / np.maximum(confusion.to_numpy().sum(1, keepdims=True), 1),
                      cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion (row-normalised, all subjects)")
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
        ``{"title", "table"}`` with one row per rule: jobs, total and longest wall
        time (s) and the largest peak resident memory of a job (MB); None without
        benchmark files.
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
    for col in ("total_s", "longest_s", "peak_rss_mb"):
        summary[col] = summary[col].round(1)
    return {"title": "Compute resources per stage (wall time, peak memory)", "table": summary}
