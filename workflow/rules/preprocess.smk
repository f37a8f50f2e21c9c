# Preprocessing to fMRIPrep-named derivatives: built-in light, fMRIPrep, or precomputed.
if PREP_METHOD == "light":
    if config["preprocess"]["space"]:
        stop(
            ValueError(
                "config['preprocess']['space']: light preprocessing stays in the native BOLD space; set it to null"
            )
        )

    rule bold_reference:
        input:
            bold=lambda wc: runs_of(wc.subject)["bold"].iloc[0],
        output:
            bids_path(PREP, "func", "boldref", ".nii.gz", subject="{subject}", desc="light"),
        log:
            job_file(LOGS, "bold_reference", ".log", subject="{subject}"),
        benchmark:
            job_file(BENCHMARKS, "bold_reference", ".tsv", subject="{subject}")
        conda:
            "../../envs/fmri.yaml"
        script:
            "../scripts/bold_reference.py"

    # One job per run, named by every entity of the raw run ({runpath}:
    # sub-01[/ses-02]/func/sub-01[_ses-02]_task-x[_acq-y][_run-01]), so runs whose labels
    # repeat across sessions never share a file.
    rule preprocess_light:
        input:
            bold=lambda wc: RUNS[wc.runpath]["bold"],
            reference=lambda wc: rules.bold_reference.output[0].format(subject=RUNS[wc.runpath]["subject"]),
        output:
            bold=PREP / "{runpath}_desc-preproc_bold.nii.gz",
            mask=PREP / "{runpath}_desc-brain_mask.nii.gz",
            confounds=PREP / "{runpath}_desc-confounds_timeseries.tsv",
        log:
            LOGS / "preprocess_light" / "{runpath}.log",
        benchmark:
            BENCHMARKS / "preprocess_light" / "{runpath}.tsv"
        conda:
            "../../envs/fmri.yaml"
        script:
            "../scripts/preprocess_light.py"

elif PREP_METHOD == "fmriprep" and config["preprocess"]["fmriprep"]["engine"] == "container":
    # fMRIPrep inside its own image: Snakemake starts the container
    # (--software-deployment-method apptainer) and the job runs fmriprep itself.
    from fmrirecon.preprocess.fmriprep import container_image, unbound_paths

    _FMRIPREP = config["preprocess"]["fmriprep"]
    _FMRIPREP_WORK = RESULTS / "work" / "fmriprep"
    if DeploymentMethod.APPTAINER in workflow.deployment_settings.deployment_method:
        # Apptainer sees only the working directory and what --apptainer-args binds:
        # say so now rather than after the image is pulled and the job has failed.
        _unbound = unbound_paths(
            [p for p in (BIDS, PREP, _FMRIPREP_WORK, _FMRIPREP["fs_license"], _FMRIPREP["templateflow_home"]) if p],
            workflow.deployment_settings.apptainer_args,
            Path.cwd(),
        )
        if _unbound:
            stop(
                ValueError(
                    "config['preprocess']['fmriprep']: the fMRIPrep container would not see "
                    f"{', '.join(map(str, _unbound))}; add --apptainer-args "
                    f"\"--bind {','.join(map(str, _unbound))}\""
                )
            )

    rule fmriprep:
        input:
            bold=lambda wc: list(runs_of(wc.subject)["bold"]),
        output:
            directory(PREP / "sub-{subject}"),
        log:
            job_file(LOGS, "fmriprep", ".log", subject="{subject}"),
        benchmark:
            job_file(BENCHMARKS, "fmriprep", ".tsv", subject="{subject}")
        container:
            container_image(_FMRIPREP)
        threads: _FMRIPREP["nthreads"]
        resources:
            mem_mb=_FMRIPREP["mem_mb"],
            runtime=24 * 60,
        params:
            command=lambda wc, threads, resources: shlex.join(
                fmriprep_command(
                    _FMRIPREP,
                    BIDS,
                    PREP,
                    _FMRIPREP_WORK,
                    wc.subject,
                    space=config["preprocess"]["space"],
                    nthreads=threads,
                    mem_mb=resources.mem_mb,
                    # built before any job runs: a simulated dataset does not exist yet
                    require_dataset=not SIMULATED,
                )
            ),
            folders=[PREP, _FMRIPREP_WORK],
        shell:
            "mkdir -p {params.folders:q} && {params.command} > {log:q} 2>&1"

elif PREP_METHOD == "fmriprep":
    # fMRIPrep through fmriprep-docker or `apptainer run`, started by the job itself.

    rule fmriprep:
        input:
            bold=lambda wc: list(runs_of(wc.subject)["bold"]),
        output:
            directory(PREP / "sub-{subject}"),
        log:
            job_file(LOGS, "fmriprep", ".log", subject="{subject}"),
        benchmark:
            job_file(BENCHMARKS, "fmriprep", ".tsv", subject="{subject}")
        conda:
            "../../envs/fmri.yaml"
        threads: config["preprocess"]["fmriprep"]["nthreads"]
        resources:
            mem_mb=config["preprocess"]["fmriprep"]["mem_mb"],
            runtime=24 * 60,
        params:
            bids_dir=BIDS,
            out_dir=PREP,
            work_dir=RESULTS / "work" / "fmriprep",
            settings=config["preprocess"]["fmriprep"],
            space=config["preprocess"]["space"],
        script:
            "../scripts/fmriprep.py"
