"""The tables per split: each subject and method beside its baselines, the means over
subjects, the chance row and the method-specific metrics."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from fmrirecon.evaluation import BASELINES, read_metrics

from .formatting import _ci, _fmt, _higher_is_better
from .records import _STANDARD, BASELINE_LABELS


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
