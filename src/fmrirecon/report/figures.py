"""The figures of a split: bars of the standard metrics with their baselines, and
n-way identification against n."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from fmrirecon.evaluation import BASELINES

from .formatting import _size, metric_label
from .records import _STANDARD, BASELINE_LABELS
from .tables import _select


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
