# The records the report reads (never parsed from file names): each evaluation's
# files, the field's table, data quality, training curves, classifications, how each
# fit chose its settings on training pairs, and what ran. The data engineer's path builder may replace the path expressions here.
import json
import shlex
import sys
from datetime import datetime, timezone

from snakemake.logging import logger
from snakemake.utils import validate as _validate

_EVALS = dict(subject=SUBJECTS, method=METHODS, split=EVAL_SPLITS)
FIELD_METRICS = bool(METHODS) and config["field_metrics"]["enabled"]
# Written when a run starts (onstart, below): the command line and the time, read by
# the report without being an input (a new command alone does not rerun the report).
RUN_INFO = LOGS / "run.json"


def _one(pattern, **wildcards):
    return str(expand(pattern, **wildcards)[0])


def evaluation_records():
    """subject, method, split -> summary JSON, per-image metrics TSV, recon NPZ."""
    return [
        dict(
            subject=s,
            method=m,
            split=sp,
            summary=_one(rules.evaluate.output.summary, subject=s, method=m, split=sp),
            metrics=_one(rules.evaluate.output.metrics, subject=s, method=m, split=sp),
            recon=_one(rules.reconstruct.output.recon, subject=s, method=m, split=sp),
        )
        for s in SUBJECTS
        for m in METHODS
        for sp in EVAL_SPLITS
    ]


def field_records():
    """subject, split -> the field's table (summary JSON, per-image TSV)."""
    if not FIELD_METRICS:
        return []
    return [
        dict(
            subject=s,
            split=sp,
            summary=_one(rules.field_metrics.output.summary, subject=s, split=sp),
            metrics=_one(rules.field_metrics.output.metrics, subject=s, split=sp),
        )
        for s in SUBJECTS
        for sp in EVAL_SPLITS
    ]


def quality_records():
    """subject -> data-quality summary and figures."""
    return [
        dict(
            subject=s,
            summary=_one(rules.quality.output.summary, subject=s),
            figures={key: _one(getattr(rules.quality.output, key), subject=s) for key in QUALITY_FIGURES},
        )
        for s in SUBJECTS
    ]


def curve_records():
    """label -> training curves TSV (each method per subject, the shared generator)."""
    records = [
        dict(label=f"sub-{s} {m}", curves=_one(rules.decode.output.history, subject=s, method=m))
        for s in SUBJECTS
        for m in METHODS
    ]
    return records + [dict(label="generator (VAE-GAN)", curves=str(p)) for p in GENERATOR_CURVES]


def validation_records():
    """subject, method -> the validation JSON of its fit (settings chosen on training pairs)."""
    return [
        dict(subject=s, method=m, validation=_one(rules.decode.output.validation, subject=s, method=m))
        for s in SUBJECTS
        for m in METHODS
    ]


def classification_records():
    """subject, classifier -> classification JSON and per-item TSV."""
    if not CLASSIFY["label"]:
        return []
    return [
        dict(
            subject=s,
            classifier=CLASSIFY["classifier"],
            summary=_one(rules.classify.output.summary, subject=s),
            items=_one(rules.classify.output.per_item, subject=s),
        )
        for s in SUBJECTS
    ]


def _files(records, *keys):
    return [r[k] for r in records for k in keys] if keys else []


def what_ran():
    """The entry point, input and stages of this configuration, for the provenance header."""
    if NSD:
        entry, source, dataset = "nsd", str(NSD_SPEC["root"]), "Natural Scenes Dataset"
    elif IMPORTED:
        entry, source, dataset = "betas", str(IMPORT_SPEC["file"]), Path(IMPORT_SPEC["file"]).stem
    elif SIMULATED:
        entry, source, dataset = "simulated", str(BIDS), "simulated study"
    else:
        description = BIDS / "dataset_description.json"
        name = json.loads(description.read_text()).get("Name") if description.is_file() else None
        entry, source, dataset = "bids", str(BIDS), name or BIDS.name
    glm = config["glm"]
    voxels = config["voxels"]
    return {
        "entry": entry,
        "input": source,
        "dataset": dataset,
        "preprocessing": (
            None
            if IMPORTED
            else PREP_METHOD + (f" (space {config['preprocess']['space']})" if config["preprocess"]["space"] else "")
        ),
        "glm": None if IMPORTED else f"{glm['method']} (confounds {glm['confounds']}, high-pass {glm['high_pass']} Hz)",
        "voxels": "all" if voxels["select"] == "all" else f"{voxels['select']} (top {voxels['n_top']})",
        "methods": {m: implementation(m, method_settings(m)) for m in METHODS},
        "subjects": list(SUBJECTS),
        "splits": list(EVAL_SPLITS),
        "classify": (
            (
                f"{CLASSIFY['label']} classified ({CLASSIFY['classifier']}, {CLASSIFY['split']} trials) "
                "leaving whole runs out"
            )
            if CLASSIFY["label"]
            else None
        ),
    }


def schema_defaults():
    """The configuration every key of which takes the schema's default."""
    defaults = {}
    _validate(defaults, SCHEMA)
    return defaults
