# Per-image metrics, identification and bootstrap confidence intervals.


rule evaluate:
    input:
        recon=rules.reconstruct.output.recon,
        extra=rules.method_metrics.output.extra,
        # the training images: mean-image and retrieval baselines (the files, not the
        # folder: its mtime changes with any new file)
        trials=betas_files("{subject}")["trials"],
        stimulus_files=stimulus_files,
    output:
        metrics=out_file("eval", "metrics", ".tsv", subject="{subject}", desc="{method}{split}"),
        summary=out_file("eval", "summary", ".json", subject="{subject}", desc="{method}{split}"),
    log:
        job_file(LOGS, "evaluate", ".log", subject="{subject}", desc="{method}{split}"),
    benchmark:
        job_file(BENCHMARKS, "evaluate", ".tsv", subject="{subject}", desc="{method}{split}")
    conda:
        "../../envs/fmri.yaml"
    params:
        stimuli=stimuli_folder,
        settings=config["evaluation"],
        images=config["images"],
        seed=config["seed"],
    script:
        "../scripts/evaluate.py"


# The NSD papers' table (PixCorr/SSIM at 425 px and six network metrics) of every method
# of one subject's split, with the same baselines (fmrirecon.perceptual_metrics).
rule field_metrics:
    input:
        recons=lambda wc: expand(rules.reconstruct.output.recon, subject=wc.subject, method=METHODS, split=wc.split),
        trials=betas_files("{subject}")["trials"],
        stimulus_files=stimulus_files,
    output:
        metrics=out_file("eval", "fieldmetrics", ".tsv", subject="{subject}", desc="{split}"),
        summary=out_file("eval", "fieldmetrics", ".json", subject="{subject}", desc="{split}"),
    log:
        job_file(LOGS, "field_metrics", ".log", subject="{subject}", desc="{split}"),
    benchmark:
        job_file(BENCHMARKS, "field_metrics", ".tsv", subject="{subject}", desc="{split}")
    conda:
        "../../envs/torch.yaml"
    threads: 1
    params:
        stimuli=stimuli_folder,
        methods=METHODS,
        settings=config["field_metrics"],
        n_boot=config["evaluation"]["n_boot"],
        images=config["images"],
        seed=config["seed"],
    script:
        "../scripts/field_metrics.py"
