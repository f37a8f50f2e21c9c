# Preprocessing to fMRIPrep-named derivatives: built-in light, fMRIPrep, or precomputed.
if PREP_METHOD == "light":
    if config["preprocess"]["space"]:
        raise ValueError("config['preprocess']['space']: light preprocessing stays in the native BOLD space; set it to null")

    rule bold_reference:
        input:
            bold=lambda wc: runs_of(wc.subject)["bold"].iloc[0],
        output:
            PREP / "sub-{subject}" / "func" / "sub-{subject}_desc-light_boldref.nii.gz",
        log:
            LOGS / "bold_reference" / "sub-{subject}.log",
        conda:
            "../../envs/fmrirecon.yaml"
        script:
            "../scripts/bold_reference.py"

    rule preprocess_light:
        input:
            bold=lambda wc: run_row(wc.subject, wc.task, wc.run).bold,
            reference=rules.bold_reference.output[0],
        output:
            bold=PREP / "sub-{subject}" / "func" / "sub-{subject}_task-{task}_run-{run}_desc-preproc_bold.nii.gz",
            mask=PREP / "sub-{subject}" / "func" / "sub-{subject}_task-{task}_run-{run}_desc-brain_mask.nii.gz",
            confounds=PREP / "sub-{subject}" / "func" / "sub-{subject}_task-{task}_run-{run}_desc-confounds_timeseries.tsv",
        log:
            LOGS / "preprocess_light" / "sub-{subject}_task-{task}_run-{run}.log",
        conda:
            "../../envs/fmrirecon.yaml"
        script:
            "../scripts/preprocess_light.py"

elif PREP_METHOD == "fmriprep":

    rule fmriprep:
        input:
            bold=lambda wc: list(runs_of(wc.subject)["bold"]),
        output:
            directory(PREP / "sub-{subject}"),
        params:
            bids_dir=BIDS,
            out_dir=PREP,
            work_dir=RESULTS / "work" / "fmriprep",
            settings=config["preprocess"]["fmriprep"],
            space=config["preprocess"]["space"],
        threads: config["preprocess"]["fmriprep"]["nthreads"]
        resources:
            mem_mb=config["preprocess"]["fmriprep"]["mem_mb"],
            runtime=24 * 60,
        log:
            LOGS / "fmriprep" / "sub-{subject}.log",
        conda:
            "../../envs/fmrirecon.yaml"
        script:
            "../scripts/fmriprep.py"
