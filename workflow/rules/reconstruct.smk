# Draw images from the (repetition-averaged) test or imagery betas.


rule reconstruct:
    input:
        unpack(method_files),
        **betas_files("{subject}"),
        model=rules.decode.output.model,
        voxels=rules.select_voxels.output[0],
        stimuli=STIMULI,
    output:
        recon=OUT / "sub-{subject}" / "recon" / "sub-{subject}_desc-{method}{split}_recon.npz",
        grid=report(
            OUT / "sub-{subject}" / "recon" / "sub-{subject}_desc-{method}{split}_recon.png",
            caption="../report/reconstruction.rst",
            category="Reconstructions",
            subcategory="{method}",
            labels={"subject": "{subject}", "method": "{method}", "split": "{split}"},
        ),
    params:
        images=config["images"],
        seed=config["seed"],
    threads: 1
    resources:
        gpu=1,
    log:
        LOGS / "reconstruct" / "sub-{subject}_desc-{method}{split}.log",
    benchmark:
        BENCHMARKS / "reconstruct" / "sub-{subject}_desc-{method}{split}.tsv",
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/reconstruct.py"


# The method's own metrics (ReconstructionMethod.extra_metrics): a job of its own, since
# some fit models (dir's family generalisation) and its cost belongs in the DAG.
rule method_metrics:
    input:
        unpack(method_files),
        **betas_files("{subject}"),
        model=rules.decode.output.model,
        recon=rules.reconstruct.output.recon,
        voxels=rules.select_voxels.output[0],
        stimuli=STIMULI,
    output:
        extra=OUT / "sub-{subject}" / "recon" / "sub-{subject}_desc-{method}{split}_extra.json",
    params:
        images=config["images"],
        evaluation=config["evaluation"],
        seed=config["seed"],
    threads: 1
    resources:
        gpu=1,
    log:
        LOGS / "method_metrics" / "sub-{subject}_desc-{method}{split}.log",
    benchmark:
        BENCHMARKS / "method_metrics" / "sub-{subject}_desc-{method}{split}.tsv",
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/method_metrics.py"
