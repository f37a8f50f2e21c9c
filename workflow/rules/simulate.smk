# The built-in simulated study: a BIDS raw dataset plus its ground truth.
if SIMULATED:
    _first = PLAN["subjects"][0]
    # the simulated runs of one subject, as BIDS names them (the plan is the same for all)
    _runs = [dict(task=r["task"], run=f"{r['run']:02d}") for r in PLAN["runs"] if r["subject"] == _first]

    # The images depend on a few settings only: a change of the brain, the noise or the
    # design keeps them, and every network trained on them.
    rule simulate_stimuli:
        output:
            stimuli=directory(BIDS / "stimuli"),
        log:
            LOGS / "simulate_stimuli.log",
        benchmark:
            BENCHMARKS / "simulate_stimuli.tsv"
        conda:
            "../../envs/fmri.yaml"
        params:
            sim=stimulus_settings(SIM),
            bids_dir=BIDS,
        script:
            "../scripts/simulate_stimuli.py"

    # The dataset-level files record every setting (README), so any change rewrites them.
    rule simulate_dataset:
        output:
            description=BIDS / "dataset_description.json",
            participants=BIDS / "participants.tsv",
        log:
            LOGS / "simulate_dataset.log",
        conda:
            "../../envs/fmri.yaml"
        params:
            sim=SIM,
            bids_dir=BIDS,
        script:
            "../scripts/simulate_dataset.py"

    if SIM["n_unpaired"]:

        rule simulate_unpaired:
            output:
                directory(RESULTS / "simulated" / "unpaired"),
            log:
                LOGS / "simulate_unpaired.log",
            benchmark:
                BENCHMARKS / "simulate_unpaired.tsv"
            conda:
                "../../envs/fmri.yaml"
            params:
                sim={**stimulus_settings(SIM), "n_unpaired": SIM["n_unpaired"]},
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
            log:
                LOGS / "simulate_brain_network.log",
            benchmark:
                BENCHMARKS / "simulate_brain_network.tsv"
            conda:
                "../../envs/torch.yaml"
            threads: 2
            resources:
                gpu=1,
            params:
                # only what it uses: a change of e.g. the noise does not retrain it
                higher=SIM["higher_area"],
                seed=SIM["seed"],
                image_size=SIM["image_size"],
                channels=SIM["channels"],
            script:
                "../scripts/simulate_brain_network.py"

    rule simulate_subject:
        input:
            **({"brain_features": rules.simulate_brain_network.output.features} if SIM["higher_area"] else {}),
            stimuli=rules.simulate_stimuli.output.stimuli,
            # the dataset is whole before any subject's files are read
            description=rules.simulate_dataset.output.description,
        output:
            bold=[bids_path(BIDS, "func", "bold", ".nii.gz", subject="{subject}", **r) for r in _runs],
            sidecar=[bids_path(BIDS, "func", "bold", ".json", subject="{subject}", **r) for r in _runs],
            events=[bids_path(BIDS, "func", "events", ".tsv", subject="{subject}", **r) for r in _runs],
            t1w=bids_path(BIDS, "anat", "T1w", ".nii.gz", subject="{subject}"),
            truth=TRUTH / bids_name("truth", ".h5", subject="{subject}"),
        log:
            job_file(LOGS, "simulate_subject", ".log", subject="{subject}"),
        benchmark:
            job_file(BENCHMARKS, "simulate_subject", ".tsv", subject="{subject}")
        conda:
            "../../envs/fmri.yaml"
        params:
            sim=SIM,
            bids_dir=BIDS,
        script:
            "../scripts/simulate_subject.py"
