"""Small datasets in the layouts users bring, written by the tests (random content,
real file names): multi-session BIDS with planted responses, fMRIPrep derivatives with
sessions, the ds001506 conventions, the NSD layout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import yaml
from nilearn.glm.first_level import compute_regressor
from PIL import Image

from conftest import REPO

SHAPE = (12, 12, 8)
TR = 2.0
N_VOLS = 64
BASELINE = 1000.0


def brain_mask():
    # a brain with edges on every axis, as real data have: light preprocessing's
    # realignment (phase correlation) needs them
    mask = np.zeros(SHAPE, dtype=bool)
    mask[2:10, 2:10, 1:7] = True
    return mask


def signal_voxels():
    signal = np.zeros(SHAPE, dtype=bool)
    signal[2:6, 2:10, 1:7] = True
    return signal


def signal_columns(voxel_ijk):
    """Which betas columns are signal voxels, and each one's index in a planted pattern
    (patterns run over ``signal_voxels()`` in C order)."""
    signal = signal_voxels()
    position = -np.ones(SHAPE, dtype=int)
    position[signal] = np.arange(signal.sum())
    i, j, k = np.asarray(voxel_ijk).T
    columns = signal[i, j, k]
    return columns, position[i, j, k][columns]


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


def two_session_dataset(root: Path, seed: int = 0, sessions=("01", "02"), subject="01",
                        as_runs: bool = False):
    """A BIDS dataset whose sessions both hold task-train_run-01 and task-test_run-01.

    With ``as_runs`` the same data without sessions: session ``s`` becomes run ``s``
    (``sub-01/func/sub-01_task-train_run-02``), a layout older code can read too.

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
            if as_runs:
                stem = root / f"sub-{subject}" / "func" / f"sub-{subject}_task-{task}_run-{session}"
            else:
                stem = (root / f"sub-{subject}" / f"ses-{session}" / "func"
                        / f"sub-{subject}_ses-{session}_task-{task}_run-01")
            stem.parent.mkdir(parents=True, exist_ok=True)
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


# ---------------------------------------------------------------- ds001506 conventions

DS001506_SESSIONS = {  # session label -> (task, runs, split in the config below)
    "perceptionNaturalImageTraining01": ("perception", 2, "train"),
    "perceptionNaturalImageTraining02": ("perception", 2, "train"),
    "perceptionNaturalImageTest01": ("perception", 2, "test"),
    "perceptionLetterImage01": ("perception", 1, None),
    "imagery01": ("imagery", 1, "imagery"),
}
#: The config a user writes for it (README, "Your own data").
DS001506_DESIGN = {
    "split_by": "session",
    "train_sessions": ["perceptionNaturalImageTraining*"],
    "test_sessions": ["perceptionNaturalImageTest*"],
    "imagery_sessions": ["imagery*"],
    # rest before/after the run, and the one-back repetitions of the perception runs
    "exclude": {"event_type": [-1, -2]},
    "exclude_split": {"train": {"event_type": [2]}, "test": {"event_type": [2]},
                      "imagery": {"event_type": [1, 3]}},
}


def _imagenet_name(rng):
    return f"n{rng.integers(1_000_000, 9_999_999):08d}_{rng.integers(1, 30_000)}"


def ds001506_like(root: Path, images: Path, seed: int = 0, n_per_run: int = 10):
    """A dataset laid out as OpenNeuro ds001506 (Shen et al. 2019), tiny and random.

    Sessions ``ses-perceptionNaturalImageTraining01..``, ``ses-perceptionNaturalImageTest01``,
    ``ses-perceptionLetterImage01`` (in no split of the config) and ``ses-imagery01``;
    the T1w in ``ses-anatomy``. Perception events: ``onset duration trial_no event_type
    stimulus_id stimulus_name`` with pre- and post-rest rows (event_type -1 / -2, no
    stimulus) and one one-back repetition per run (event_type 2, the previous image
    again); imagery events: cue (1), imagery (2) and rating (3) rows. The images are
    ImageNet-style JPEGs named ``<stimulus_name>.JPEG`` in ``images`` (outside the
    dataset). Each trial's response is a fixed linear map of its image (weaker for
    imagery).

    Returns
    -------
    DataFrame
        Every stimulus trial kept by :data:`DS001506_DESIGN`: session, run, onset,
        stim_file, and ``pattern`` (the planted response of each signal voxel).
    """
    rng = np.random.default_rng(seed)
    dataset_description(root, "Deep Image Reconstruction")
    (root / "participants.tsv").write_text("participant_id\nsub-01\n")
    (root / "README").write_text("ds001506-like test fixture\n")
    anat = root / "sub-01" / "ses-anatomy" / "anat"
    anat.mkdir(parents=True)
    nib.save(nib.Nifti1Image(rng.normal(100, 10, (12, 12, 12)).astype(np.float32), np.eye(4)),
             anat / "sub-01_ses-anatomy_T1w.nii.gz")
    signal = signal_voxels()
    n_signal = int(signal.sum())
    weights = rng.normal(0, 1, (16, n_signal))

    def features(name):
        img = np.asarray(Image.open(images / f"{name}.JPEG").convert("L"), dtype=float) / 255
        return img.reshape(4, 4, 4, 4).mean(axis=(1, 3)).ravel() - 0.5

    def new_image():
        name = _imagenet_name(rng)
        images.mkdir(parents=True, exist_ok=True)
        smooth = np.kron(rng.integers(0, 256, (4, 4)), np.ones((4, 4))).astype(np.uint8)
        Image.fromarray(smooth).save(images / f"{name}.JPEG", quality=95)
        return name, f"{rng.integers(1_000_000, 9_999_999)}.{rng.integers(1, 999_999):06d}"

    test_images = [new_image() for _ in range(n_per_run)]
    truth = []
    frame_times = np.arange(N_VOLS) * TR
    for session, (task, n_runs, split) in DS001506_SESSIONS.items():
        func = root / "sub-01" / f"ses-{session}" / "func"
        for run in range(1, n_runs + 1):
            rows = [dict(onset=0.0, duration=6.0, trial_no=0, event_type=-1,
                         stimulus_id="n/a", stimulus_name="n/a")]
            shown = []  # (onset, duration, name, scale) of what drives the BOLD
            t = 6.0
            if task == "perception":
                run_images = test_images if split == "test" else [new_image() for _ in range(n_per_run)]
                order = list(run_images) + [run_images[3]]  # one repetition, right after its image
                order.insert(4, order.pop())
                for i, (name, sid) in enumerate(order):
                    repeat = i == 4
                    rows.append(dict(onset=t, duration=4.0, trial_no=i + 1, event_type=2 if repeat else 1,
                                     stimulus_id=sid, stimulus_name=name))
                    shown.append((t, 4.0, name, 1.0, repeat))
                    t += 10.0
            else:
                for i, (name, sid) in enumerate(test_images[:4]):
                    rows += [dict(onset=t, duration=2.0, trial_no=i + 1, event_type=1, stimulus_id=sid,
                                  stimulus_name=name),
                             dict(onset=t + 2, duration=6.0, trial_no=i + 1, event_type=2, stimulus_id=sid,
                                  stimulus_name=name),
                             dict(onset=t + 8, duration=2.0, trial_no=i + 1, event_type=3,
                                  stimulus_id="n/a", stimulus_name="n/a")]
                    shown.append((t + 2, 6.0, name, 0.5, False))
                    t += 24.0
            rows.append(dict(onset=t, duration=6.0, trial_no=0, event_type=-2, stimulus_id="n/a",
                             stimulus_name="n/a"))
            data = np.where(brain_mask()[..., None], BASELINE, 100.0) + rng.normal(0, 1.0, (*SHAPE, N_VOLS))
            for onset, duration, name, scale, repeat in shown:
                reg, _ = compute_regressor(np.array([[onset], [duration], [1.0]]), "glover", frame_times)
                pattern = scale * features(name) @ weights
                data[signal] += BASELINE / 100.0 * pattern[:, None] * reg[:, 0][None]
                if split is not None and not repeat:
                    truth.append(dict(session=session, run=run, onset=onset, stim_file=f"{name}.JPEG",
                                      pattern=pattern))
            stem = func / f"sub-01_ses-{session}_task-{task}_run-{run:02d}"
            save_bold(Path(f"{stem}_bold.nii.gz"), data.astype(np.float32))
            pd.DataFrame(rows).to_csv(f"{stem}_events.tsv", sep="\t", index=False)
    # the sidecar at the top, as ds001506 has it (inheritance principle)
    for task in ("perception", "imagery"):
        (root / f"task-{task}_bold.json").write_text(json.dumps({"RepetitionTime": TR, "TaskName": task}))
    return pd.DataFrame(truth)


# ---------------------------------------------------------------- NSD layout

NSD_VOLUME = (14, 12, 10)  # (X, Y, Z) of the fixture's func grid


def nsd_like(root: Path, subjects=(1, 2), n_sessions: int = 2, n_shared: int = 100,
             n_own: int = 400, image_side: int = 32, volume=NSD_VOLUME, seed: int = 0,
             keep_raw: bool = True) -> dict:
    """A tiny NSD in its exact layout: real file and dataset names, axis orders and dtypes
    (int16 betas x 300 of shape (750, Z, Y, X), uint8 ``imgBrick`` (n, H, W, 3), the
    expdesign's ``masterordering`` (1 x 30000), ``subjectim`` (8 x 10000), ``sharedix``),
    small volumes, few images, random content.

    Each subject sees ``n_shared`` shared images (the test set) and ``n_own`` others,
    three times each over its sessions. Responses are a fixed linear map of the image,
    plus noise, with a per-session, per-voxel offset and scale (what the per-session
    z-score removes). The ROI (``nsdgeneral.nii.gz``: -1 outside the brain, 0, 1) keeps
    about a third of the volume.

    Returns
    -------
    dict
        ``raw`` (subject -> int16 array (sessions*750, Z, Y, X)), ``roi`` (subject ->
        (X, Y, Z) int array), ``design`` (the expdesign arrays).
    """
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    n_trials = n_sessions * 750
    per_subject = n_shared + n_own
    assert 3 * per_subject == n_trials, "each image three times"
    n_images = n_shared + n_own * len(subjects)
    images = rng.integers(0, 256, (n_images, image_side, image_side, 3), dtype=np.uint8)
    stim = root / "nsddata_stimuli" / "stimuli" / "nsd"
    stim.mkdir(parents=True)
    with h5py.File(stim / "nsd_stimuli.hdf5", "w") as f:
        f.create_dataset("imgBrick", data=images, chunks=(1, image_side, image_side, 3))
    ids = rng.permutation(n_images) + 1  # 73k-style ids, 1-based
    shared = ids[:n_shared]
    subjectim = rng.integers(1, n_images + 1, (8, 10000))
    for s in subjects:
        own = ids[n_shared + (s - 1) * n_own:n_shared + s * n_own]
        subjectim[s - 1, :per_subject] = np.concatenate([shared, own])
    masterordering = rng.integers(1, 10001, 30000)
    masterordering[:n_trials] = rng.permutation(np.repeat(np.arange(1, per_subject + 1), 3))
    exp = root / "nsddata" / "experiments" / "nsd"
    exp.mkdir(parents=True)
    savemat(exp / "nsd_expdesign.mat", {"masterordering": masterordering[None].astype(np.float64),
                                        "subjectim": subjectim.astype(np.float64),
                                        "sharedix": np.sort(shared)[None].astype(np.float64)})
    out = {"raw": {}, "roi": {}, "design": {"masterordering": masterordering, "subjectim": subjectim,
                                            "sharedix": np.sort(shared)}}
    X, Y, Z = volume
    features = images.reshape(n_images, 4, image_side // 4, 4, image_side // 4, 3).mean(axis=(2, 4, 5))
    features = (features.reshape(n_images, 16) - 128) / 64
    for s in subjects:
        roi = -np.ones(volume, dtype=np.int16)
        roi[1:-1, 1:-1, 1:-1] = 0
        roi[2:X // 2 + 2, 2:-2, 2:Z // 2 + 2] = 1
        affine = np.diag([1.8, 1.8, 1.8, 1.0])
        ppdata = root / "nsddata" / "ppdata" / f"subj{s:02d}" / "func1pt8mm" / "roi"
        ppdata.mkdir(parents=True)
        nib.save(nib.Nifti1Image(roi, affine), ppdata / "nsdgeneral.nii.gz")
        weights = rng.normal(0, 1, (16, X * Y * Z)).astype(np.float32)
        order = subjectim[s - 1, masterordering[:n_trials] - 1]
        folder = root / "nsddata_betas" / "ppdata" / f"subj{s:02d}" / "func1pt8mm" / "betas_fithrf_GLMdenoise_RR"
        folder.mkdir(parents=True)
        raw = []
        for session in range(n_sessions):  # one session in memory at a time
            rows = slice(session * 750, (session + 1) * 750)
            clean = features[order[rows] - 1].astype(np.float32) @ weights  # voxels in C order over (X, Y, Z)
            noisy = clean + rng.standard_normal(clean.shape, dtype=np.float32)
            offset = rng.normal(2, 1, X * Y * Z).astype(np.float32)
            scale = rng.uniform(0.5, 2, X * Y * Z).astype(np.float32)
            vol = (noisy * scale + offset).reshape(750, X, Y, Z).transpose(0, 3, 2, 1)  # h5py: (750, Z, Y, X)
            data = np.clip(np.round(vol * 300), -32768, 32767).astype(np.int16)
            data[:, :, :, 0] = 0  # invalid voxels: 0 in every trial
            with h5py.File(folder / f"betas_session{session + 1:02d}.hdf5", "w") as f:
                f.create_dataset("betas", data=data, chunks=(750, 1, Y, X))
            if keep_raw:
                raw.append(data)
            del clean, noisy, vol, data
        out["raw"][s] = np.concatenate(raw) if keep_raw else None
        out["roi"][s] = roi
    return out
