# Per-image metrics, identification and bootstrap confidence intervals.


rule evaluate:
    input:
        recon=rules.reconstruct.output.recon,
        extra=rules.method_metrics.output.extra,
    output:
        metrics=OUT / "sub-{subject}" / "eval" / "sub-{subject}_desc-{method}{split}_metrics.tsv",
        summary=OUT / "sub-{subject}" / "eval" / "sub-{subject}_desc-{method}{split}_summary.json",
    params:
        settings=config["evaluation"],
        seed=config["seed"],
    log:
        LOGS / "evaluate" / "sub-{subject}_desc-{method}{split}.log",
    benchmark:
        BENCHMARKS / "evaluate" / "sub-{subject}_desc-{method}{split}.tsv",
    conda:
        "../../envs/fmri.yaml"
    script:
        "../scripts/evaluate.py"
