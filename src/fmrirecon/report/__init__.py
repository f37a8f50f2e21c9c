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

Modules: :mod:`~fmrirecon.report.records` (the long table), ``formatting`` (numbers,
metric names, figures as PNG), ``tables`` (the tables per split), ``field_tables`` (the
field's table), ``selection`` (model selection), ``figures``, ``gallery``,
``quality_sections``, ``provenance``, ``sections`` (training curves, classification,
compute resources) and ``build`` (the page, :func:`build_report`).
"""

from .build import build_report, seen_in_training_warnings
from .formatting import figure_to_base64, metric_label
from .gallery import gallery
from .provenance import KEY_PACKAGES, config_diff, git_commit, package_versions, provenance, sha256
from .records import BASELINE_LABELS, METRIC_COLUMNS, SPLITS, collect_metrics, write_metrics_table
from .sections import classification_metrics, classification_section, resources_section, training_curves_section
from .selection import validation_rows
from .tables import across_subjects

__all__ = [
    "BASELINE_LABELS",
    "KEY_PACKAGES",
    "METRIC_COLUMNS",
    "SPLITS",
    "across_subjects",
    "build_report",
    "classification_metrics",
    "classification_section",
    "collect_metrics",
    "config_diff",
    "figure_to_base64",
    "gallery",
    "git_commit",
    "metric_label",
    "package_versions",
    "provenance",
    "resources_section",
    "seen_in_training_warnings",
    "sha256",
    "training_curves_section",
    "validation_rows",
    "write_metrics_table",
]
