# Single-trial betas per subject (GLM, or imported), reliability and voxel selection.
if NSD:
    from fmrirecon.nsd import nsd_files

    # NSD's own layout, one subject at a time, streamed session by session.
    rule import_nsd:
        input:
            unpack(lambda wc: {k: v for k, v in nsd_files(NSD_SPEC, int(wc.subject)).items() if k != "betas_folder"}),
        output:
            **betas_files("{subject}"),
            stimuli=directory(STIMULI),
        log:
            job_file(LOGS, "import_nsd", ".log", subject="{subject}"),
        benchmark:
            job_file(BENCHMARKS, "import_nsd", ".tsv", subject="{subject}")
        conda:
            "../../envs/fmri.yaml"
        resources:
            # one session's ROI box plus the subject's matrix (docs/formats.md, NSD costs)
            mem_mb=lambda wc, input: 4000 + 80 * len(input.sessions),
        params:
            spec=NSD_SPEC,
        script:
            "../scripts/import_nsd.py"

elif IMPORTED:

    rule import_betas:
        input:
            IMPORT_SPEC["file"],
        output:
            **betas_files("{subject}"),
            stimuli=directory(STIMULI),
        log:
            job_file(LOGS, "import_betas", ".log", subject="{subject}"),
        benchmark:
            job_file(BENCHMARKS, "import_betas", ".tsv", subject="{subject}")
        conda:
            "../../envs/fmri.yaml"
        params:
            spec=IMPORT_SPEC,
        script:
            "../scripts/import_betas.py"

else:

    rule glm:
        input:
            unpack(glm_inputs),
        output:
            **(denoised_maps() if config["glm"]["method"] == "denoised" else {}),
            betas=betas_files("{subject}")["betas"],
            trials=betas_files("{subject}")["trials"],
            # drawn over the mean EPI by the quality rule, whose PNGs go into --report
            reliability=out_file(
                "func", "statmap", ".nii.gz", subject="{subject}", desc=f"{config['glm']['method']}reliability"
            ),
            # glm.method denoised: chosen HRF, R2, noise components, ridge fraction, noise pool
        log:
            job_file(LOGS, "glm", ".log", subject="{subject}"),
        benchmark:
            job_file(BENCHMARKS, "glm", ".tsv", subject="{subject}")
        conda:
            "../../envs/fmri.yaml"
        threads: 2
        params:
            runs=lambda wc: glm_runs(wc.subject),
            splits=SPLIT_TASKS,
            settings=config["glm"],
        script:
            "../scripts/glm.py"


rule select_voxels:
    input:
        **betas_files("{subject}"),
    output:
        out_file("func", "mask", ".nii.gz", subject="{subject}", desc="selected"),
    log:
        job_file(LOGS, "select_voxels", ".log", subject="{subject}"),
    benchmark:
        job_file(BENCHMARKS, "select_voxels", ".tsv", subject="{subject}")
    conda:
        "../../envs/fmri.yaml"
    params:
        settings=config["voxels"],
    script:
        "../scripts/select_voxels.py"
