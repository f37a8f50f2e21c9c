# One report across subjects, methods and splits.

_EVALS = dict(subject=SUBJECTS, method=METHODS, split=EVAL_SPLITS)


rule report:
    input:
        summaries=expand(rules.evaluate.output.summary, **_EVALS),
        grids=expand(rules.reconstruct.output.grid, **_EVALS),
        histories=expand(rules.decode.output.history, subject=SUBJECTS, method=METHODS),
        generator_curves=GENERATOR_CURVES,
        betas=expand(betas_files("{subject}")["betas"], subject=SUBJECTS),
        classifications=expand(rules.classify.output.summary, subject=SUBJECTS) if CLASSIFY["label"] else [],
    output:
        html=report(REPORT / "index.html", caption="../report/index.rst", category="Report"),
        metrics=report(REPORT / "metrics.tsv", caption="../report/metrics.rst", category="Report"),
    params:
        config=config,
        # the denoised GLM's step-by-step reliability goes into the report
        step_reliability=not IMPORTED and config["glm"]["method"] == "denoised",
        subjects=SUBJECTS,
        records=evaluation_records(),
        # every job's wall time and peak memory (benchmark files, read when they exist)
        benchmarks=BENCHMARKS,
    log:
        LOGS / "report.log",
    conda:
        "../../envs/fmri.yaml"
    script:
        "../scripts/report.py"


rule derivatives_description:
    output:
        fmrirecon=OUT / "dataset_description.json",
        **({"light": PREP / "dataset_description.json"} if PREP_METHOD == "light" and not IMPORTED else {}),
    log:
        LOGS / "derivatives_description.log",
    conda:
        "../../envs/fmri.yaml"
    script:
        "../scripts/derivatives_description.py"
