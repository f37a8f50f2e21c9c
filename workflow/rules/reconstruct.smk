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
    log:
        job_file(LOGS, "reconstruct", ".log", subject="{subject}", desc="{method}{split}"),
    benchmark:
        job_file(BENCHMARKS, "reconstruct", ".tsv", subject="{subject}", desc="{method}{split}")
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=1,
    params:
        stimuli=stimuli_folder,
        images=config["images"],
        seed=config["seed"],
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
        stimulus_files=stimulus_files,
    output:
        extra=out_file("recon", "extra", ".json", subject="{subject}", desc="{method}{split}"),
    log:
        job_file(LOGS, "method_metrics", ".log", subject="{subject}", desc="{method}{split}"),
    benchmark:
        job_file(BENCHMARKS, "method_metrics", ".tsv", subject="{subject}", desc="{method}{split}")
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=1,
    params:
        stimuli=stimuli_folder,
        images=config["images"],
        evaluation=config["evaluation"],
        seed=config["seed"],
    script:
        "../scripts/method_metrics.py"
