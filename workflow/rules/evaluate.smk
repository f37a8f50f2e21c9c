# Per-image metrics, identification and bootstrap confidence intervals.


rule evaluate:
    input:
        recon=rules.reconstruct.output.recon,
        extra=rules.reconstruct.output.extra,
        # the training images: mean-image and retrieval baselines (the files, not the
        # folder: its mtime changes with any new file)
        trials=betas_files("{subject}")["trials"],
        stimulus_files=stimulus_files,
    output:
        metrics=OUT / "sub-{subject}" / "eval" / "sub-{subject}_desc-{method}{split}_metrics.tsv",
        summary=OUT / "sub-{subject}" / "eval" / "sub-{subject}_desc-{method}{split}_summary.json",
    params:
        stimuli=stimuli_folder,
        settings=config["evaluation"],
        images=config["images"],
        seed=config["seed"],
    log:
        LOGS / "evaluate" / "sub-{subject}_desc-{method}{split}.log",
    benchmark:
        BENCHMARKS / "evaluate" / "sub-{subject}_desc-{method}{split}.tsv",
    conda:
        "../../envs/fmri.yaml"
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
        metrics=OUT / "sub-{subject}" / "eval" / "sub-{subject}_desc-{split}_fieldmetrics.tsv",
        summary=OUT / "sub-{subject}" / "eval" / "sub-{subject}_desc-{split}_fieldmetrics.json",
    params:
        stimuli=stimuli_folder,
        methods=METHODS,
        settings=config["field_metrics"],
        n_boot=config["evaluation"]["n_boot"],
        images=config["images"],
        seed=config["seed"],
    threads: 1
    log:
        LOGS / "field_metrics" / "sub-{subject}_desc-{split}.log",
    benchmark:
        BENCHMARKS / "field_metrics" / "sub-{subject}_desc-{split}.tsv",
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/field_metrics.py"
