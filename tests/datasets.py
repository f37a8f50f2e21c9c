"""Small datasets in the layouts users bring, written by the tests (random content,
real file names): multi-session BIDS with planted responses, fMRIPrep derivatives with
sessions, the ds001506 conventions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import yaml
from nilearn.glm.first_level import compute_regressor
from PIL import Image

from conftest import REPO

SHAPE = (10, 10, 4)  # thinner than 5 slices: light's mask has no opening
TR = 2.0
N_VOLS = 64
BASELINE = 1000.0


def brain_mask():
    mask = np.zeros(SHAPE, dtype=bool)
    mask[2:8, 2:8, :] = True
    return mask


def signal_voxels():
    signal = np.zeros(SHAPE, dtype=bool)
    signal[2:5, 2:8, :] = True
    return signal


def write_image(path: Path, seed: int, size: int = 16) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(path)


def bold_series(onsets, amplitudes, rng, duration=2.0):
    """A 4-D run: baseline, the planted trial responses in the signal voxels, noise."""
    frame_times = np.arange(N_VOLS) * TR
    response = np.zeros(N_VOLS)
    for onset, amp in zip(onsets, amplitudes):
        reg, _ = compute_regressor(np.array([[onset], [duration], [amp]]), "glover", frame_times)
        response += reg[:, 0]
    data = np.where(brain_mask()[..., None], BASELINE, 100.0) + rng.normal(0, 1.0, (*SHAPE, N_VOLS))
    data[signal_voxels()] += BASELINE / 100.0 * response
    return data.astype(np.float32)


def save_bold(path: Path, data: np.ndarray, tr: float = TR, affine=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, np.diag([3.0, 3.0, 3.0, 1.0]) if affine is None else affine)
    img.header.set_zooms((3.0, 3.0, 3.0, tr))
    img.header.set_xyzt_units("mm", "sec")
    img.to_filename(path)


def dataset_description(root: Path, name="test dataset", derivative=False) -> None:
    root.mkdir(parents=True, exist_ok=True)
    description = {"Name": name, "BIDSVersion": "1.10.0"}
    if derivative:
        description.update(DatasetType="derivative", GeneratedBy=[{"Name": "fMRIPrep", "Version": "25.1.4"}])
    (root / "dataset_description.json").write_text(json.dumps(description))


def two_session_dataset(root: Path, seed: int = 0, sessions=("01", "02"), subject="01"):
    """A BIDS dataset whose sessions both hold task-train_run-01 and task-test_run-01.

    Every trial has its own planted amplitude (percent signal change in the signal
    voxels); the sessions' amplitudes are drawn independently, so a trial fitted on
    the other session's BOLD does not recover its own.

    Returns
    -------
    DataFrame
        One row per trial: session, task, onset, stim_file, amplitude.
    """
    rng = np.random.default_rng(seed)
    dataset_description(root)
    (root / "participants.tsv").write_text(f"participant_id\nsub-{subject}\n")
    truth = []
    onsets = 6.0 + 9.0 * np.arange(12)
    for s, session in enumerate(sessions):
        for task in ("train", "test"):
            if task == "train":
                stims = [f"train_{12 * s + i:02d}.png" for i in range(12)]
            else:
                stims = [f"test_{i % 10:02d}.png" for i in range(12)]
            amplitudes = rng.uniform(0.5, 4.0, len(onsets))
            func = root / f"sub-{subject}" / f"ses-{session}" / "func"
            stem = func / f"sub-{subject}_ses-{session}_task-{task}_run-01"
            save_bold(Path(f"{stem}_bold.nii.gz"), bold_series(onsets, amplitudes, rng))
            Path(f"{stem}_bold.json").write_text(json.dumps({"RepetitionTime": TR, "TaskName": task}))
            pd.DataFrame({"onset": onsets, "duration": 2.0, "trial_type": "image",
                          "stim_file": stims}).to_csv(f"{stem}_events.tsv", sep="\t", index=False)
            for stim in stims:
                if not (root / "stimuli" / stim).is_file():
                    write_image(root / "stimuli" / stim, seed=hash(stim) % 2**31)
            truth.append(pd.DataFrame({"session": session, "task": task, "onset": onsets,
                                       "stim_file": stims, "amplitude": amplitudes}))
    return pd.concat(truth, ignore_index=True)


def fmriprep_derivatives(bids: Path, out: Path, space="T1w", res=None) -> None:
    """fMRIPrep-named derivatives of every run of ``bids`` (the raw data as if
    preprocessed: same voxels), with sessions, ``space-`` (and ``res-``) in the names."""
    dataset_description(out, "fMRIPrep - fMRI PREProcessing workflow", derivative=True)
    for bold in sorted(bids.glob("sub-*/**/func/*_bold.nii.gz")):
        rel = bold.relative_to(bids).parent
        stem = bold.name.removesuffix("_bold.nii.gz")
        spaced = f"{stem}_space-{space}" + (f"_res-{res}" if res else "")
        target = out / rel
        target.mkdir(parents=True, exist_ok=True)
        img = nib.load(bold)
        nib.save(img, target / f"{spaced}_desc-preproc_bold.nii.gz")
        nib.save(nib.Nifti1Image(brain_mask().astype(np.uint8), img.affine),
                 target / f"{spaced}_desc-brain_mask.nii.gz")
        n = img.shape[3]
        rng = np.random.default_rng(n)
        pd.DataFrame(rng.normal(0, 0.01, (n, 6)), columns=["trans_x", "trans_y", "trans_z", "rot_x", "rot_y",
                                                          "rot_z"]).to_csv(
            target / f"{stem}_desc-confounds_timeseries.tsv", sep="\t", index=False)


TINY_METHODS = {
    "voxels": {"select": "all", "n_top": None},
    "images": {"size": 16},
    "methods": {"pca": {"n_components": 5}},
    "evaluation": {"n_way": [2, 5], "n_boot": 100},
}


def run_snakemake(workdir: Path, config: dict, *targets, check=True, extra=()):
    """Run the repository's workflow in ``workdir`` with ``config``; return the process."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
           str(workdir), "--configfile", str(workdir / "config.yaml"), "--cores", "2", *extra, *targets]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done
