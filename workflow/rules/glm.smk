# Single-trial betas per subject (GLM, or imported), reliability and voxel selection.
if NSD:
    from fmrirecon.nsd import nsd_files

    # NSD's own layout, one subject at a time, streamed session by session.
    rule import_nsd:
        input:
            unpack(lambda wc: {k: v for k, v in nsd_files(NSD_SPEC, int(wc.subject)).items()
                               if k != "betas_folder"}),
        output:
            **betas_files("{subject}"),
            stimuli=directory(STIMULI),
        params:
            spec=NSD_SPEC,
        resources:
            # one session's ROI box plus the subject's matrix (docs/formats.md, NSD costs)
            mem_mb=lambda wc, input: 4000 + 80 * len(input.sessions),
        log:
            LOGS / "import_nsd" / "sub-{subject}.log",
        benchmark:
            BENCHMARKS / "import_nsd" / "sub-{subject}.tsv",
        conda:
            "../../envs/fmri.yaml"
        script:
            "../scripts/import_nsd.py"

elif IMPORTED:

    rule import_betas:
        input:
            IMPORT_SPEC["file"],
        output:
            **betas_files("{subject}"),
            stimuli=directory(STIMULI),
        params:
            spec=IMPORT_SPEC,
        log:
            LOGS / "import_betas" / "sub-{subject}.log",
        benchmark:
            BENCHMARKS / "import_betas" / "sub-{subject}.tsv",
        conda:
            "../../envs/fmri.yaml"
        script:
            "../scripts/import_betas.py"

else:

    rule glm:
        input:
            unpack(glm_inputs),
        output:
            betas=betas_files("{subject}")["betas"],
            trials=betas_files("{subject}")["trials"],
            # drawn over the mean EPI by the quality rule, whose PNGs go into --report
            reliability=OUT / "sub-{subject}" / "func" / f"sub-{{subject}}_desc-{config['glm']['method']}reliability_statmap.nii.gz",
            # glm.method denoised: chosen HRF, R2, noise components, ridge fraction, noise pool
            **{
                key: OUT / "sub-{subject}" / "func" / f"sub-{{subject}}_desc-denoised{suffix}"
                for key, suffix in (DENOISED_MAPS.items() if config["glm"]["method"] == "denoised" else [])
            },
        params:
            runs=lambda wc: glm_runs(wc.subject),
            splits=SPLIT_TASKS,
            settings=config["glm"],
        threads: 2
        log:
            LOGS / "glm" / "sub-{subject}.log",
        benchmark:
            BENCHMARKS / "glm" / "sub-{subject}.tsv",
        conda:
            "../../envs/fmri.yaml"
        script:
            "../scripts/glm.py"


rule select_voxels:
    input:
        **betas_files("{subject}"),
    output:
        OUT / "sub-{subject}" / "func" / "sub-{subject}_desc-selected_mask.nii.gz",
    params:
        settings=config["voxels"],
    log:
        LOGS / "select_voxels" / "sub-{subject}.log",
    benchmark:
        BENCHMARKS / "select_voxels" / "sub-{subject}.tsv",
    conda:
        "../../envs/fmri.yaml"
    script:
        "../scripts/select_voxels.py"
