"""The page: every section gathered, the warnings, the template rendered to one file."""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Iterable

import jinja2
import pandas as pd
from markupsafe import Markup
from matplotlib.figure import Figure

from fmrirecon import __version__

from .field_tables import _field_tables
from .figures import _bar_figure, _nway_figure
from .formatting import _size, figure_to_base64, metric_label
from .gallery import gallery
from .quality_sections import _quality_sections
from .records import _STANDARD, BASELINE_LABELS, METRIC_COLUMNS, SPLITS, _check_record, collect_metrics
from .selection import _selection_groups
from .tables import _chance_cells, _columns, _extra_metrics_table, _mean_rows, _table_rows


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
    metrics = _checked_metrics(evaluations, field, metrics)
    settings = dict(config.get("report") or {})
    n_boot = int((config.get("evaluation") or {}).get("n_boot", 2000))
    seed = int(config.get("seed", 0))
    extra = _extra(extra_sections or [])  # checked before any heavy work
    page = _page(evaluations, metrics, field, quality, validation, settings, n_boot, seed)
    html = _template().render(title=title, version=__version__, provenance=provenance_info,
                              baseline_labels=BASELINE_LABELS, extra=extra, **page)
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(html, encoding="utf-8")
    return out_html


def _checked_metrics(evaluations: list[Mapping], field: list[Mapping], metrics: pd.DataFrame | None) -> pd.DataFrame:
    # the long table given, or gathered from the records; either way with every column
    for record in evaluations:
        _check_record(record, ("subject", "method", "split", "summary"), "evaluation")
    if metrics is None:
        metrics = collect_metrics(evaluations, field)
    missing = set(METRIC_COLUMNS) - set(metrics.columns)
    if missing:
        raise ValueError(f"metrics table lacks columns {sorted(missing)}")
    return metrics


def _page(evaluations: list[Mapping], metrics: pd.DataFrame, field: list[Mapping], quality: list[Mapping],
          validation: Iterable[Mapping], settings: Mapping, n_boot: int, seed: int) -> dict:
    # the template's sections, in the order they are computed (warnings gather along the way)
    splits, tables = _split_tables(evaluations, metrics, n_boot, seed)
    quality_sections, warnings = _quality_sections(quality)
    field_tables = _field_tables(field, n_boot, seed)
    warnings += _field_warnings(field_tables)
    warnings += seen_in_training_warnings(evaluations)
    selection = _selection_groups(validation)
    warnings += _selection_warnings(selection)
    galleries = gallery(evaluations, columns=int(settings.get("gallery_columns", 10)),
                        all_max=int(settings.get("gallery_all_max", 60)))
    return {
        "subjects": sorted({f"sub-{r['subject']}" for r in evaluations} | {q["subject"] for q in quality_sections}),
        "methods": sorted({r["method"] for r in evaluations}),
        "splits": splits,
        "tables": tables,
        "field_tables": field_tables,
        "extra_metrics": _extra_metrics_table(metrics),
        "selection": selection,
        "quality": quality_sections,
        "warnings": warnings,
        "galleries": galleries,
    }


def _split_tables(evaluations: list[Mapping], metrics: pd.DataFrame, n_boot: int,
                  seed: int) -> tuple[list[str], list[dict]]:
    # the splits with standard metrics (test, imagery, then any other) and the table of each
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
            "bars": _png_or_none(_bar_figure(data, split)),
            "curve": _png_or_none(_nway_figure(data, split)),
        })
    return splits, tables


def _png_or_none(fig: Figure | None) -> str | None:
    return figure_to_base64(fig) if fig is not None else None


def _field_warnings(field_tables: list[dict]) -> list[str]:
    # one warning for the first split whose field's table misses networks' weights
    for table in field_tables:
        missing_weights = [n["name"] for n in table["networks"] if not n["found"]]
        if missing_weights:
            return [f"{table['split']}: no weights for {', '.join(missing_weights)}: their "
                    "columns of the field's table are empty (README, \"The field's metrics\")"]
    return []


def _selection_warnings(selection: list[dict]) -> list[str]:
    # the fits a guard replaced (their test rows are the guard's model)
    replaced = [f"{g['subject']} {g['method']} ({g['outcome']['fallback'].replace('baseline pca', 'pca baseline')})"
                for g in selection if g["outcome"].get("fallback")]
    if not replaced:
        return []
    validated = sum(bool(g["entries"]) for g in selection)
    return [f"validation on training pairs replaced {len(replaced)} of {validated} validated fits by a "
            f"guard's model: {', '.join(replaced)}; their test rows are that model's "
            "(Model selection)"]
