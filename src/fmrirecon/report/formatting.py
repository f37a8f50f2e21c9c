"""How numbers, metric names and figures are written into the page."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping

import pandas as pd
from matplotlib.figure import Figure

from .records import _STANDARD


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


def _size(data: pd.DataFrame):
    sizes = data.loc[data["metric"].isin(_STANDARD), "size"].dropna().unique()
    return int(sizes[0]) if len(sizes) == 1 else None
