# The built-in simulated study: a BIDS raw dataset plus its ground truth.
if SIMULATED:
    _first = PLAN["subjects"][0]
    _stems = [
        f"sub-{{subject}}_task-{r['task']}_run-{r['run']:02d}"
        for r in PLAN["runs"]
        if r["subject"] == _first
    ]

    rule simulate_stimuli:
        output:
            stimuli=directory(BIDS / "stimuli"),
            description=BIDS / "dataset_description.json",
            participants=BIDS / "participants.tsv",
        params:
            sim=SIM,
            bids_dir=BIDS,
        log:
            LOGS / "simulate_stimuli.log",
        benchmark:
            BENCHMARKS / "simulate_stimuli.tsv",
        conda:
            "../../envs/fmri.yaml"
        script:
            "../scripts/simulate_stimuli.py"

    if SIM["n_unpaired"]:

        rule simulate_unpaired:
            output:
                directory(RESULTS / "simulated" / "unpaired"),
            params:
                sim=SIM,
            log:
                LOGS / "simulate_unpaired.log",
            benchmark:
                BENCHMARKS / "simulate_unpaired.tsv",
            conda:
                "../../envs/fmri.yaml"
            script:
                "../scripts/simulate_unpaired.py"

    rule simulate_subject:
        input:
            stimuli=rules.simulate_stimuli.output.stimuli,
        output:
            bold=[BIDS / "sub-{subject}" / "func" / f"{s}_bold.nii.gz" for s in _stems],
            sidecar=[BIDS / "sub-{subject}" / "func" / f"{s}_bold.json" for s in _stems],
            events=[BIDS / "sub-{subject}" / "func" / f"{s}_events.tsv" for s in _stems],
            t1w=BIDS / "sub-{subject}" / "anat" / "sub-{subject}_T1w.nii.gz",
            truth=TRUTH / "sub-{subject}_truth.h5",
        params:
            sim=SIM,
            bids_dir=BIDS,
        log:
            LOGS / "simulate_subject" / "sub-{subject}.log",
        benchmark:
            BENCHMARKS / "simulate_subject" / "sub-{subject}.tsv",
        conda:
            "../../envs/fmri.yaml"
        script:
            "../scripts/simulate_subject.py"
