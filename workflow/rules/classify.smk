# Category decoding from each subject's betas, leaving whole runs out (config classify).

CLASSIFY = config["classify"]


rule classify:
    input:
        **betas_files("{subject}"),
        voxels=rules.select_voxels.output[0],
        # the images this subject saw (not the folder: its mtime changes with any new file)
        stimulus_files=stimulus_files,
    output:
        per_item=out_file("eval", "classification", ".tsv", subject="{subject}", desc=CLASSIFY["classifier"]),
        summary=out_file("eval", "classification", ".json", subject="{subject}", desc=CLASSIFY["classifier"]),
    log:
        job_file(LOGS, "classify", ".log", subject="{subject}"),
    benchmark:
        job_file(BENCHMARKS, "classify", ".tsv", subject="{subject}")
    conda:
        "../../envs/fmri.yaml"
    params:
        stimuli=stimuli_folder,
        settings=CLASSIFY,
        seed=config["seed"],
        n_boot=config["evaluation"]["n_boot"],
    script:
        "../scripts/classify.py"
