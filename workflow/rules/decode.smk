# Fit each reconstruction method on one subject's training betas and images.


rule decode:
    input:
        unpack(method_files),
        **betas_files("{subject}"),
        voxels=rules.select_voxels.output[0],
        stimuli=STIMULI,
    output:
        model=OUT / "sub-{subject}" / "recon" / "sub-{subject}_desc-{method}_model.pkl",
        history=OUT / "sub-{subject}" / "recon" / "sub-{subject}_desc-{method}_curves.tsv",
        # the settings validation on held-out training pairs chose, and the guards
        validation=OUT / "sub-{subject}" / "recon" / "sub-{subject}_desc-{method}_validation.json",
    params:
        settings=method_parameters,
        images=config["images"],
        seed=config["seed"],
        unpaired_splits=config["unpaired"]["betas"],
        work_dir=lambda wc: OUT / f"sub-{wc.subject}" / "recon" / f"sub-{wc.subject}_desc-{wc.method}_checkpoints",
    threads: 2
    resources:
        gpu=1,
    log:
        LOGS / "decode" / "sub-{subject}_desc-{method}.log",
    benchmark:
        BENCHMARKS / "decode" / "sub-{subject}_desc-{method}.tsv",
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/decode.py"
