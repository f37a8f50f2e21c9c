"""A simulated image-reconstruction fMRI study: its plan, its BIDS files and its truth.

Design
------
Training images are each shown once, and ``n_train_repeated`` of them a second time;
test images are each shown ``test_repeats`` times (one pass through the shuffled test
set after another); if ``imagery_repeats > 0`` every test image is also "imagined"
that many times in ``imagery`` runs. Trials are shuffled within a split and cut into
runs of at most ``trials_per_run`` trials (tasks ``train``, ``test``, ``imagery``).
A run starts with :data:`REST_START` s and ends with at least :data:`REST_END` s of
rest; trial ``k`` starts at ``REST_START + k * (trial_duration + rest_duration)``.
Imagery responses are :data:`IMAGERY_GAIN` times the perceptual response plus
trial-specific noise (SD :data:`IMAGERY_NOISE` x ``signal_psc``).

Stimuli are shared by all subjects and named ``train_0001.png``... then
``test_0001.png``...; subjects differ in their trial order, anatomy, receptive
fields, noise and motion. Subject ``k`` (label ``f"{k:02d}"``, k from 1) draws
everything from ``seed + k``.

The ground truth of each subject (what was drawn, in HDF5 at ``truth_path``) is
written by :mod:`fmrirecon.simulate.truth`, whose docstring gives its layout.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ..config import unknown_key_message
from . import bold, encoding, higher, stimuli
from .truth import SubjectTruth, write_truth

DEFAULTS: dict = {
    "seed": 0,
    "subjects": 2,
    "image_size": 32,
    "channels": 1,
    "stimulus_folder": None,
    # A label column of the stimulus folder (e.g. "wnid"): test images from classes
    # that no training image has (unseen-class semantic decoding).
    "disjoint_test_classes": None,
    "n_test_classes": None,      # at most this many test classes (default: n_test)
    # Procedural images never shown (same families, other random draws), written to an
    # image folder for generator or self-supervised training (write_unpaired).
    "n_unpaired": 0,
    "n_train": 240,
    "n_train_repeated": 40,
    "n_test": 20,
    "test_repeats": 5,
    "imagery_repeats": 0,
    "tr": 2.0,
    "trial_duration": 4.0,
    "rest_duration": 4.0,
    "trials_per_run": 50,
    "volume_shape": [20, 24, 16],
    "voxel_size_mm": 3.0,
    "n_visual_voxels": 400,
    "signal_psc": 2.0,
    "noise_psc": 1.0,
    "drift_psc": 2.0,
    "motion_mm": 0.3,
    # Off by default (the default study is unchanged): per-voxel HRF peaks drawn
    # uniformly in [low, high] s, and shared low-rank noise of this many components
    # with this SD (percent signal change) per component.
    "hrf_peak_range": None,
    "shared_noise_components": 0,
    "shared_noise_psc": 1.0,
    # Image features of the voxels: "prf" (contrast energy, ON, OFF) or "gabor"
    # (oriented Gabor energy instead of isotropic contrast; see encoding.draw_model).
    "encoding_features": "prf",
    # A higher visual area (off by default): a fraction of the visual voxels respond to
    # a deep layer of a separately trained "brain network" (see simulate.higher).
    "higher_area": None,
}

#: Rest before the first trial and (at least) after the last one, in seconds.
REST_START = 10.0
REST_END = 10.0
#: Imagery response = IMAGERY_GAIN * perceptual response + noise.
IMAGERY_GAIN = 0.4
IMAGERY_NOISE = 0.25

BIDS_VERSION = "1.10.0"
_TASKS = ("train", "test", "imagery")
_TASK_DESCRIPTIONS = {
    "train": "Passive viewing of training images (each once, some twice).",
    "test": "Passive viewing of test images, each repeated several times.",
    "imagery": "Visual imagery of the test images, cued by name.",
}


def _config(cfg: dict | None) -> dict:
    """``cfg`` merged over :data:`DEFAULTS`, checked (an unknown key is an error)."""
    unknown = sorted(set(cfg or {}) - set(DEFAULTS))
    if unknown:
        raise ValueError(unknown_key_message("config['simulate']", unknown[0], DEFAULTS))
    c = {**DEFAULTS, **(cfg or {})}
    ints = ("seed", "subjects", "image_size", "channels", "n_train", "n_train_repeated",
            "n_test", "test_repeats", "imagery_repeats", "trials_per_run", "n_visual_voxels",
            "n_unpaired")
    for key in ints:
        c[key] = int(c[key])
    for key in ("tr", "trial_duration", "rest_duration", "voxel_size_mm", "signal_psc",
                "noise_psc", "drift_psc", "motion_mm"):
        c[key] = float(c[key])
    c["volume_shape"] = [int(s) for s in c["volume_shape"]]
    c["shared_noise_components"] = int(c["shared_noise_components"])
    c["shared_noise_psc"] = float(c["shared_noise_psc"])
    if c["hrf_peak_range"] is not None:
        peaks = [float(v) for v in c["hrf_peak_range"]]
        if len(peaks) != 2 or not 2.0 <= peaks[0] <= peaks[1] <= 12.0:
            raise ValueError(f"hrf_peak_range must be [low, high] within 2-12 s, got {c['hrf_peak_range']}")
        c["hrf_peak_range"] = peaks
    if c["n_test_classes"] is not None:
        c["n_test_classes"] = int(c["n_test_classes"])
    c["encoding_features"] = str(c["encoding_features"])
    if c["encoding_features"] not in encoding.FEATURE_SETS:
        raise ValueError(f"simulate: encoding_features must be one of {sorted(encoding.FEATURE_SETS)}, "
                         f"got {c['encoding_features']!r}")
    c["higher_area"] = higher.higher_config(c["higher_area"])
    if c["shared_noise_components"] < 0 or c["shared_noise_psc"] < 0:
        raise ValueError("shared_noise_components and shared_noise_psc must be >= 0")
    checks = [
        (c["subjects"] >= 1, "subjects must be >= 1"),
        (c["channels"] in (1, 3), "channels must be 1 or 3"),
        (c["n_train"] >= 1 and c["n_test"] >= 1, "n_train and n_test must be >= 1"),
        (0 <= c["n_train_repeated"] <= c["n_train"], "need 0 <= n_train_repeated <= n_train"),
        (c["test_repeats"] >= 1, "test_repeats must be >= 1"),
        (c["imagery_repeats"] >= 0, "imagery_repeats must be >= 0"),
        (c["trials_per_run"] >= 1, "trials_per_run must be >= 1"),
        (c["tr"] > 0 and c["trial_duration"] > 0 and c["rest_duration"] >= 0,
         "tr and trial_duration must be > 0, rest_duration >= 0"),
        (len(c["volume_shape"]) == 3 and min(c["volume_shape"]) >= 6,
         "volume_shape must be 3 sizes >= 6"),
        (c["image_size"] >= 4, "image_size must be >= 4"),
        (c["disjoint_test_classes"] is None or bool(c["stimulus_folder"]),
         "disjoint_test_classes needs a stimulus_folder"),
        (c["n_unpaired"] >= 0, "n_unpaired must be >= 0"),
        (c["n_test_classes"] is None or c["n_test_classes"] >= 1,
         "n_test_classes must be >= 1"),
        (c["n_unpaired"] == 0 or not c["stimulus_folder"],
         "n_unpaired draws procedural images; with a stimulus_folder, use the folder's "
         "other images as unpaired images instead"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(f"simulate: {message}")
    return c


def _stim_names(split: str, n: int) -> list[str]:
    width = max(4, len(str(n)))
    return [f"{split}_{i + 1:0{width}d}.png" for i in range(n)]


def _n_trials(c: dict) -> dict:
    return {
        "train": c["n_train"] + c["n_train_repeated"],
        "test": c["n_test"] * c["test_repeats"],
        "imagery": c["n_test"] * c["imagery_repeats"],
    }


def study_plan(cfg: dict | None) -> dict:
    """Subjects, tasks, runs and stimuli of the simulated study, without touching disk.

    Parameters
    ----------
    cfg : dict
        The config's ``simulate`` section (missing keys take :data:`DEFAULTS`).

    Returns
    -------
    dict
        ``subjects`` (labels such as ``"01"``), ``tasks`` (``{"train": "train",
        "test": "test", "imagery": "imagery" or None}``), ``runs`` (dicts with
        ``subject``, ``task`` and integer ``run``, in subject, task, run order; BIDS
        names pad the run to 2 digits) and ``stimuli`` (file names relative to
        ``stimuli/``, training then test images).
    """
    c = _config(cfg)
    subjects = [f"{k:02d}" for k in range(1, c["subjects"] + 1)]
    counts = _n_trials(c)
    tasks = {t: (t if counts[t] > 0 else None) for t in _TASKS}
    runs = [
        {"subject": s, "task": t, "run": r}
        for s in subjects
        for t in _TASKS if tasks[t]
        for r in range(1, math.ceil(counts[t] / c["trials_per_run"]) + 1)
    ]
    return {
        "subjects": subjects,
        "tasks": tasks,
        "runs": runs,
        "stimuli": _stim_names("train", c["n_train"]) + _stim_names("test", c["n_test"]),
    }


def bids_run_name(subject: str, task: str, run: int) -> str:
    """``sub-<s>_task-<t>_run-<nn>`` (the prefix of a run's BIDS files)."""
    return f"sub-{subject}_task-{task}_run-{run:02d}"


def _write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def write_unpaired(cfg: dict | None, folder: str | Path) -> Path:
    """Write ``n_unpaired`` procedural images that the study never shows.

    Same families and drawing as the stimuli but their own random stream, so no image
    repeats a stimulus (natural crops may come from the same photographs). The folder
    has ``images/`` and a ``labels.tsv`` (``file``, ``family``), the layout of the
    image folders the ``latent`` and ``selfsup`` methods take as unpaired images.

    Parameters
    ----------
    cfg : dict
        The config's ``simulate`` section.
    folder : path
        Created if needed.

    Returns
    -------
    Path
        ``folder``.
    """
    c = _config(cfg)
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(c["n_unpaired"]):
        family = stimuli.family_of(i)
        image = stimuli.draw_stimulus(family, stimuli.stimulus_rng(c["seed"], "unpaired", i),
                                      c["image_size"], c["channels"])
        name = f"images/unpaired_{i + 1:05d}.png"
        stimuli.save_png(folder / name, image)
        rows.append({"file": name, "family": family})
    pd.DataFrame(rows, columns=["file", "family"]).to_csv(folder / "labels.tsv", sep="\t",
                                                          index=False)
    return folder


#: The settings the stimulus images depend on (:func:`write_stimuli` reads no other).
STIMULUS_KEYS = ("seed", "image_size", "channels", "n_train", "n_test", "stimulus_folder",
                 "disjoint_test_classes", "n_test_classes")


def stimulus_settings(cfg: dict | None) -> dict:
    """The settings of ``cfg`` (defaults filled) that the stimulus images depend on.

    A workflow that keys the stimuli on these alone keeps them, and every network
    trained on them, when only the brain or the design changes.
    """
    c = _config(cfg)
    return {key: c[key] for key in STIMULUS_KEYS}


def write_stimuli(cfg: dict | None, bids_dir: str | Path) -> list[Path]:
    """Write the stimulus images and ``stimuli/stimuli.tsv``.

    Parameters
    ----------
    cfg : dict
        The config's ``simulate`` section; only :data:`STIMULUS_KEYS` are read.
    bids_dir : path
        Root of the BIDS dataset (created if needed).

    Returns
    -------
    list of Path
        ``stimuli/*.png`` and ``stimuli/stimuli.tsv``.

    Notes
    -----
    ``stimuli.tsv`` has ``stim_file``, ``family`` and ``split``; images drawn from a
    ``stimulus_folder`` also get ``source_file`` (relative to that folder) and
    the folder's label columns, and their ``family`` is the folder name.
    """
    c = _config(cfg)
    bids_dir = Path(bids_dir)
    stim_dir = bids_dir / "stimuli"
    stim_dir.mkdir(parents=True, exist_ok=True)
    size, channels = c["image_size"], c["channels"]
    splits = [("train", n) for n in _stim_names("train", c["n_train"])] + \
             [("test", n) for n in _stim_names("test", c["n_test"])]
    written = []
    if c["stimulus_folder"]:
        folder = Path(c["stimulus_folder"])
        sample = stimuli.sample_folder(folder, len(splits), c["seed"], n_test=c["n_test"],
                                       disjoint_column=c["disjoint_test_classes"],
                                       n_test_classes=c["n_test_classes"])
        images = stimuli.load_folder_images(folder, sample["file"].tolist(), size, channels)
        table = pd.DataFrame({
            "stim_file": [n for _, n in splits],
            "family": folder.name,
            "split": [s for s, _ in splits],
            "source_file": sample["file"].to_numpy(),
        })
        labels = sample.drop(columns="file").reset_index(drop=True)
        table = pd.concat([table, labels.drop(columns=[k for k in labels if k in table])], axis=1)
    else:
        rows, images = [], []
        for split in ("train", "test"):
            for i, name in enumerate(_stim_names(split, c[f"n_{split}"])):
                family = stimuli.family_of(i)
                rng = stimuli.stimulus_rng(c["seed"], split, i)
                images.append(stimuli.draw_stimulus(family, rng, size, channels))
                rows.append({"stim_file": name, "family": family, "split": split})
        table = pd.DataFrame(rows)
    for name, image in zip(table["stim_file"], images):
        path = stim_dir / name
        stimuli.save_png(path, image)
        written.append(path)
    path = stim_dir / "stimuli.tsv"
    table.to_csv(path, sep="\t", index=False, na_rep="n/a")
    written.append(path)
    return written


def write_dataset_files(cfg: dict | None, bids_dir: str | Path) -> list[Path]:
    """Write the dataset-level BIDS files of the simulated study.

    Parameters
    ----------
    cfg : dict
        The config's ``simulate`` section.
    bids_dir : path
        Root of the BIDS dataset (created if needed).

    Returns
    -------
    list of Path
        ``dataset_description.json``, ``participants.tsv`` and ``.json``,
        ``task-<t>_events.json`` and ``README`` (which records every setting).
    """
    from fmrirecon import __version__

    c = _config(cfg)
    plan = study_plan(c)
    bids_dir = Path(bids_dir)
    bids_dir.mkdir(parents=True, exist_ok=True)
    written = []

    written.append(_write_json(bids_dir / "dataset_description.json", {
        "Name": "fmrirecon simulated visual image reconstruction study",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "raw",
        "License": "CC0",
        "Authors": ["fmrirecon simulator"],
        "GeneratedBy": [{
            "Name": "fmrirecon simulator",
            "Version": __version__,
            "Description": "Procedural stimuli and a pRF/CSS encoding model (fmrirecon.simulate).",
        }],
    }))
    # Participants: demographic columns drawn from the study seed.
    rng = np.random.default_rng([c["seed"], 4])
    participants = pd.DataFrame({
        "participant_id": [f"sub-{s}" for s in plan["subjects"]],
        "sex": rng.choice(["F", "M"], size=len(plan["subjects"])),
        "age": rng.integers(20, 41, size=len(plan["subjects"])),
    })
    path = bids_dir / "participants.tsv"
    participants.to_csv(path, sep="\t", index=False)
    written.append(path)
    written.append(_write_json(bids_dir / "participants.json", {
        "sex": {"Description": "Sex of the (simulated) participant",
                "Levels": {"F": "female", "M": "male"}},
        "age": {"Description": "Age of the (simulated) participant", "Units": "year"},
    }))
    for task, name in plan["tasks"].items():
        if name:
            written.append(_write_json(bids_dir / f"task-{name}_events.json", {
                "trial_type": {"Description": "Always 'image': one trial per image shown"
                               + (" or imagined." if task == "imagery" else ".")},
                "stim_file": {"Description": "The image " + (
                    "imagined" if task == "imagery" else "shown") + ", relative to stimuli/."},
            }))
    path = bids_dir / "README"
    path.write_text(
        "Simulated fMRI study of visual image reconstruction, written by the fmrirecon\n"
        "simulator (fmrirecon.simulate). Subjects view training and test images (tasks\n"
        "train and test) and optionally imagine the test images (task imagery). BOLD\n"
        "responses come from a population receptive field model of a patch of visual\n"
        "voxels, plus drift, thermal noise and head motion. The images are in stimuli/\n"
        "(described by stimuli/stimuli.tsv). The ground truth is kept outside this\n"
        "dataset. Every value is synthetic; no human data.\n"
        f"\nSimulation settings: {json.dumps(c, sort_keys=True)}\n"
    )
    written.append(path)
    return written


def _design(c: dict, stim_names: dict, rng: np.random.Generator) -> pd.DataFrame:
    """Trial table of one subject (task, run, onset, duration, stim_file), in order."""
    soa = c["trial_duration"] + c["rest_duration"]
    train = list(stim_names["train"])
    repeated = rng.permutation(len(train))[: c["n_train_repeated"]]
    sequences = {
        "train": [train[i] for i in rng.permutation(np.r_[np.arange(len(train)), repeated])],
        # One shuffled pass through the test set after another, so repeats spread out.
        "test": [stim_names["test"][i] for _ in range(c["test_repeats"])
                 for i in rng.permutation(c["n_test"])],
        "imagery": [stim_names["test"][i] for _ in range(c["imagery_repeats"])
                    for i in rng.permutation(c["n_test"])],
    }
    rows = []
    for task in _TASKS:
        seq = sequences[task]
        if not seq:
            continue
        n_runs = math.ceil(len(seq) / c["trials_per_run"])
        for run, chunk in enumerate(np.array_split(np.asarray(seq, dtype=object), n_runs), start=1):
            for k, name in enumerate(chunk):
                rows.append({"task": task, "run": run, "onset": REST_START + k * soa,
                             "duration": c["trial_duration"], "stim_file": str(name)})
    return pd.DataFrame(rows, columns=["task", "run", "onset", "duration", "stim_file"])


def _n_vols(c: dict, n_trials: int) -> int:
    soa = c["trial_duration"] + c["rest_duration"]
    last_end = REST_START + (n_trials - 1) * soa + c["trial_duration"]
    return int(math.ceil((last_end + REST_END) / c["tr"]))


def simulate_subject(cfg: dict | None, bids_dir: str | Path, subject: str,
                     truth_path: str | Path, brain_features: str | Path | None = None) -> None:
    """Write one subject's anatomy and BOLD runs, and its ground truth.

    Parameters
    ----------
    cfg : dict
        The config's ``simulate`` section.
    bids_dir : path
        BIDS root where :func:`write_stimuli` has already written ``stimuli/``.
    subject : str
        A label of ``study_plan(cfg)["subjects"]`` (e.g. ``"01"``).
    truth_path : path
        HDF5 file for the ground truth (layout in :mod:`fmrirecon.simulate.truth`).
    brain_features : path, optional
        With ``higher_area``: the brain network's features of the stimuli
        (:func:`fmrirecon.simulate.higher.brain_features`).

    Writes ``sub-<s>/anat/sub-<s>_T1w.nii.gz`` and, for every planned run,
    ``sub-<s>/func/sub-<s>_task-<t>_run-<nn>_{bold.nii.gz,bold.json,events.tsv}``.
    """
    c = _config(cfg)
    plan = study_plan(c)
    if subject not in plan["subjects"]:
        raise ValueError(f"subject {subject!r} not in the plan {plan['subjects']}")
    bids_dir = Path(bids_dir)
    images, deep = _subject_inputs(c, plan, bids_dir, brain_features)
    subject_seed = c["seed"] + plan["subjects"].index(subject) + 1
    # Independent streams, so e.g. changing the noise level keeps the same brain.
    # (spawn(5)[:4] equals spawn(4): the higher area's stream leaves the others alone.)
    model_rng, design_rng, noise_rng, imagery_rng, higher_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(subject_seed).spawn(5)
    )
    truth, t1w = _draw_subject(c, plan, images, deep, model_rng, design_rng, imagery_rng,
                               higher_rng)
    motions = _write_subject_files(c, plan, subject, bids_dir, truth, t1w, noise_rng)
    write_truth(truth_path, truth, motions, {
        "seed": subject_seed, "study_seed": c["seed"], "subject": subject, "tr": c["tr"],
        "affine": truth.brain.affine, "shape": np.asarray(truth.brain.shape),
        "signal_psc": c["signal_psc"], "noise_psc": c["noise_psc"],
        "imagery_gain": IMAGERY_GAIN,
    }, c["higher_area"])


def _subject_inputs(c: dict, plan: dict, bids_dir: Path, brain_features):
    """The stimulus images, and the brain network's features of them (or None)."""
    stim_paths = [bids_dir / "stimuli" / n for n in plan["stimuli"]]
    missing = [p for p in stim_paths if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} stimuli missing (e.g. {missing[0]}); run write_stimuli first"
        )
    deep = None
    if c["higher_area"] is not None:
        if brain_features is None:
            raise ValueError("simulate.higher_area: pass the brain network's features "
                             "(higher.brain_features writes them)")
        deep = higher.read_brain_features(brain_features, plan["stimuli"], c["higher_area"]["layer"])
    from fmrirecon.images import load_images

    return load_images(stim_paths, c["image_size"], c["channels"]), deep


def _draw_subject(c: dict, plan: dict, images, deep, model_rng, design_rng, imagery_rng,
                  higher_rng) -> tuple[SubjectTruth, object]:
    """The subject's brain, encoding model, trials and their noise-free responses."""
    stim_index = {n: i for i, n in enumerate(plan["stimuli"])}
    stim_names = {"train": plan["stimuli"][: c["n_train"]], "test": plan["stimuli"][c["n_train"]:]}
    brain = encoding.make_brain(c["volume_shape"], c["voxel_size_mm"], c["n_visual_voxels"], model_rng)
    model = encoding.draw_model(brain, model_rng, c["channels"], c["encoding_features"])
    model.calibrate(images, c["signal_psc"], model_rng)
    stim_response = model.predict(images)                                  # (n_stim, n_visual)
    area = None
    if deep is not None:
        area = higher.draw_higher_area(higher.higher_voxels(brain, c["higher_area"]["fraction"]),
                                       deep, c["signal_psc"], higher_rng)
        stim_response[:, area.index] = area.predict(deep)
    t1w = encoding.make_t1w(brain, model_rng)
    # Drawn last and only when asked, so the default study stays bit-identical.
    hrf_params = (bold.draw_hrf_params(len(brain.voxel_ijk), c["hrf_peak_range"], model_rng)
                  if c["hrf_peak_range"] is not None else None)
    loadings = (bold.shared_loadings(brain, c["shared_noise_components"], model_rng)
                if c["shared_noise_components"] > 0 else None)

    trials = _design(c, stim_names, design_rng)
    n_brain = len(brain.voxel_ijk)
    visual = np.flatnonzero(brain.is_visual)
    response = np.zeros((len(trials), n_brain), dtype=np.float32)
    rows = trials["stim_file"].map(stim_index).to_numpy()
    response[:, visual] = stim_response[rows]
    imagery = (trials["task"] == "imagery").to_numpy()
    if imagery.any():
        noise = imagery_rng.normal(0, IMAGERY_NOISE * c["signal_psc"], (imagery.sum(), len(visual)))
        response[np.ix_(imagery, visual)] = IMAGERY_GAIN * stim_response[rows[imagery]] + noise
    truth = SubjectTruth(brain=brain, model=model, stim_files=plan["stimuli"],
                         stim_response=stim_response, trials=trials, response=response,
                         hrf_params=hrf_params, loadings=loadings, area=area)
    return truth, t1w


def _write_subject_files(c: dict, plan: dict, subject: str, bids_dir: Path, truth: SubjectTruth,
                         t1w, noise_rng) -> dict:
    """Write the anatomy and every run's BOLD, sidecar and events; the runs' head motion."""
    brain, trials, response = truth.brain, truth.trials, truth.response
    anat = bids_dir / f"sub-{subject}" / "anat"
    func = bids_dir / f"sub-{subject}" / "func"
    anat.mkdir(parents=True, exist_ok=True)
    func.mkdir(parents=True, exist_ok=True)
    nib.save(t1w, anat / f"sub-{subject}_T1w.nii.gz")
    _write_json(anat / f"sub-{subject}_T1w.json", {"Description": "Synthetic T1-weighted anatomy"})

    motions = {}
    for run in (r for r in plan["runs"] if r["subject"] == subject):
        task, number = run["task"], run["run"]
        keep = ((trials["task"] == task) & (trials["run"] == number)).to_numpy()
        table = trials[keep]
        n_vols = _n_vols(c, len(table))
        shared = (bold.shared_noise(n_vols, truth.loadings, c["shared_noise_psc"], noise_rng)
                  if truth.loadings is not None else None)
        data, translation = bold.simulate_run(
            brain, response[keep], table["onset"].to_numpy(), c["trial_duration"], c["tr"],
            n_vols, c["noise_psc"], c["drift_psc"], c["motion_mm"], noise_rng,
            hrf_params=truth.hrf_params, shared=shared,
        )
        prefix = func / bids_run_name(subject, task, number)
        nib.save(bold.bold_image(data, brain.affine, c["tr"]), f"{prefix}_bold.nii.gz")
        _write_json(Path(f"{prefix}_bold.json"), {
            "TaskName": task,
            "TaskDescription": _TASK_DESCRIPTIONS[task],
            "RepetitionTime": c["tr"],
        })
        events = table[["onset", "duration"]].assign(trial_type="image", stim_file=table["stim_file"])
        events.to_csv(f"{prefix}_events.tsv", sep="\t", index=False, float_format="%.3f")
        motions[f"{task}_run-{number:02d}"] = (task, number, translation)
    return motions
