"""The HTML report: every number of every subject, method and split beside its baselines.

The report is one self-contained HTML file (figures embedded as base64 PNG, inline
CSS, no script) so that it can be mailed or opened offline. Its inputs are structured
records built by the workflow (``report.smk``), never parsed from file names:

- evaluations: ``{"subject", "method", "split", "summary", "metrics", "recon"}`` (the
  ``_summary.json``, per-image ``_metrics.tsv`` and ``_recon.npz`` of one method);
- field metrics: ``{"subject", "split", "summary", "metrics"}`` (the papers' table,
  :mod:`fmrirecon.perceptual_metrics`);
- quality: ``{"subject", "summary", "figures": {key: png}}`` (:mod:`fmrirecon.quality`);
- training curves ``{"label", "curves"}``, classifications ``{"subject",
  "classifier", "summary", "items"}``;
- validation ``{"subject", "method", "validation"}`` (the ``_validation.json`` of a
  fit: its settings chosen on held-out training pairs, :func:`validation_rows`);
- provenance (:func:`provenance`): command, date, commit, versions, input and what ran.

Metrics are gathered in one long table (:func:`collect_metrics`), written beside the
report, with the baselines as rows of their own (column ``baseline``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import platform
import subprocess
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Iterable

import jinja2
import numpy as np
import pandas as pd
import yaml
from markupsafe import Markup
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from PIL import Image

from fmrirecon import __version__
from fmrirecon.evaluation import BASELINES, read_metrics, read_summary

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

#: Packages whose versions are printed in the provenance header.
KEY_PACKAGES = ("snakemake", "numpy", "scipy", "scikit-learn", "pandas", "nilearn", "nibabel",
                "torch", "torchvision", "scikit-image", "himalaya")

_STANDARD = ("pixcorr", "ssim", "ident2")

# What the method-specific metrics of the summary files mean (docs/formats.md, section 4).
_EXTRA_HELP = {
    "ident2_latent": "2-way identification in the method's own target space (VanRullen & Reddy "
                     "2019): each decoded target vector (PCA coefficients for pca, generator "
                     "latents for latent) against the true targets of its own and every other "
                     "test image, by Pearson r; chance 0.5",
    "featpattern": "correlation of decoded with true DNN features (per image)",
    "featident2": "2-way identification by decoded DNN features",
    "reconfeat_ident2": "2-way identification of the reconstructions by their DNN features",
    "weights_accuracy": "held-out accuracy of the locally trained feature network",
    "gen_": "generalisation across image families (dir)",
    "prior_gain": "score gain of this prior over the other (paired)",
    "encoder_r": "encoder's prediction vs measured responses (mean r over voxels)",
    "encoder_ceiling_r": "best achievable encoder r (from the noise ceiling)",
    "encoder_fraction_of_ceiling": "explained variance over the noise ceiling (%)",
    "semantic": "top-k class of the reconstruction among the folder's classes",
    "featnway": "n-way identification by the perceptual network's features",
    "cycles_gain": "cycles minus pairs-only decoder, paired per image",
    "perceptual_net_accuracy": "held-out accuracy of the perceptual network",
    "attribute_": "attribute decoded from the latents (accuracy)",
}


# --- the long metrics table ----------------------------------------------------------


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


# --- the summary across subjects -------------------------------------------------------


def across_subjects(per_subject: Mapping[str, np.ndarray], n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean over subjects of each subject's mean over images, with a 95% interval.

    The interval resamples images within each subject (a percentile bootstrap
    stratified by subject): it is the uncertainty from the test images for these
    subjects, not a population interval (which two or three subjects cannot give).

    Parameters
    ----------
    per_subject : mapping
        subject -> per-image values (NaNs dropped).
    n_boot : int
    seed : int

    Returns
    -------
    dict
        ``mean``, ``ci_low``, ``ci_high``, ``n_subjects``; NaN when no value is left.
    """
    rng = np.random.default_rng(seed)
    means, boots = [], []
    for values in per_subject.values():
        values = np.asarray(values, dtype=np.float64)
        values = values[~np.isnan(values)]
        if len(values) == 0:
            continue
        means.append(values.mean())
        idx = rng.integers(0, len(values), size=(n_boot, len(values)))
        boots.append(values[idx].mean(axis=1))
    if not means:
        return {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n_subjects": 0}
    boot = np.mean(boots, axis=0)
    low, high = np.quantile(boot, [0.025, 0.975])
    return {"mean": float(np.mean(means)), "ci_low": float(low), "ci_high": float(high),
            "n_subjects": len(means)}


# --- rendering helpers -----------------------------------------------------------------


def _png_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def figure_to_base64(fig: Figure, dpi: int = 100) -> str:
    """PNG bytes of a matplotlib figure, base64-encoded for a ``data:`` URI."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return _png_base64(buffer.getvalue())


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value):
        return "n/a"
    return f"{value:.{digits}f}"


def _ci(entry: Mapping) -> str:
    return f"{_fmt(entry.get('mean'))} [{_fmt(entry.get('ci_low'))}, {_fmt(entry.get('ci_high'))}]"


def metric_label(metric: str, n=None, size=None) -> str:
    """Column header of a metric: what it is, the distance it uses and the resolution."""
    px = f", {size} px" if size else ""
    if metric == "pixcorr":
        return f"PixCorr ↑ (pixel r{px})"
    if metric == "ssim":
        return f"SSIM ↑ (grayscale{px})"
    if metric == "ident2":
        return f"2-way ident. ↑ (exhaustive, pixel r{px})"
    if metric == "nway":
        return f"{n}-way ident. ↑ (pixel r{px})"
    return metric


def _higher_is_better(metric: str) -> bool:
    return not metric.startswith(("effnet", "swav"))


# --- the tables ---------------------------------------------------------------------


def _columns(metrics: pd.DataFrame) -> list[tuple[str, object]]:
    # the standard columns, in order; 2-way by random draws duplicates the exhaustive one
    pairs = []
    for metric in _STANDARD:
        if (metrics["metric"] == metric).any():
            pairs.append((metric, None))
    ns = sorted(int(n) for n in metrics.loc[metrics["metric"] == "nway", "n"].dropna().unique())
    has_ident2 = (metrics["metric"] == "ident2").any()
    pairs += [("nway", n) for n in ns if not (n == 2 and has_ident2)]
    return pairs


def _select(metrics: pd.DataFrame, metric: str, n, baseline=None) -> pd.DataFrame:
    rows = metrics[metrics["metric"] == metric]
    rows = rows[rows["n"].isna()] if n is None else rows[rows["n"] == n]
    return rows[rows["baseline"].isna()] if baseline is None else rows[rows["baseline"] == baseline]


def _beats(entry, baselines: list, higher: bool) -> bool:
    # the method's interval clears every baseline's mean
    values = [b for b in baselines if b is not None and not pd.isna(b)]
    if not values or pd.isna(entry):
        return False
    return entry > max(values) if higher else entry < min(values)


def _table_rows(metrics: pd.DataFrame, columns, split: str) -> list[dict]:
    """Rows of one split's table: per subject and method, the method and its baselines."""
    rows = []
    data = metrics[metrics["split"] == split]
    for subject in sorted(data["subject"].unique()):
        for method in sorted(data.loc[data["subject"] == subject, "method"].unique()):
            here = data[(data["subject"] == subject) & (data["method"] == method)]
            cells, sub = [], {b: [] for b in BASELINES}
            for metric, n in columns:
                own = _select(here, metric, n)
                if own.empty:
                    cells.append({"text": "", "cls": ""})
                    for b in BASELINES:
                        sub[b].append({"text": "", "cls": ""})
                    continue
                r = own.iloc[0]
                base = {b: _select(here, metric, n, b) for b in BASELINES}
                lows = r["ci_low"] if _higher_is_better(metric) else r["ci_high"]
                beats = _beats(lows, [x.iloc[0]["mean"] for x in base.values() if not x.empty]
                               + ([r["chance"]] if metric in ("ident2", "nway") else []),
                               _higher_is_better(metric))
                cells.append({"text": _ci(r), "cls": "beats" if beats else ""})
                for b in BASELINES:
                    if base[b].empty:
                        is_chance = b == "shuffled" and metric in ("ident2", "nway")
                        text = f"{_fmt(r['chance'])} (chance)" if is_chance else ""
                    else:
                        text = _ci(base[b].iloc[0])
                    sub[b].append({"text": text, "cls": ""})
            rows.append({"subject": f"sub-{subject}", "label": method, "kind": "method", "cells": cells})
            for b in BASELINES:
                if any(c["text"] for c in sub[b]):
                    rows.append({"subject": "", "label": BASELINE_LABELS[b], "kind": "baseline",
                                 "cells": sub[b]})
    return rows


def _mean_rows(evaluations: list[Mapping], columns, split: str, n_boot: int, seed: int) -> list[dict]:
    """Rows of the summary across subjects, from the per-image metrics files."""
    by_method: dict[str, dict[str, pd.DataFrame]] = {}
    for record in evaluations:
        if record["split"] == split and record.get("metrics"):
            by_method.setdefault(record["method"], {})[record["subject"]] = read_metrics(record["metrics"])
    rows = []
    for method in sorted(by_method):
        tables = by_method[method]
        subjects = len(tables)
        variants = [("method", method, "")] + [("baseline", BASELINE_LABELS[b], f"_{b}") for b in BASELINES]
        for kind, label, suffix in variants:
            cells = []
            for metric, n in columns:
                column = (metric if metric != "nway" else f"nway{n}") + suffix
                if not all(column in t for t in tables.values()):
                    cells.append({"text": "", "cls": ""})
                    continue
                entry = across_subjects({s: t[column].to_numpy(dtype=float) for s, t in tables.items()},
                                        n_boot=n_boot, seed=seed)
                cells.append({"text": _ci(entry), "cls": ""})
            if any(c["text"] for c in cells):
                rows.append({"subject": f"{subjects} subject{'s' if subjects > 1 else ''}" if kind == "method" else "",
                             "label": label, "kind": kind, "cells": cells})
    return rows


def _chance_cells(metrics: pd.DataFrame, columns, split: str) -> list[str]:
    out = []
    for metric, n in columns:
        if metric == "ident2":
            out.append("0.500")
        elif metric == "nway":
            out.append(_fmt(1 / n))
        else:
            out.append("shuffled pairs, per method")
    return out


def _extra_metrics_table(metrics: pd.DataFrame) -> list[dict]:
    # method-specific metrics (the methods' own _extra.json entries), explained
    # (classification accuracies have their own section)
    extra = metrics[~metrics["metric"].isin([*_STANDARD, "nway"])
                    & ~metrics["metric"].str.endswith("_field") & ~metrics["metric"].str.startswith("accuracy_")
                    & metrics["baseline"].isna()]
    rows = []
    for _, r in extra.sort_values(["split", "subject", "method", "metric"]).iterrows():
        help_text = next((text for prefix, text in _EXTRA_HELP.items() if r["metric"].startswith(prefix)), "")
        rows.append({"split": r["split"], "subject": f"sub-{r['subject']}", "method": r["method"],
                     "metric": r["metric"], "value": _ci(r), "chance": _fmt(r["chance"]),
                     "help": help_text})
    return rows


# --- model selection on training pairs (fmrirecon.validation) -------------------------

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


# --- figures ------------------------------------------------------------------------

_BASELINE_STYLE = {"mean_image": ("0.35", "--"), "retrieval": ("tab:purple", ":"),
                   "shuffled": ("tab:red", "-")}


def _bar_figure(metrics: pd.DataFrame, split: str) -> Figure | None:
    data = metrics[metrics["split"] == split]
    names = [m for m in _STANDARD if (data["metric"] == m).any()]
    if not names:
        return None
    keys = data.loc[data["metric"].isin(names), ["subject", "method"]].drop_duplicates()
    keys = keys.sort_values(["subject", "method"]).to_records(index=False).tolist()
    methods = sorted({m for _, m in keys})
    colours = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    fig = Figure(figsize=(min(4.2 * len(names), 13), 3.6), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    x = np.arange(len(keys))
    for ax, name in zip(axes, names):
        for i, (subject, method) in enumerate(keys):
            here = data[(data["subject"] == subject) & (data["method"] == method)]
            own = _select(here, name, None)
            if own.empty:
                continue
            r = own.iloc[0]
            err = [[max(r["mean"] - r["ci_low"], 0)], [max(r["ci_high"] - r["mean"], 0)]]
            first = ax is axes[0] and all(m != method for _, m in keys[:i])
            ax.bar(i, r["mean"], 0.7, yerr=np.nan_to_num(err), capsize=3, color=colours[method],
                   label=method if first else None)
            for b in BASELINES:
                base = _select(here, name, None, b)
                value = (base.iloc[0]["mean"] if not base.empty
                         else (r["chance"] if b == "shuffled" and name == "ident2" else None))
                if value is None or pd.isna(value):
                    continue
                colour, style = _BASELINE_STYLE[b]
                ax.hlines(value, i - 0.45, i + 0.45, colors=colour, linestyles=style, linewidth=2.2,
                          label=BASELINE_LABELS[b] if (ax is axes[0] and i == 0) else None)
        ax.set_xticks(x, [f"sub-{s}\n{m}" for s, m in keys], fontsize=10)
        ax.set_title(metric_label(name, None, _size(data)), fontsize=11)
        ax.tick_params(axis="y", labelsize=10)
        ax.spines[["top", "right"]].set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 5), fontsize=10,
               frameon=False)
    return fig


def _size(data: pd.DataFrame):
    sizes = data.loc[data["metric"].isin(_STANDARD), "size"].dropna().unique()
    return int(sizes[0]) if len(sizes) == 1 else None


def _nway_figure(metrics: pd.DataFrame, split: str) -> Figure | None:
    data = metrics[(metrics["split"] == split) & (metrics["metric"] == "nway")].dropna(subset=["n"])
    if data.empty:
        return None
    subjects = sorted(data["subject"].unique())
    methods = sorted(data["method"].unique())
    ncols = min(3, len(subjects))
    nrows = math.ceil(len(subjects) / ncols)
    fig = Figure(figsize=(4.4 * ncols + 2.2, 3.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    n_all = np.sort(data["n"].astype(int).unique())
    grid = np.linspace(n_all.min(), n_all.max(), 200) if len(n_all) > 1 else n_all
    for ax, subject in zip(axes, subjects):
        for k, method in enumerate(methods):
            sel = data[(data["subject"] == subject) & (data["method"] == method)]
            own = sel[sel["baseline"].isna()].sort_values("n")
            if own.empty:
                continue
            n = own["n"].astype(int).to_numpy()
            ax.plot(n, own["mean"], marker="o", color=f"C{k % 10}", label=method, linewidth=1.8)
            ax.fill_between(n, own["ci_low"], own["ci_high"], color=f"C{k % 10}", alpha=0.15, linewidth=0)
            retrieval = sel[sel["baseline"] == "retrieval"].sort_values("n")
            if not retrieval.empty:
                ax.plot(retrieval["n"].astype(int), retrieval["mean"], color=f"C{k % 10}", linestyle=":",
                        linewidth=1.5, label=f"{method}: retrieval baseline")
        ax.plot(grid, 1 / grid, color="black", linestyle="--", linewidth=1.6, label="chance (1/n)")
        if n_all.max() / n_all.min() > 20:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(n_all, [str(n) for n in n_all])
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("n (candidates)", fontsize=11)
        ax.set_title(f"sub-{subject}", fontsize=11)
        ax.tick_params(labelsize=10)
        ax.spines[["top", "right"]].set_visible(False)
    for ax in axes[len(subjects):]:
        ax.set_visible(False)
    axes[0].set_ylabel("identification accuracy", fontsize=11)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=10, frameon=False)
    return fig


# --- gallery ------------------------------------------------------------------------


def _tile(image: np.ndarray, side: int) -> str:
    img = np.clip(np.asarray(image, dtype=np.float64), 0, 1)
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    pil = Image.fromarray((img * 255).round().astype(np.uint8))
    if pil.width < side:  # small images blown up without smoothing: their pixels stay visible
        pil = pil.resize((side, side), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG", optimize=True)
    return _png_base64(buffer.getvalue())


def _contrast_note(method: str, recon: np.ndarray, true: np.ndarray) -> dict | None:
    # reconstructions much flatter than the images look "grey": say why, with numbers
    sd_recon = float(np.mean([r.std() for r in recon]))
    sd_true = float(np.mean([t.std() for t in true]))
    if sd_true <= 0 or sd_recon / sd_true >= 0.5:
        return None
    return {"method": method, "sd_recon": sd_recon, "sd_true": sd_true, "ratio": sd_recon / sd_true,
            "gain": sd_true / max(sd_recon, 1e-6)}


def gallery(evaluations: list[Mapping], columns: int = 10, all_max: int = 60, tile_px: int = 64) -> list[dict]:
    """The gallery: per subject and split, rows = the shown images and each method.

    Every grid has the same test images in the same order (sorted by ``stim_file``).
    Up to ``all_max`` images all are shown, in blocks of ``columns``; beyond, the best,
    median and worst ``columns`` images by PixCorr averaged over the methods (the same
    images for every method), with every image in a collapsed part. Each tile carries
    its PixCorr (beside it) and its SSIM and 2-way identification (on hover).
    Methods whose reconstructions have less than half the images' pixel contrast get a
    second, contrast-stretched row, labelled as a display aid.
    """
    groups: dict[tuple[str, str], list[Mapping]] = {}
    for record in evaluations:
        if record.get("recon"):
            groups.setdefault((record["subject"], record["split"]), []).append(record)
    out = []
    for (subject, split), records in sorted(groups.items(), key=lambda kv: (
            SPLITS.index(kv[0][1]) if kv[0][1] in SPLITS else 9, kv[0][0])):
        records = sorted(records, key=lambda r: r["method"])
        loaded = []
        for record in records:
            path = Path(record["recon"])
            if not path.is_file():
                raise FileNotFoundError(f"reconstructions {path} not found")
            data = np.load(path)
            order = np.argsort(data["stim_file"].astype(str), kind="stable")
            scores = (read_metrics(record["metrics"]).set_index("stim_file")
                      if record.get("metrics") else None)
            loaded.append((record["method"], data["images"][order], data["true"][order],
                           data["stim_file"].astype(str)[order], scores))
        names = loaded[0][3]
        for method, _, _, stims, _ in loaded[1:]:
            if not np.array_equal(stims, names):
                raise ValueError(f"sub-{subject} {split}: {method} reconstructs other test images than "
                                 f"{loaded[0][0]}")
        true = loaded[0][2]
        side = max(tile_px, true.shape[1])
        pix = np.array([s.loc[names, "pixcorr"].to_numpy() if s is not None else np.zeros(len(names))
                        for *_, s in loaded]).mean(axis=0)
        notes = [n for n in (_contrast_note(m, r, t) for m, r, t, _, _ in loaded) if n]

        def block(indices, title):
            rows = [{"label": "shown", "kind": "truth",
                     "tiles": [{"png": _tile(true[i], side), "caption": names[i], "title": names[i]}
                               for i in indices]}]
            for method, recon, _, _, scores in loaded:
                tiles = []
                for i in indices:
                    if scores is not None:
                        s = scores.loc[names[i]]
                        caption = f"r {s['pixcorr']:.2f}"
                        tip = (f"{names[i]} · {method}: PixCorr {s['pixcorr']:.3f}, SSIM {s['ssim']:.3f}, "
                               f"2-way ident. {s['ident2']:.2f}")
                    else:
                        caption, tip = "", names[i]
                    tiles.append({"png": _tile(recon[i], side), "caption": caption, "title": tip})
                rows.append({"label": method, "kind": "method", "tiles": tiles})
                note = next((n for n in notes if n["method"] == method), None)
                if note:
                    mean = recon.mean(axis=(1, 2, 3), keepdims=True)
                    stretched = np.clip(mean + (recon - mean) * note["gain"], 0, 1)
                    rows.append({"label": f"{method}, contrast ×{note['gain']:.1f} (display only)",
                                 "kind": "stretched",
                                 "tiles": [{"png": _tile(stretched[i], side), "caption": "",
                                            "title": f"{names[i]} · {method}, contrast stretched for display"}
                                           for i in indices]})
            return {"title": title, "rows": rows}

        n = len(names)
        blocks, hidden = [], []
        chunks = [list(range(i, min(i + columns, n))) for i in range(0, n, columns)]
        if n <= all_max:
            blocks = [block(c, f"images {c[0] + 1}-{c[-1] + 1} of {n}") for c in chunks]
        else:
            ranked = np.argsort(-pix, kind="stable")
            mid = max(0, n // 2 - columns // 2)
            for title, picked in (("best by PixCorr (mean over methods)", ranked[:columns]),
                                  ("median by PixCorr", ranked[mid:mid + columns]),
                                  ("worst by PixCorr", ranked[-columns:])):
                blocks.append(block(sorted(picked.tolist()), title))
            hidden = [block(c, f"images {c[0] + 1}-{c[-1] + 1} of {n}") for c in chunks]
        out.append({"subject": f"sub-{subject}", "split": split, "n": n, "blocks": blocks,
                    "hidden": hidden, "notes": notes, "tile_px": side})
    return out


# --- provenance ------------------------------------------------------------------------


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


# --- the page ------------------------------------------------------------------------


def _quality_sections(quality: list[Mapping]) -> tuple[list[dict], list[str]]:
    sections, warnings = [], []
    for record in sorted(quality, key=lambda r: r["subject"]):
        _check_record(record, ("subject", "summary", "figures"), "quality")
        summary = json.loads(Path(record["summary"]).read_text())
        counts = summary["counts"]
        splits = [{"split": name, **c} for name, c in counts["splits"].items()]
        rel, ceil = summary["reliability"], summary["noise_ceiling"]
        facts = [
            ("voxels (in the mask / kept for decoding)", f"{counts['voxels']} / {counts['voxels_selected']}"),
            (f"median reliability (all / kept; from the {rel.get('split') or '?'} split)",
             f"{_fmt(rel['all']['median'])} / {_fmt(rel['selected']['median'])}"),
            (f"median noise ceiling, % (all / kept; {ceil.get('n_average') or '?'} repeats averaged)",
             f"{_fmt(ceil['all']['median'], 1)} / {_fmt(ceil['selected']['median'], 1)}"),
        ]
        if "r2_trials" in summary:
            r2 = summary["r2_trials"]
            noise = f"; pure noise: about {_fmt(r2['noise_level'])}" if r2.get("noise_level") is not None else ""
            facts.append((f"median single-trial partial R2, {r2['run']} (all / kept; whole model R2: "
                          f"{_fmt(r2['r2_full_median'])}{noise})",
                          f"{_fmt(r2['all']['median'])} / {_fmt(r2['selected']['median'])}"))
        motion = [m for m in summary.get("motion", []) if m.get("fd_mean") is not None]
        if motion:
            facts.append(("mean framewise displacement, mm (runs: min-max)",
                          f"{_fmt(min(m['fd_mean'] for m in motion))}-{_fmt(max(m['fd_mean'] for m in motion))}"))
        figures = []
        for key, caption in summary["figures"].items():
            path = Path(record["figures"][key])
            if not path.is_file():
                raise FileNotFoundError(f"quality figure {path} not found")
            figures.append({"png": _png_base64(path.read_bytes()), "caption": caption, "key": key})
        subject = f"sub-{record['subject']}"
        warnings += [f"{subject}: {w}" for w in summary.get("warnings", [])]
        split_text = ", ".join(f"{sp['split']} {sp['trials']} trials of {sp['images']} images"
                               + (f" (x{sp['repeats_median']:g})" if sp["repeats_max"] > 1 else "")
                               for sp in splits)
        sections.append({"subject": subject, "splits": splits, "facts": facts, "figures": figures,
                         "warnings": summary.get("warnings", []),
                         "counts_text": f"{subject}: {split_text}; {counts['voxels_selected']} of "
                                        f"{counts['voxels']} voxels kept"})
    return sections, warnings


def _template() -> jinja2.Template:
    text = (resources.files("fmrirecon") / "templates" / "report.html.j2").read_text("utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    return env.from_string(text)


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
                    "content": content, "note": section.get("note", "")})
    return out


def seen_in_training_warnings(evaluations: Iterable[Mapping]) -> list[str]:
    """One warning per subject and split whose test images were also training images
    (``images.in_training`` of the evaluation summaries)."""
    found = {}
    for record in evaluations:
        images = json.loads(Path(record["summary"]).read_text()).get("images") or {}
        if images.get("in_training"):
            found[(f"sub-{record['subject']}", str(record["split"]))] = (images["in_training"], images["n"])
    return [f"{subject} {split}: {k} of {n} test images were also training images: this split measures "
            "held-out trials of seen images, not new images, and retrieval can be near perfect"
            for (subject, split), (k, n) in sorted(found.items())]


def build_report(
    evaluations: list[Mapping],
    config: Mapping,
    out_html: str | Path,
    metrics: pd.DataFrame | None = None,
    field: list[Mapping] = (),
    quality: list[Mapping] = (),
    provenance_info: Mapping | None = None,
    extra_sections: list[dict] | None = None,
    title: str = "fmrirecon report",
    validation: list[Mapping] = (),
) -> Path:
    """Write the self-contained HTML report.

    Parameters
    ----------
    evaluations : list of mapping
        ``{"subject", "method", "split", "summary", "metrics", "recon"}`` per method
        (``metrics`` and ``recon`` may be None: no across-subject rows / no gallery).
    config : mapping
        The workflow configuration (``evaluation.n_boot``, ``seed``, ``report``).
    out_html : str or Path
        Report file to write.
    metrics : DataFrame, optional
        The long table (:func:`collect_metrics`); computed from the records when None.
    field : list of mapping
        Field-metric records (:func:`collect_metrics`).
    quality : list of mapping
        ``{"subject", "summary", "figures"}`` records of the quality rule.
    provenance_info : mapping, optional
        From :func:`provenance`.
    extra_sections : list of dict, optional
        Sections appended after the main ones, each ``{"title": str}`` plus exactly one
        of ``"html"`` (str, trusted markup inserted as is), ``"figure"`` (a matplotlib
        Figure) or ``"table"`` (a DataFrame), and optionally ``"note"``.
    title : str
        Page title.
    validation : list of mapping
        ``{"subject", "method", "validation"}`` per fitted method: how its settings were
        chosen on held-out training pairs (:func:`validation_rows`).

    Returns
    -------
    Path
        ``out_html``.
    """
    evaluations, field, quality = list(evaluations), list(field), list(quality)
    for record in evaluations:
        _check_record(record, ("subject", "method", "split", "summary"), "evaluation")
    if metrics is None:
        metrics = collect_metrics(evaluations, field)
    missing = set(METRIC_COLUMNS) - set(metrics.columns)
    if missing:
        raise ValueError(f"metrics table lacks columns {sorted(missing)}")
    settings = dict(config.get("report") or {})
    n_boot = int((config.get("evaluation") or {}).get("n_boot", 2000))
    seed = int(config.get("seed", 0))
    extra = _extra(extra_sections or [])  # checked before any heavy work

    standard = metrics[metrics["metric"].isin([*_STANDARD, "nway"])]
    splits = [s for s in SPLITS if s in set(standard["split"])]
    splits += sorted(set(standard["split"]) - set(splits))
    tables = []
    for split in splits:
        data = standard[standard["split"] == split]
        columns = _columns(data)
        size = _size(data)
        tables.append({
            "split": split,
            "headers": [metric_label(m, n, size) for m, n in columns],
            "chance": _chance_cells(data, columns, split),
            "rows": _table_rows(data, columns, split),
            "mean_rows": _mean_rows(evaluations, columns, split, n_boot, seed),
            "bars": (lambda f: figure_to_base64(f) if f is not None else None)(_bar_figure(data, split)),
            "curve": (lambda f: figure_to_base64(f) if f is not None else None)(_nway_figure(data, split)),
        })
    quality_sections, warnings = _quality_sections(quality)
    field_tables = _field_tables(field, n_boot, seed)
    for table in field_tables:
        missing_weights = [n["name"] for n in table["networks"] if not n["found"]]
        if missing_weights:
            warnings.append(f"{table['split']}: no weights for {', '.join(missing_weights)}: their "
                            "columns of the field's table are empty (README, \"The field's metrics\")")
            break
    warnings += seen_in_training_warnings(evaluations)
    selection = _selection_groups(validation)
    replaced = [f"{g['subject']} {g['method']} ({g['outcome']['fallback'].replace('baseline pca', 'pca baseline')})"
                for g in selection if g["outcome"].get("fallback")]
    if replaced:
        validated = sum(bool(g["entries"]) for g in selection)
        warnings.append(f"validation on training pairs replaced {len(replaced)} of {validated} validated fits by a "
                        f"guard's model: {', '.join(replaced)}; their test rows are that model's "
                        "(Model selection)")
    galleries = gallery(evaluations, columns=int(settings.get("gallery_columns", 10)),
                        all_max=int(settings.get("gallery_all_max", 60)))
    html = _template().render(
        title=title,
        version=__version__,
        subjects=sorted({f"sub-{r['subject']}" for r in evaluations} | {q["subject"] for q in quality_sections}),
        methods=sorted({r["method"] for r in evaluations}),
        splits=splits,
        tables=tables,
        field_tables=field_tables,
        extra_metrics=_extra_metrics_table(metrics),
        selection=selection,
        quality=quality_sections,
        warnings=warnings,
        galleries=galleries,
        provenance=provenance_info,
        baseline_labels=BASELINE_LABELS,
        extra=extra,
    )
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(html, encoding="utf-8")
    return out_html


# --- further sections ------------------------------------------------------------------


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
