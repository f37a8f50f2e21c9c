# Fit each reconstruction method on one subject's training betas and images.


rule decode:
    input:
        unpack(method_files),
        **betas_files("{subject}"),
        voxels=rules.select_voxels.output[0],
        # the images this subject saw (not the folder: its mtime changes with any new file)
        stimulus_files=stimulus_files,
    output:
        model=out_file("recon", "model", ".pkl", subject="{subject}", desc="{method}"),
        history=out_file("recon", "curves", ".tsv", subject="{subject}", desc="{method}"),
        # the settings validation on held-out training pairs chose, and the guards
        validation=out_file("recon", "validation", ".json", subject="{subject}", desc="{method}"),
    log:
        job_file(LOGS, "decode", ".log", subject="{subject}", desc="{method}"),
    benchmark:
        job_file(BENCHMARKS, "decode", ".tsv", subject="{subject}", desc="{method}")
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        stimuli=stimuli_folder,
        settings=method_parameters,
        images=config["images"],
        seed=config["seed"],
        unpaired_splits=config["unpaired"]["betas"],
        work_dir=lambda wc: out_file("recon", "checkpoints", subject=wc.subject, desc=wc.method),
    script:
        "../scripts/decode.py"
