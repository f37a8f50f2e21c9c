# Draw images from the (repetition-averaged) test or imagery betas.


rule reconstruct:
    input:
        unpack(method_files),
        **betas_files("{subject}"),
        model=rules.decode.output.model,
        voxels=rules.select_voxels.output[0],
        # the images this subject saw (not the folder: its mtime changes with any new file)
        stimulus_files=stimulus_files,
    output:
        recon=OUT / "sub-{subject}" / "recon" / "sub-{subject}_desc-{method}{split}_recon.npz",
        grid=report(
            OUT / "sub-{subject}" / "recon" / "sub-{subject}_desc-{method}{split}_recon.png",
            caption="../report/reconstruction.rst",
            category="Reconstructions",
            subcategory="{method}",
            labels={"subject": "{subject}", "method": "{method}", "split": "{split}"},
        ),
        extra=OUT / "sub-{subject}" / "recon" / "sub-{subject}_desc-{method}{split}_extra.json",
    params:
        stimuli=stimuli_folder,
        images=config["images"],
        evaluation=config["evaluation"],
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
