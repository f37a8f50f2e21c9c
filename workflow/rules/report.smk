# One report across subjects, methods and splits, from structured records (never
# parsed from file names): each evaluation's files, the field's table, data quality,
# training curves, classifications, model selection on training pairs, compute
# resources and the run's provenance.
import json
import shlex
import sys
from datetime import datetime, timezone

from snakemake.logging import logger


onstart:
    RUN_INFO.parent.mkdir(parents=True, exist_ok=True)
    argv = list(sys.argv)
    if argv and argv[0].endswith("__main__.py"):
        argv = ["python", "-m", "snakemake", *argv[1:]]
    RUN_INFO.write_text(
        json.dumps(
            {
                "command": shlex.join(argv),
                "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "workdir": str(Path.cwd()),
            },
            indent=2,
        )
        + "\n"
    )


onsuccess:
    if (REPORT / "index.html").is_file():
        logger.info(f"Report: {(Path.cwd() / REPORT / 'index.html').resolve()}")


rule report:
    input:
        evaluations=_files(evaluation_records(), "summary", "metrics", "recon"),
        field=_files(field_records(), "summary", "metrics"),
        quality=[r["summary"] for r in quality_records()]
        + [f for r in quality_records() for f in r["figures"].values()],
        curves=_files(curve_records(), "curves"),
        classifications=_files(classification_records(), "summary", "items"),
        validation=_files(validation_records(), "validation"),
        betas=expand(betas_files("{subject}")["betas"], subject=SUBJECTS),
    output:
        html=report(REPORT / "index.html", caption="../report/index.rst", category="Report"),
        metrics=report(REPORT / "metrics.tsv", caption="../report/metrics.rst", category="Report"),
    log:
        LOGS / "report.log",
    conda:
        "../../envs/fmri.yaml"
    params:
        evaluations=evaluation_records(),
        field=field_records(),
        quality=quality_records(),
        curves=curve_records(),
        classifications=classification_records(),
        validation=validation_records(),
        config=config,
        defaults=schema_defaults(),
        what_ran=what_ran(),
        # the denoised GLM's step-by-step reliability goes into the report
        step_reliability=not IMPORTED and config["glm"]["method"] == "denoised",
        subjects=SUBJECTS,
        # every job's wall time and peak memory (benchmark files, read when they exist)
        benchmarks=BENCHMARKS,
        run_info=RUN_INFO,
        repository=workflow.basedir,
    script:
        "../scripts/report.py"


rule derivatives_description:
    output:
        **({"light": PREP / "dataset_description.json"} if PREP_METHOD == "light" and not IMPORTED else {}),
        fmrirecon=OUT / "dataset_description.json",
    log:
        LOGS / "derivatives_description.log",
    conda:
        "../../envs/fmri.yaml"
    script:
        "../scripts/derivatives_description.py"
