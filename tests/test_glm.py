"""Single-trial betas: recovery of planted amplitudes, agreement with nilearn."""

import logging

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.glm.first_level import FirstLevelModel, compute_regressor
from nilearn.interfaces.fmriprep import load_confounds

from fmrirecon.glm import load_trial_events, single_trial_betas
from fmrirecon.preprocess import derivative_paths

SHAPE = (8, 8, 6)
TR = 2.0
N_VOLS = 80
N_TRIALS = 20
BASELINE = 1000.0


def _onsets(rng):
    return 4.0 + 7.0 * np.arange(N_TRIALS) + rng.uniform(0, 1.5, N_TRIALS)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two runs (task train, task test) with known per-trial amplitudes.

    Voxels with x < 4 respond with the trial amplitude (percent signal change)
    convolved with the Glover HRF; the others are noise only. The test run shows
    10 stimuli twice each.
    """
    tmp = tmp_path_factory.mktemp("glm")
    rng = np.random.default_rng(1)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[1:7, 1:7, 1:5] = 1
    signal_voxels = np.zeros(SHAPE, dtype=bool)
    signal_voxels[:4] = True
    frame_times = np.arange(N_VOLS) * TR
    runs, amplitudes = [], []
    for run, task in ((1, "train"), (2, "test")):
        onsets = _onsets(rng)
        amps = rng.normal(2.0, 1.0, N_TRIALS)
        stims = ([f"train_{i:02d}.png" for i in range(N_TRIALS)] if task == "train"
                 else [f"test_{i % 10:02d}.png" for i in range(N_TRIALS)])
        response = np.zeros(N_VOLS)
        for onset, amp in zip(onsets, amps):
            reg, _ = compute_regressor(np.array([[onset], [1.0], [amp]]), "glover", frame_times)
            response += reg[:, 0]
        drift = 5.0 * np.cos(np.pi * frame_times / frame_times[-1])  # slow scanner drift
        data = BASELINE + drift + rng.normal(0, 1.0, (*SHAPE, N_VOLS))
        data[signal_voxels] += BASELINE / 100.0 * response
        paths = derivative_paths(tmp, "01", task, run)
        paths["bold"].parent.mkdir(parents=True, exist_ok=True)
        img = nib.Nifti1Image(data.astype(np.float32), affine)
        img.header.set_zooms((3.0, 3.0, 3.0, TR))
        img.to_filename(paths["bold"])
        nib.Nifti1Image(mask, affine).to_filename(paths["mask"])
        motion = pd.DataFrame(rng.normal(0, 0.05, (N_VOLS, 6)),
                              columns=["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"])
        motion.to_csv(paths["confounds"], sep="\t", index=False)
        events = tmp / f"sub-01_task-{task}_run-{run}_events.tsv"
        pd.DataFrame({"onset": onsets, "duration": 1.0, "trial_type": "image",
                      "stim_file": stims}).to_csv(events, sep="\t", index=False)
        runs.append({"bold": paths["bold"], "mask": paths["mask"], "confounds": paths["confounds"],
                     "events": events, "task": task, "run": run, "tr": TR})
        amplitudes.append(amps)
    return {"runs": runs, "amplitudes": np.concatenate(amplitudes), "mask": mask.astype(bool),
            "signal": signal_voxels, "tmp": tmp}


SPLITS = {"train": ["train"], "test": ["test"], "imagery": ["imagery"]}


def _signal_columns(betas, dataset):
    i, j, k = betas.voxel_ijk.T
    return dataset["signal"][i, j, k]


def _check_recovery(betas, dataset, min_r=0.9):
    signal = _signal_columns(betas, dataset)
    mean_signal = betas.betas[:, signal].mean(axis=1)
    r = np.corrcoef(mean_signal, dataset["amplitudes"])[0, 1]
    assert r > min_r
    # units are percent signal change: the mean amplitude comes back at its scale
    assert mean_signal.mean() == pytest.approx(dataset["amplitudes"].mean(), rel=0.15)
    assert np.abs(betas.betas[:, ~signal].mean(axis=1)).max() < 0.5


def test_lsa_recovers_amplitudes(dataset, caplog):
    runs = dataset["runs"] + [dict(dataset["runs"][0], task="localizer")]
    with caplog.at_level(logging.WARNING):
        betas = single_trial_betas(runs, SPLITS, method="lsa", progress=False)
    assert "localizer" in caplog.text
    assert betas.betas.shape == (2 * N_TRIALS, dataset["mask"].sum())
    assert betas.betas.dtype == np.float32
    _check_recovery(betas, dataset, min_r=0.95)
    assert betas.attrs["glm_method"] == "lsa"
    assert betas.shape == SHAPE
    np.testing.assert_array_equal(betas.voxel_ijk, np.argwhere(dataset["mask"]))

    trials = betas.trials
    assert list(trials.columns) == ["trial", "task", "run", "onset", "duration", "stim_file",
                                    "split", "repetition", "session", "stim_id"]
    assert list(trials["trial"]) == list(range(2 * N_TRIALS))
    assert list(trials["split"]) == ["train"] * N_TRIALS + ["test"] * N_TRIALS
    assert (trials.loc[trials["split"] == "train", "repetition"] == 1).all()
    test = trials[trials["split"] == "test"]
    assert list(test["repetition"]) == [1] * 10 + [2] * 10
    assert list(test["stim_file"][:2]) == ["test_00.png", "test_01.png"]
    assert (np.diff(test["onset"]) > 0).all()


def test_lsa_matches_first_level_model(dataset):
    """Reference check: LSA betas equal FirstLevelModel effect sizes."""
    run = dataset["runs"][1]
    betas = single_trial_betas([run], SPLITS, method="lsa", progress=False)
    events = pd.read_csv(run["events"], sep="\t")
    events["trial_type"] = [f"trial{i:05d}" for i in range(len(events))]
    confounds, _ = load_confounds(str(run["bold"]), strategy=("motion",), motion="basic")
    for noise_model in ("ols", "ar1"):
        ours = single_trial_betas([run], SPLITS, method="lsa", noise_model=noise_model,
                                  progress=False).betas if noise_model == "ar1" else betas.betas
        model = FirstLevelModel(t_r=TR, hrf_model="glover", drift_model="cosine", high_pass=0.01,
                                noise_model=noise_model, mask_img=run["mask"], signal_scaling=0)
        model.fit(run["bold"], events=events[["onset", "duration", "trial_type"]],
                  confounds=confounds)
        for trial in (0, 7, 19):
            effect = model.compute_contrast(f"trial{trial:05d}", output_type="effect_size")
            expected = effect.get_fdata()[dataset["mask"]]
            np.testing.assert_allclose(ours[trial], expected, rtol=1e-4, atol=1e-4)


def test_lss_recovers_amplitudes(dataset):
    betas = single_trial_betas(dataset["runs"], SPLITS, method="lss", progress=False)
    assert betas.attrs["glm_method"] == "lss"
    # LSS lumps the other trials into one regressor, so at high SNR it trails LSA a little
    _check_recovery(betas, dataset, min_r=0.85)
    lsa = single_trial_betas(dataset["runs"], SPLITS, method="lsa", confounds="none",
                             progress=False)
    # different estimators, same planted responses
    signal = _signal_columns(lsa, dataset)
    assert np.corrcoef(lsa.betas[:, signal].mean(1), betas.betas[:, signal].mean(1))[0, 1] > 0.85


def test_bad_events(dataset):
    run = dict(dataset["runs"][0])
    bad = dataset["tmp"] / "sub-01_task-train_run-9_events.tsv"
    pd.DataFrame({"onset": [1.0, 5.0], "duration": [1.0, 1.0]}).to_csv(bad, sep="\t", index=False)
    with pytest.raises(ValueError, match=r"run-9_events\.tsv.*stim_file"):
        single_trial_betas([dict(run, events=bad)], SPLITS, progress=False)
    late = dataset["tmp"] / "sub-01_task-train_run-8_events.tsv"
    pd.DataFrame({"onset": [1.0, N_VOLS * TR + 4], "duration": [1.0, 1.0],
                  "stim_file": ["a.png", "b.png"]}).to_csv(late, sep="\t", index=False)
    with pytest.raises(ValueError, match=r"run-8_events\.tsv.*outside the run"):
        single_trial_betas([dict(run, events=late)], SPLITS, progress=False)
    with pytest.raises(ValueError, match=r"run-7_events\.tsv.*onset in row\(s\) \[0\]"):
        empty_onset = dataset["tmp"] / "sub-01_task-train_run-7_events.tsv"
        empty_onset.write_text("onset\tduration\tstim_file\nn/a\t1\ta.png\n")
        load_trial_events(empty_onset, N_VOLS, TR)


@pytest.mark.parametrize("method, noise_model", [("lsa", "ols"), ("lss", "ols"), ("lss", "ar1"), ("denoised", "ols")])
def test_rank_deficient_design_is_refused(dataset, method, noise_model):
    """Two trials at one onset (a duplicated events row) cannot be told apart: the GLM
    refuses, naming both, instead of returning betas of 1e14."""
    run = dict(dataset["runs"][0])
    events = pd.read_csv(run["events"], sep="\t")
    doubled = dataset["tmp"] / "sub-01_task-train_run-6_events.tsv"
    pd.concat([events, events.iloc[[3]]]).to_csv(doubled, sep="\t", index=False)
    onset = f"{events['onset'].iloc[3]:g}"
    with pytest.raises(ValueError, match=rf"run-6_events\.tsv: the single-trial design is rank-deficient.*"
                                         rf"trials at onset {onset} s \(train_03\.png\), onset {onset} s \(train_03"):
        single_trial_betas([dict(run, events=doubled)], SPLITS, method=method,
                           noise_model=noise_model, progress=False)


def test_well_posed_designs_pass_the_rank_check(dataset):
    from fmrirecon.glm import check_design_rank

    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, 12))
    check_design_rank(X, range(10), pd.DataFrame({"onset": np.arange(10.0), "stim_file": "a"}), "x")
    X[:, 11] = X[:, 0] + X[:, 1]  # a nuisance column reproduces two trials
    with pytest.raises(ValueError, match=r"trials at onset 0 s \(a\), onset 1 s \(a\) cannot"):
        check_design_rank(X, range(10), pd.DataFrame({"onset": np.arange(10.0), "stim_file": "a"}), "x")


def test_bad_inputs(dataset):
    run = dataset["runs"][0]
    with pytest.raises(ValueError, match="method"):
        single_trial_betas([run], SPLITS, method="glmsingle", progress=False)
    with pytest.raises(ValueError, match="no run"):
        single_trial_betas([run], {"test": ["test"]}, progress=False)
    other_grid = dataset["tmp"] / "mask_other.nii.gz"
    nib.Nifti1Image(np.ones((4, 4, 4), dtype=np.uint8), np.eye(4)).to_filename(other_grid)
    with pytest.raises(ValueError, match="mask_other"):
        single_trial_betas([dict(run, mask=other_grid), dataset["runs"][1]], SPLITS,
                           progress=False)


def _nilearn_lss(run, noise_model, trials):
    """Reference LSS: one FirstLevelModel per trial, trial vs all the others."""
    events = pd.read_csv(run["events"], sep="\t")
    confounds, _ = load_confounds(str(run["bold"]), strategy=("motion",), motion="basic")
    out = {}
    for trial in trials:
        types = np.full(len(events), "other", dtype=object)
        types[trial] = "target"
        frame = pd.DataFrame({"onset": events["onset"], "duration": events["duration"],
                              "trial_type": types})
        model = FirstLevelModel(t_r=TR, hrf_model="glover", drift_model="cosine", high_pass=0.01,
                                noise_model=noise_model, mask_img=run["mask"], signal_scaling=0)
        model.fit(run["bold"], events=frame, confounds=confounds)
        out[trial] = model.compute_contrast("target", output_type="effect_size").get_fdata()
    return out


@pytest.mark.parametrize("noise_model", ["ols", "ar1"])
def test_lss_matches_first_level_model_per_trial(dataset, noise_model):
    """Reference check: LSS (closed form for OLS, nilearn's run_glm for AR(1)) equals
    one nilearn FirstLevelModel per trial, every trial (OLS) or three (AR(1))."""
    run = dataset["runs"][0]
    ours = single_trial_betas([run], SPLITS, method="lss", noise_model=noise_model,
                              progress=False).betas
    trials = range(N_TRIALS) if noise_model == "ols" else (0, 9, 19)
    for trial, effect in _nilearn_lss(run, noise_model, trials).items():
        # same tolerance as LSA: FirstLevelModel scales the float32 data in float32
        # (differences ~3e-5 on betas ~2, with nilearn's own run_glm too, as for AR(1));
        # the algebra itself is exact to 1e-9 (test_closed_forms_match_run_glm)
        np.testing.assert_allclose(ours[trial], effect[dataset["mask"]], rtol=1e-4, atol=1e-4)


def test_closed_forms_match_run_glm():
    """lsa_betas / lss_betas equal run_glm(..., "ols") on the explicit designs (1e-9)."""
    from nilearn.glm.first_level import make_first_level_design_matrix, run_glm

    from fmrirecon.glm import lsa_betas, lss_betas

    rng = np.random.default_rng(3)
    frame_times = np.arange(120) * 1.5
    onsets = np.sort(rng.uniform(0, 165, 25))
    names = [f"trial{i:05d}" for i in range(25)]
    confounds = rng.normal(size=(120, 6))
    Y = rng.normal(size=(120, 300))

    def design(types):
        frame = pd.DataFrame({"onset": onsets, "duration": 1.0, "trial_type": types})
        return make_first_level_design_matrix(frame_times, frame, hrf_model="glover",
                                              drift_model="cosine", high_pass=0.01,
                                              add_regs=confounds)

    X = design(names)
    cols = [X.columns.get_loc(n) for n in names]
    _, res = run_glm(Y, X.to_numpy(), noise_model="ols")
    np.testing.assert_allclose(lsa_betas(Y, X.to_numpy(), cols), res[0.0].theta[cols],
                               rtol=1e-9, atol=1e-9)
    lss = lss_betas(Y, X.to_numpy(), cols)
    for i in range(25):
        types = np.array(["other"] * 25, dtype=object)
        types[i] = "target"
        Xi = design(types)
        _, res = run_glm(Y, Xi.to_numpy(), noise_model="ols")
        np.testing.assert_allclose(lss[i], res[0.0].theta[Xi.columns.get_loc("target")],
                                   rtol=1e-9, atol=1e-9)


def test_images_shown_outside_the_trials_are_modelled_not_left_in_the_residual(tmp_path):
    """A one-back repetition (excluded from the trials by design.exclude) still drove the
    BOLD: modelled as a nuisance regressor, it does not leak into its neighbours' betas."""
    rng = np.random.default_rng(5)
    (tmp_path / "stimuli").mkdir()
    onsets = 6.0 + 12.0 * np.arange(12)
    amps = rng.uniform(1.0, 3.0, 12)
    repeats = onsets[[2, 5, 8]] + 5.0  # a strong response 5 s after three trials
    frame_times = np.arange(N_VOLS * 2) * TR
    response = np.zeros(len(frame_times))
    for onset, amp in list(zip(onsets, amps)) + [(o, 4.0) for o in repeats]:
        reg, _ = compute_regressor(np.array([[onset], [1.0], [amp]]), "glover", frame_times)
        response += reg[:, 0]
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[1:7, 1:7, 1:5] = 1
    data = BASELINE + rng.normal(0, 0.5, (*SHAPE, len(frame_times)))
    data[:4] += BASELINE / 100.0 * response
    paths = derivative_paths(tmp_path / "prep", "01", "train", 1)
    paths["bold"].parent.mkdir(parents=True)
    nib.Nifti1Image(data.astype(np.float32), np.eye(4)).to_filename(paths["bold"])
    nib.Nifti1Image(mask, np.eye(4)).to_filename(paths["mask"])
    rows = [dict(onset=o, duration=1.0, event_type=1, stim_file=f"s{i}.png") for i, o in enumerate(onsets)]
    rows += [dict(onset=o, duration=1.0, event_type=2, stim_file=f"s{i}.png") for i, o in zip((2, 5, 8), repeats)]
    for i in range(12):
        (tmp_path / "stimuli" / f"s{i}.png").write_bytes(b"x")
    pd.DataFrame(rows).to_csv(tmp_path / "events.tsv", sep="\t", index=False)
    run = {"bold": paths["bold"], "mask": paths["mask"], "confounds": None, "events": tmp_path / "events.tsv",
           "task": "train", "run": 1, "tr": TR, "splits": ["train"],
           "design": {"exclude": {"event_type": [2]}},
           "stimuli": {"column": "stim_file", "folder": str(tmp_path / "stimuli"), "table": None}}
    betas = single_trial_betas([run], SPLITS, confounds="none", progress=False)
    assert len(betas.trials) == 12  # the repetitions are not trials
    signal = betas.betas[:, betas.voxel_ijk[:, 0] < 4].mean(1)
    error = np.abs(signal - amps)
    # measured: 0.0x with the nuisance regressor; 0.5-1.3 on the trials before a
    # repetition when it is left out of the model (the previous behaviour)
    assert error.max() < 0.2, error
