# Category decoding from each subject's betas, leaving whole runs out (config classify).

CLASSIFY = config["classify"]


rule classify:
    input:
        **betas_files("{subject}"),
        voxels=rules.select_voxels.output[0],
        # the images this subject saw (not the folder: its mtime changes with any new file)
        stimulus_files=stimulus_files,
    output:
        per_item=OUT / "sub-{subject}" / "eval" / f"sub-{{subject}}_desc-{CLASSIFY['classifier']}_classification.tsv",
        summary=OUT / "sub-{subject}" / "eval" / f"sub-{{subject}}_desc-{CLASSIFY['classifier']}_classification.json",
    params:
        stimuli=stimuli_folder,
        settings=CLASSIFY,
        seed=config["seed"],
        n_boot=config["evaluation"]["n_boot"],
    log:
        LOGS / "classify" / "sub-{subject}.log",
    benchmark:
        BENCHMARKS / "classify" / "sub-{subject}.tsv",
    conda:
        "../../envs/fmri.yaml"
    script:
        "../scripts/classify.py"
