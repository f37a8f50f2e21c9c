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
        recon=out_file("recon", "recon", ".npz", subject="{subject}", desc="{method}{split}"),
        grid=report(
            out_file("recon", "recon", ".png", subject="{subject}", desc="{method}{split}"),
            caption="../report/reconstruction.rst",
            category="Reconstructions",
            subcategory="{method}",
            labels={"subject": "{subject}", "method": "{method}", "split": "{split}"},
        ),
        extra=out_file("recon", "extra", ".json", subject="{subject}", desc="{method}{split}"),
    params:
        stimuli=stimuli_folder,
        images=config["images"],
        evaluation=config["evaluation"],
        seed=config["seed"],
    threads: 1
    resources:
        gpu=1,
    log:
        job_file(LOGS, "reconstruct", ".log", subject="{subject}", desc="{method}{split}"),
    benchmark:
        job_file(BENCHMARKS, "reconstruct", ".tsv", subject="{subject}", desc="{method}{split}"),
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/reconstruct.py"
