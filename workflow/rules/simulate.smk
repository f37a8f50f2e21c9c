# The built-in simulated study: a BIDS raw dataset plus its ground truth.
if SIMULATED:
    _first = PLAN["subjects"][0]
    _stems = [
        f"sub-{{subject}}_task-{r['task']}_run-{r['run']:02d}"
        for r in PLAN["runs"]
        if r["subject"] == _first
    ]

    # The images depend on a few settings only: a change of the brain, the noise or the
    # design keeps them, and every network trained on them.
    rule simulate_stimuli:
        output:
            stimuli=directory(BIDS / "stimuli"),
        params:
            sim=stimulus_settings(SIM),
            bids_dir=BIDS,
        log:
            LOGS / "simulate_stimuli.log",
        benchmark:
            BENCHMARKS / "simulate_stimuli.tsv",
        conda:
            "../../envs/fmri.yaml"
        script:
            "../scripts/simulate_stimuli.py"

    # The dataset-level files record every setting (README), so any change rewrites them.
    rule simulate_dataset:
        output:
            description=BIDS / "dataset_description.json",
            participants=BIDS / "participants.tsv",
        params:
            sim=SIM,
            bids_dir=BIDS,
        log:
            LOGS / "simulate_dataset.log",
        conda:
            "../../envs/fmri.yaml"
        script:
            "../scripts/simulate_dataset.py"

    if SIM["n_unpaired"]:

        rule simulate_unpaired:
            output:
                directory(RESULTS / "simulated" / "unpaired"),
            params:
                sim={**stimulus_settings(SIM), "n_unpaired": SIM["n_unpaired"]},
            log:
                LOGS / "simulate_unpaired.log",
            benchmark:
                BENCHMARKS / "simulate_unpaired.tsv",
            conda:
                "../../envs/fmri.yaml"
            script:
                "../scripts/simulate_unpaired.py"

    if SIM["higher_area"]:

        # The simulated higher visual area reads a deep layer of this network, trained
        # on its own image folder and seed (fmrirecon.simulate.higher).
        rule simulate_brain_network:
            input:
                stimuli=rules.simulate_stimuli.output.stimuli,
                folder=SIM["higher_area"]["train_network"]["folder"],
            output:
                weights=TRUTH / "brain_network" / "smallconv_weights.pt",
                provenance=TRUTH / "brain_network" / "smallconv_weights.pt.json",
                features=TRUTH / "brain_network" / "stimuli_features.h5",
            params:
                # only what it uses: a change of e.g. the noise does not retrain it
                higher=SIM["higher_area"],
                seed=SIM["seed"],
                image_size=SIM["image_size"],
                channels=SIM["channels"],
            threads: 2
            resources:
                gpu=1,
            log:
                LOGS / "simulate_brain_network.log",
            benchmark:
                BENCHMARKS / "simulate_brain_network.tsv",
            conda:
                "../../envs/torch.yaml"
            script:
                "../scripts/simulate_brain_network.py"

    rule simulate_subject:
        input:
            stimuli=rules.simulate_stimuli.output.stimuli,
            # the dataset is whole before any subject's files are read
            description=rules.simulate_dataset.output.description,
            **(
                {"brain_features": rules.simulate_brain_network.output.features}
                if SIM["higher_area"]
                else {}
            ),
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
