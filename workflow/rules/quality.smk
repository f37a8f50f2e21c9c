# Data quality per subject: brain mask, reliability and noise-ceiling maps, voxel
# histograms, motion, the design matrix of one run, variance explained, counts.
from fmrirecon.quality import BETAS_FIGURES, BOLD_FIGURES

QUALITY_FIGURES = list(BETAS_FIGURES if IMPORTED else BOLD_FIGURES)


rule quality:
    input:
        unpack(lambda wc: {} if IMPORTED else glm_inputs(wc)),
        **betas_files("{subject}"),
        voxels=rules.select_voxels.output[0],
    output:
        **{
            key: report(
                out_file("figures", "quality", ".png", subject="{subject}", desc=key),
                caption="../report/quality.rst",
                category="Data quality",
                subcategory="sub-{subject}",
                labels={"subject": "sub-{subject}", "figure": key},
            )
            for key in QUALITY_FIGURES
        },
        summary=out_file("figures", "", ".json", subject="{subject}", desc="quality"),
    log:
        job_file(LOGS, "quality", ".log", subject="{subject}"),
    benchmark:
        job_file(BENCHMARKS, "quality", ".tsv", subject="{subject}")
    conda:
        "../../envs/fmri.yaml"
    params:
        runs=lambda wc: [] if IMPORTED else glm_runs(wc.subject),
        glm=config["glm"],
        # tasks of the runs that hold training trials (by task, session or events column)
        train_tasks=lambda wc: (
            []
            if IMPORTED
            else sorted(
                {r["task"] for r in runs_of(wc.subject).to_dict("records") if "train" in run_splits(r, DESIGN)}
            )
        ),
        figures=QUALITY_FIGURES,
    script:
        "../scripts/quality.py"
