"""Tests of the BIDS study simulator (fmrirecon.simulate)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fmrirecon.images import load_image
from fmrirecon.simulate import (
    DEFAULTS,
    IMAGERY_GAIN,
    bids_run_name,
    read_truth_trials,
    simulate_subject,
    study_plan,
    write_dataset_files,
    write_stimuli,
)
from fmrirecon.simulate import bold, encoding
from fmrirecon.simulate.stimuli import FAMILIES

SMALL = {
    "seed": 3,
    "subjects": 2,
    "image_size": 16,
    "n_train": 12,
    "n_train_repeated": 3,
    "n_test": 4,
    "test_repeats": 3,
    "imagery_repeats": 2,
    "trials_per_run": 8,
    "volume_shape": [12, 14, 10],
    "n_visual_voxels": 60,
}

FACES = Path(__file__).parents[2] / "shared/data/images/faces_celeba"


def _simulate(cfg, root: Path, subjects=None) -> Path:
    bids_dir = root / "bids"
    write_stimuli(cfg, bids_dir)
    write_dataset_files(cfg, bids_dir)
    for s in subjects or study_plan(cfg)["subjects"]:
        simulate_subject(cfg, bids_dir, s, root / "truth" / f"sub-{s}_truth.h5")
    return bids_dir


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    return _simulate(SMALL, root), root / "truth"


def _events(bids_dir, subject, task, run):
    return pd.read_csv(bids_dir / f"sub-{subject}" / "func" / f"{bids_run_name(subject, task, run)}_events.tsv",
                       sep="\t")


def _bold(bids_dir, subject, task, run):
    return nib.load(bids_dir / f"sub-{subject}" / "func" / f"{bids_run_name(subject, task, run)}_bold.nii.gz")


def test_stimuli_depend_on_the_stimulus_settings_only(tmp_path):
    from fmrirecon.simulate import STIMULUS_KEYS, stimulus_settings

    other = {**SMALL, "subjects": 3, "noise_psc": 2.5, "trials_per_run": 5, "n_unpaired": 4}
    assert stimulus_settings(other) == stimulus_settings(SMALL)
    assert set(stimulus_settings(SMALL)) == set(STIMULUS_KEYS)
    a = write_stimuli(SMALL, tmp_path / "a")
    b = write_stimuli(other, tmp_path / "b")
    assert [p.relative_to(tmp_path / "a") for p in a] == [p.relative_to(tmp_path / "b") for p in b]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))
    assert not (tmp_path / "a" / "participants.tsv").exists()  # the dataset files' job
    files = write_dataset_files(other, tmp_path / "a")
    assert len(pd.read_csv(tmp_path / "a" / "participants.tsv", sep="\t")) == 3
    assert '"noise_psc": 2.5' in (tmp_path / "a" / "README").read_text()
    assert {p.name for p in files} >= {"dataset_description.json", "participants.tsv", "README"}


def test_defaults_complete_and_plan_pure():
    plan = study_plan({})
    assert plan["subjects"] == ["01", "02"]
    assert plan["tasks"] == {"train": "train", "test": "test", "imagery": None}
    n_train_trials = DEFAULTS["n_train"] + DEFAULTS["n_train_repeated"]
    assert sum(r["task"] == "train" for r in plan["runs"]) == 2 * -(-n_train_trials // DEFAULTS["trials_per_run"])
    # Pure: a stimulus folder that does not exist is not looked at.
    plan2 = study_plan({"stimulus_folder": "/does/not/exist", "imagery_repeats": 1})
    assert plan2["tasks"]["imagery"] == "imagery"
    assert len(plan2["stimuli"]) == DEFAULTS["n_train"] + DEFAULTS["n_test"]
    with pytest.raises(ValueError):
        study_plan({"n_train_repeated": DEFAULTS["n_train"] + 1})


def test_plan_matches_files(study):
    bids_dir, truth_dir = study
    plan = study_plan(SMALL)
    stim_dir = bids_dir / "stimuli"
    assert sorted(p.name for p in stim_dir.glob("*.png")) == sorted(plan["stimuli"])
    planned = set()
    for run in plan["runs"]:
        prefix = bids_dir / f"sub-{run['subject']}" / "func" / bids_run_name(run["subject"], run["task"], run["run"])
        for suffix in ("_bold.nii.gz", "_bold.json", "_events.tsv"):
            assert Path(f"{prefix}{suffix}").exists(), f"{prefix}{suffix}"
        planned.add(Path(f"{prefix}_bold.nii.gz").name)
        events = _events(bids_dir, run["subject"], run["task"], run["run"])
        assert list(events.columns) == ["onset", "duration", "trial_type", "stim_file"]
        assert (events["trial_type"] == "image").all()
        assert all((stim_dir / f).exists() for f in events["stim_file"])
    written = {p.name for p in bids_dir.glob("sub-*/func/*_bold.nii.gz")}
    assert written == planned
    for s in plan["subjects"]:
        assert (bids_dir / f"sub-{s}" / "anat" / f"sub-{s}_T1w.nii.gz").exists()
        assert (truth_dir / f"sub-{s}_truth.h5").exists()
    desc = json.loads((bids_dir / "dataset_description.json").read_text())
    assert desc["BIDSVersion"] == "1.10.0" and desc["DatasetType"] == "raw"
    participants = pd.read_csv(bids_dir / "participants.tsv", sep="\t")
    assert participants["participant_id"].tolist() == ["sub-01", "sub-02"]
    assert {"sex", "age"} <= set(participants.columns)


def test_stimuli_table(study):
    bids_dir, _ = study
    table = pd.read_csv(bids_dir / "stimuli" / "stimuli.tsv", sep="\t")
    assert table["stim_file"].tolist() == study_plan(SMALL)["stimuli"]
    for split in ("train", "test"):
        assert set(table.loc[table["split"] == split, "family"]) == set(FAMILIES)
    images = {f: np.asarray(Image.open(bids_dir / "stimuli" / f)) for f in table["stim_file"]}
    assert all(img.shape == (16, 16) for img in images.values())
    train = [images[f] for f in table.loc[table["split"] == "train", "stim_file"]]
    test = [images[f] for f in table.loc[table["split"] == "test", "stim_file"]]
    assert not any(np.array_equal(a, b) for a in train for b in test)
    # Images are not blank.
    assert all(img.std() > 5 for img in images.values())


def test_determinism(study, tmp_path):
    bids_dir, truth_dir = study
    cfg = {**SMALL, "subjects": 1}
    other = _simulate(cfg, tmp_path, subjects=["01"])
    for f in sorted((bids_dir / "stimuli").glob("*.png")):
        assert f.read_bytes() == (other / "stimuli" / f.name).read_bytes()
    for run in (r for r in study_plan(cfg)["runs"]):
        a = _bold(bids_dir, "01", run["task"], run["run"]).get_fdata()
        b = _bold(other, "01", run["task"], run["run"]).get_fdata()
        np.testing.assert_array_equal(a, b)
    with h5py.File(truth_dir / "sub-01_truth.h5") as f1, \
            h5py.File(tmp_path / "truth" / "sub-01_truth.h5") as f2, \
            h5py.File(truth_dir / "sub-02_truth.h5") as g:
        np.testing.assert_array_equal(f1["trial_response"][()], f2["trial_response"][()])
        centres1, centres2 = f1["model/rf_center"][()], g["model/rf_center"][()]
        assert centres1.shape == centres2.shape
        assert not np.allclose(centres1, centres2)
        assert f1.attrs["seed"] != g.attrs["seed"]


def test_design(study):
    bids_dir, _ = study
    plan = study_plan(SMALL)
    for subject in plan["subjects"]:
        shown = {task: Counter() for task in ("train", "test", "imagery")}
        for run in (r for r in plan["runs"] if r["subject"] == subject):
            events = _events(bids_dir, subject, run["task"], run["run"])
            img = _bold(bids_dir, subject, run["task"], run["run"])
            sidecar = json.loads(Path(str(img.get_filename()).replace(".nii.gz", ".json")).read_text())
            assert sidecar["TaskName"] == run["task"]
            assert sidecar["RepetitionTime"] == pytest.approx(float(img.header.get_zooms()[3]))
            assert img.header.get_xyzt_units() == ("mm", "sec")
            assert img.header.get_zooms()[:3] == pytest.approx((3.0, 3.0, 3.0))
            run_length = img.shape[3] * sidecar["RepetitionTime"]
            assert events["onset"].min() >= 8
            assert (events["onset"] + events["duration"]).max() <= run_length - 8
            assert len(events) <= SMALL["trials_per_run"]
            shown[run["task"]].update(events["stim_file"])
        train = [f for f in plan["stimuli"] if f.startswith("train")]
        test = [f for f in plan["stimuli"] if f.startswith("test")]
        assert set(shown["train"]) == set(train)
        assert sorted(Counter(shown["train"].values()).items()) == [
            (1, SMALL["n_train"] - SMALL["n_train_repeated"]), (2, SMALL["n_train_repeated"])]
        assert set(shown["test"]) == set(test)
        assert set(shown["test"].values()) == {SMALL["test_repeats"]}
        assert set(shown["imagery"].values()) == {SMALL["imagery_repeats"]}
    # Subjects see the trials in different orders.
    assert not _events(bids_dir, "01", "train", 1).equals(_events(bids_dir, "02", "train", 1))


def test_truth_layout(study):
    bids_dir, truth_dir = study
    with h5py.File(truth_dir / "sub-01_truth.h5") as f:
        ijk, visual = f["voxel_ijk"][()], f["is_visual"][()]
        response = f["trial_response"][()]
        stim_response = f["model/stim_response"][()]
        assert visual.sum() == SMALL["n_visual_voxels"]
        assert response.shape == (len(read_truth_trials(truth_dir / "sub-01_truth.h5")), len(ijk))
        assert f["model/rf_center"].shape == (visual.sum(), 2)
        for key in f["runs"]:
            task, run = key.split("_run-")
            n_vols = _bold(bids_dir, "01", task, int(run)).shape[3]
            assert f["runs"][key]["translation"].shape == (n_vols, 3)
    # Brain voxels lie in the posterior part for the visual ones.
    assert ijk[visual, 1].mean() < ijk[~visual, 1].mean()
    trials = read_truth_trials(truth_dir / "sub-01_truth.h5")
    # Rows are the events of every run, ordered by task, run, onset.
    plan_runs = [r for r in study_plan(SMALL)["runs"] if r["subject"] == "01"]
    expected = pd.concat([_events(bids_dir, "01", r["task"], r["run"]).assign(task=r["task"], run=r["run"])
                          for r in plan_runs], ignore_index=True)
    assert trials["stim_file"].tolist() == expected["stim_file"].tolist()
    np.testing.assert_allclose(trials["onset"], expected["onset"])
    # Perceptual responses vary across images in visual voxels, and are 0 elsewhere.
    assert np.all(response[:, ~visual] == 0)
    perception = (trials["task"] != "imagery").to_numpy()
    assert np.median(response[perception][:, visual].std(axis=0)) > 0.2
    mean = response[perception][:, visual].mean()
    assert 0.5 * DEFAULTS["signal_psc"] < mean < 2 * DEFAULTS["signal_psc"]
    # Imagery: weaker than perception of the same image.
    imagery = ~perception
    assert response[imagery][:, visual].mean() == pytest.approx(IMAGERY_GAIN * mean, rel=0.3)
    assert stim_response.shape == (len(study_plan(SMALL)["stimuli"]), visual.sum())


def _dct(n, k):
    t = np.arange(n)
    return np.stack([np.cos(np.pi * j * (t + 0.5) / n) for j in range(k)], axis=1)


def test_signal_in_visual_voxels(study):
    bids_dir, truth_dir = study
    with h5py.File(truth_dir / "sub-01_truth.h5") as f:
        ijk, visual = f["voxel_ijk"][()], f["is_visual"][()]
        motion = {key: f["runs"][key]["translation"][()] for key in f["runs"]}
    corr = {"visual": [], "other": []}
    for run in (r for r in study_plan(SMALL)["runs"] if r["subject"] == "01" and r["task"] != "imagery"):
        img = _bold(bids_dir, "01", run["task"], run["run"])
        events = _events(bids_dir, "01", run["task"], run["run"])
        n = img.shape[3]
        design = bold.trial_regressors(events["onset"], events["duration"].iloc[0], n, 2.0).sum(axis=1)
        data = img.get_fdata(dtype=np.float32)[tuple(ijk.T)].T           # (n_vols, n_brain)
        # Nuisance: slow drift and the true head motion (what realignment would remove).
        move = motion[f"{run['task']}_run-{run['run']:02d}"]
        move = move - move.mean(axis=0)
        nuisance = np.hstack([_dct(n, 4), move, move ** 2])
        resid = data - nuisance @ np.linalg.lstsq(nuisance, data, rcond=None)[0]
        for name, keep in (("visual", visual), ("other", ~visual)):
            corr[name].append(np.corrcoef(resid[:, keep].mean(axis=1), design)[0, 1])
    assert np.mean(corr["visual"]) > 0.5
    assert np.mean(corr["other"]) < np.mean(corr["visual"]) - 0.3


def test_epi_mask_finds_brain(study):
    from nilearn.masking import compute_epi_mask

    bids_dir, truth_dir = study
    with h5py.File(truth_dir / "sub-01_truth.h5") as f:
        ijk = f["voxel_ijk"][()]
    img = _bold(bids_dir, "01", "train", 1)
    mask = compute_epi_mask(img).get_fdata().astype(bool)
    brain = np.zeros(img.shape[:3], dtype=bool)
    brain[tuple(ijk.T)] = True
    assert (mask & brain).sum() / (mask | brain).sum() > 0.7


def test_motion_is_applied_to_volumes():
    rng = np.random.default_rng(0)
    brain = encoding.make_brain([12, 12, 10], 3.0, 20, rng)
    trials = np.zeros((0, len(brain.voxel_ijk)), dtype=np.float32)
    data, translation = bold.simulate_run(
        brain, trials, [], 3.0, 2.0, 60, noise_psc=0.0, drift_psc=0.0, motion_mm=1.0, rng=rng)
    assert np.abs(translation).max() > 0.3
    grid = np.indices(brain.shape).reshape(3, -1)
    vols = data.reshape(-1, data.shape[3])
    com = (grid @ vols) / vols.sum(axis=0)                                  # (3, n_vols)
    moved = (com - com.mean(axis=1, keepdims=True)).T * 3.0                 # mm
    expected = translation - translation.mean(axis=0)
    for axis in range(3):
        assert np.corrcoef(moved[:, axis], expected[:, axis])[0, 1] > 0.95


def _tiny_folder(root: Path, n: int) -> Path:
    folder = root / "faces"
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        arr = (rng.random((24, 20, 3)) * 255).astype(np.uint8)   # non-square on purpose
        name = f"images/img_{i:02d}.png"
        Image.fromarray(arr).save(folder / name)
        rows.append({"file": name, "male": i % 2})
    pd.DataFrame(rows).to_csv(folder / "labels.tsv", sep="\t", index=False)
    return folder


def test_stimulus_folder(tmp_path):
    folder = _tiny_folder(tmp_path, 10)
    cfg = {**SMALL, "subjects": 1, "stimulus_folder": str(folder), "channels": 3,
           "n_train": 6, "n_train_repeated": 1, "n_test": 2, "imagery_repeats": 0}
    bids_dir = tmp_path / "bids"
    write_stimuli(cfg, bids_dir)
    table = pd.read_csv(bids_dir / "stimuli" / "stimuli.tsv", sep="\t")
    assert table["stim_file"].tolist() == study_plan(cfg)["stimuli"]
    assert table["family"].unique().tolist() == ["faces"]
    labels = pd.read_csv(folder / "labels.tsv", sep="\t").set_index("file")["male"]
    assert table["source_file"].is_unique
    assert table["male"].tolist() == labels[table["source_file"]].tolist()
    for _, row in table.iterrows():
        written = np.asarray(Image.open(bids_dir / "stimuli" / row["stim_file"]), dtype=np.float32) / 255
        source = load_image(folder / row["source_file"], 16, 3)
        np.testing.assert_allclose(written, source, atol=1 / 255 + 1e-6)
    simulate_subject(cfg, bids_dir, "01", tmp_path / "truth.h5")
    assert (bids_dir / "sub-01" / "func" / "sub-01_task-test_run-01_bold.nii.gz").exists()
    with pytest.raises(ValueError, match="only 10 images"):
        write_stimuli({**cfg, "n_train": 20}, tmp_path / "too_many")


def test_unpaired_images_are_new_draws_of_the_stimulus_families(tmp_path):
    from fmrirecon.simulate import write_unpaired

    cfg = {**SMALL, "n_unpaired": 9}
    write_stimuli(cfg, tmp_path / "bids")
    folder = write_unpaired(cfg, tmp_path / "unpaired")
    table = pd.read_csv(folder / "labels.tsv", sep="\t")
    assert len(table) == 9 and table["family"].value_counts().to_dict() == {
        "shape": 3, "letter": 3, "natural": 3}
    shown = [np.asarray(Image.open(p)) for p in sorted((tmp_path / "bids" / "stimuli").glob("*.png"))]
    for name in table["file"]:
        image = np.asarray(Image.open(folder / name))
        assert image.shape == shown[0].shape
        assert not any(np.array_equal(image, s) for s in shown)
    again = write_unpaired(cfg, tmp_path / "again")  # seeded
    assert all(np.array_equal(np.asarray(Image.open(folder / f)), np.asarray(Image.open(again / f)))
               for f in table["file"])
    with pytest.raises(ValueError, match="n_unpaired draws procedural images"):
        write_unpaired({**cfg, "stimulus_folder": str(tmp_path)}, tmp_path / "bad")


def test_disjoint_test_classes(tmp_path):
    folder = _tiny_folder(tmp_path, 40)
    labels = pd.read_csv(folder / "labels.tsv", sep="\t")
    labels["cls"] = [f"c{i % 8}" for i in range(len(labels))]   # 8 classes x 5 images
    labels.to_csv(folder / "labels.tsv", sep="\t", index=False)
    cfg = {**SMALL, "subjects": 1, "stimulus_folder": str(folder), "channels": 3,
           "n_train": 20, "n_train_repeated": 0, "n_test": 5, "disjoint_test_classes": "cls"}
    write_stimuli(cfg, tmp_path / "bids")
    table = pd.read_csv(tmp_path / "bids" / "stimuli" / "stimuli.tsv", sep="\t")
    train, test = table[table["split"] == "train"], table[table["split"] == "test"]
    assert len(train) == 20 and len(test) == 5 and table["source_file"].is_unique
    assert not set(test["cls"]) & set(train["cls"])
    # 20 training images need 4 classes of 5: 4 test classes remain for 5 test images
    assert test["cls"].nunique() == 4
    write_stimuli({**cfg, "n_train": 10}, tmp_path / "fewer")
    table = pd.read_csv(tmp_path / "fewer" / "stimuli" / "stimuli.tsv", sep="\t")
    assert table.loc[table["split"] == "test", "cls"].is_unique  # one class per test image
    write_stimuli({**cfg, "n_train": 10, "n_test": 6, "n_test_classes": 2}, tmp_path / "two")
    table = pd.read_csv(tmp_path / "two" / "stimuli" / "stimuli.tsv", sep="\t")
    test = table[table["split"] == "test"]
    assert test["cls"].value_counts().tolist() == [3, 3]  # taken in turn
    assert not set(test["cls"]) & set(table.loc[table["split"] == "train", "cls"])
    with pytest.raises(ValueError, match="disjoint from 36 training images"):  # 7 classes hold 35
        write_stimuli({**cfg, "n_train": 36, "n_test": 4}, tmp_path / "too_many")
    with pytest.raises(ValueError, match="no column 'wnid'"):
        write_stimuli({**cfg, "disjoint_test_classes": "wnid"}, tmp_path / "no_column")
    with pytest.raises(ValueError, match="needs a stimulus_folder"):
        write_stimuli({**SMALL, "disjoint_test_classes": "cls"}, tmp_path / "no_folder")


@pytest.mark.shared_data
@pytest.mark.skipif(not (FACES / "labels.tsv").exists(), reason=f"shared data not found at {FACES}")
def test_faces_celeba_folder(tmp_path):
    cfg = {"stimulus_folder": str(FACES), "n_train": 5, "n_train_repeated": 0, "n_test": 2,
           "image_size": 16, "channels": 3}
    write_stimuli(cfg, tmp_path)
    table = pd.read_csv(tmp_path / "stimuli" / "stimuli.tsv", sep="\t")
    assert len(table) == 7 and set(table["male"]) <= {0, 1}
    assert all((FACES / f).exists() for f in table["source_file"])
    assert np.asarray(Image.open(tmp_path / "stimuli" / table["stim_file"][0])).shape == (16, 16, 3)


def test_pybids_layout(study):
    bids = pytest.importorskip("bids")
    bids_dir, _ = study
    layout = bids.BIDSLayout(bids_dir, validate=True)
    plan = study_plan(SMALL)
    assert layout.get_subjects() == plan["subjects"]
    assert sorted(layout.get_tasks()) == sorted(t for t in plan["tasks"].values() if t)
    bold = layout.get(suffix="bold", extension=".nii.gz")
    assert len(bold) == len(plan["runs"])
    assert {(b.entities["subject"], b.entities["task"], int(b.entities["run"])) for b in bold} == {
        (r["subject"], r["task"], r["run"]) for r in plan["runs"]}
    assert layout.get_metadata(bold[0].path)["RepetitionTime"] == SMALL.get("tr", DEFAULTS["tr"])


def _validator():
    # The venv's bin directory is not always on PATH when pytest runs from it.
    path = os.pathsep.join([os.environ.get("PATH", ""), str(Path(sys.executable).parent)])
    return shutil.which("bids-validator-deno", path=path)


@pytest.mark.skipif(_validator() is None, reason="bids-validator-deno not installed (pip install bids-validator-deno)")
def test_bids_validator(study):
    bids_dir, _ = study
    out = subprocess.run([_validator(), "--format", "json", str(bids_dir)],
                         capture_output=True, text=True, timeout=120)
    report = json.loads(out.stdout)
    errors = [i for i in report["issues"]["issues"] if i["severity"] == "error"]
    assert errors == [], errors


def test_gabor_encoding_option(tmp_path):
    brain = encoding.make_brain([12, 14, 10], 3.0, 50, np.random.default_rng(0))
    prf = encoding.draw_model(brain, np.random.default_rng(1))
    gabor = encoding.draw_model(brain, np.random.default_rng(1), features="gabor")
    n_gabor = len(encoding.GABOR_ORIENTATIONS) * len(encoding.GABOR_WAVELENGTHS)
    assert gabor.feature_names == encoding.GABOR_FEATURES and prf.feature_names == encoding.FEATURES
    # Same receptive fields and luminance weights; the contrast weight is spread over
    # the oriented channels.
    np.testing.assert_array_equal(gabor.rf_center, prf.rf_center)
    np.testing.assert_array_equal(gabor.weights[:, n_gabor:], prf.weights[:, 1:])
    np.testing.assert_allclose(gabor.weights[:, :n_gabor].sum(axis=1), prf.weights[:, 0], rtol=1e-5)
    images = np.random.default_rng(2).uniform(0, 1, (3, 16, 16, 1)).astype(np.float32)
    assert gabor.features(images).shape == (3, 50, len(encoding.GABOR_FEATURES))

    # Energy is orientation selective and phase invariant, and blind to uniform images.
    x = np.arange(32)
    vertical = 0.5 + 0.4 * np.cos(2 * np.pi * x / 8)[None, :].repeat(32, axis=0)
    shifted = 0.5 + 0.4 * np.sin(2 * np.pi * x / 8)[None, :].repeat(32, axis=0)
    energy = encoding.gabor_energy(np.stack([vertical, vertical.T, shifted, np.full((32, 32), 0.7)]))
    coarse = energy[:, len(encoding.GABOR_ORIENTATIONS):, 8:24, 8:24].mean(axis=(2, 3))  # wavelength 8 px
    orientations = list(encoding.GABOR_ORIENTATIONS)
    assert coarse[0].argmax() == orientations.index(0) and coarse[1].argmax() == orientations.index(90)
    assert coarse[0].max() > 5 * coarse[0].min()
    np.testing.assert_allclose(coarse[2], coarse[0], rtol=0.05)
    assert np.abs(energy[3]).max() < 1e-4

    with pytest.raises(ValueError, match="features must be one of"):
        encoding.draw_model(brain, np.random.default_rng(1), features="vae")
    with pytest.raises(ValueError, match="encoding_features must be one of"):
        study_plan({**SMALL, "encoding_features": "latent"})

    # Through the simulator: the truth names the features; the default model is untouched.
    cfg = {**SMALL, "subjects": 1, "encoding_features": "gabor"}
    _simulate(cfg, tmp_path / "gabor")
    _simulate({**SMALL, "subjects": 1}, tmp_path / "prf")
    with h5py.File(tmp_path / "gabor" / "truth" / "sub-01_truth.h5") as f_g, \
            h5py.File(tmp_path / "prf" / "truth" / "sub-01_truth.h5") as f_p:
        assert list(f_g["model/weights"].attrs["features"]) == list(encoding.GABOR_FEATURES)
        assert list(f_p["model/weights"].attrs["features"]) == list(encoding.FEATURES)
        assert f_g["model/stim_response"].shape == f_p["model/stim_response"].shape
        assert not np.allclose(f_g["model/stim_response"][()], f_p["model/stim_response"][()])


def _write_brain_features(path: Path, stim_files, features: np.ndarray, layer="relu4") -> None:
    with h5py.File(path, "w") as f:
        f.attrs["stim_file"] = list(stim_files)
        f.create_dataset(layer, data=features.astype(np.float32))


def test_higher_area_responds_to_the_brain_network_layer(tmp_path):
    from fmrirecon.simulate import higher

    cfg = {**SMALL, "subjects": 1}
    bids_dir = tmp_path / "bids"
    write_stimuli(cfg, bids_dir)
    stimuli = study_plan(cfg)["stimuli"]
    rng = np.random.default_rng(5)
    features = np.maximum(rng.normal(0, 1, (len(stimuli), 3)) @ rng.normal(0, 1, (3, 24)), 0)
    # Two different images with the same features (the network's layer cannot tell them apart).
    features[1] = features[0]
    features_h5 = tmp_path / "brain.h5"
    _write_brain_features(features_h5, stimuli[::-1], features[::-1])   # any row order
    with_higher = {**cfg, "higher_area": {"fraction": 0.4, "train_network": {"folder": "unused"}}}
    simulate_subject(with_higher, bids_dir, "01", tmp_path / "higher.h5", brain_features=features_h5)
    simulate_subject(cfg, bids_dir, "01", tmp_path / "early.h5")

    with h5py.File(tmp_path / "higher.h5") as f, h5py.File(tmp_path / "early.h5") as e:
        index = f["higher/index"][()]
        area = higher.HigherArea(**{k: f["higher"][k][()] for k in
                                    ("index", "mean", "scale", "weights", "offset", "exponent", "gain")})
        response = f["model/stim_response"][()]
        early = e["model/stim_response"][()]
        depth = f["voxel_ijk"][()][f["is_visual"][()]][:, 1]
        assert f["higher"].attrs["layer"] == "relu4"
    n_visual = response.shape[1]
    assert len(index) == round(0.4 * n_visual)
    # The higher area is the part of the visual patch farthest from the pole.
    rest = np.setdiff1d(np.arange(n_visual), index)
    assert depth[index].min() >= depth[rest].max()
    # Its responses are the tuned read-out of the layer, exactly ...
    np.testing.assert_allclose(response[:, index], area.predict(features), rtol=1e-6)
    np.testing.assert_array_equal(response[0, index], response[1, index])
    # ... calibrated like the early voxels (mean response near signal_psc) ...
    assert 0.5 < response[:, index].mean() / DEFAULTS["signal_psc"] < 2.0
    # ... and the early voxels are the very same as without the higher area.
    np.testing.assert_array_equal(response[:, rest], early[:, rest])
    assert not np.allclose(response[:, index], early[:, index])
    assert not np.allclose(early[0, index], early[1, index])

    with pytest.raises(ValueError, match="pass the brain network's features"):
        simulate_subject(with_higher, bids_dir, "01", tmp_path / "x.h5")
    _write_brain_features(features_h5, stimuli[1:], features[1:])
    with pytest.raises(ValueError, match=f"{features_h5}: no features for 1 stimuli"):
        simulate_subject(with_higher, bids_dir, "01", tmp_path / "x.h5", brain_features=features_h5)
    for bad, message in [({"fraction": 0}, "fraction must be in"),
                         ({"train_network": {"folder": "x"}, "layers": "fc5"}, "unknown keys"),
                         ({"fraction": 0.5}, "give the labelled image folder")]:
        with pytest.raises(ValueError, match=message):
            study_plan({**cfg, "higher_area": bad})


def test_a_mistyped_simulate_key_is_an_error_naming_it():
    from fmrirecon.simulate import study_plan

    with pytest.raises(ValueError, match=r"unknown key 'n_trian' \(did you mean 'n_train'\?\)"):
        study_plan({"n_trian": 100})
    assert len(study_plan({"n_train": 20, "n_train_repeated": 0})["stimuli"]) > 0
