"""Entry point ``nsd``: the Natural Scenes Dataset (Allen et al. 2022) in its own layout.

NSD ships single-trial betas already estimated (GLMsingle), one file per scan session,
and an experimental design that says which of the 73,000 images each trial showed:

``nsddata_betas/ppdata/subjNN/<space>/<preparation>/betas_sessionSS.hdf5``
    Dataset ``betas``, int16, shape (750, Z, Y, X): the 750 trials of the session, each
    a volume in MATLAB's X x Y x Z order stored transposed (h5py reads it backwards);
    percent signal change times 300. Invalid voxels are 0 in every trial.
``nsddata/ppdata/subjNN/<space>/roi/<roi>.nii.gz``
    The ROI mask on the same grid (X, Y, Z); values > 0 are in (``nsdgeneral``: -1
    outside the brain, 0 outside the ROI, 1 in it).
``nsddata/experiments/nsd/nsd_expdesign.mat``
    ``masterordering`` (1 x 30000: the 10,000-image index, 1-based, of each trial in
    session order), ``subjectim`` (8 x 10000: each subject's images as 1-based 73k ids),
    ``sharedix`` (1 x 1000: the 73k ids every subject saw).
``nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5``
    Dataset ``imgBrick``, uint8 (73000, 425, 425, 3).

:func:`import_nsd` reads one subject session by session (one session's ROI voxels in
memory besides the output matrix), divides by 300, z-scores each voxel across the
session's trials as the NSD papers do, and writes what the ``glm`` stage would have
written (docs/formats.md, section 3): trial-level betas (the test split's three repeats
are averaged by the reconstruction stage, as for every entry point), a trial table
whose ``split`` is ``test`` for the shared 1,000 images and ``train`` for the rest, and
the images the subject saw as PNGs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
from PIL import Image

from .betas import SOURCE_COLUMNS, TRIAL_COLUMNS, Betas, write_betas
from .bids import Problems
from .paths import is_inside
from .reliability import add_reliability

__all__ = ["NSD_DEFAULTS", "nsd_files", "check_nsd", "read_expdesign", "subject_trials",
           "import_nsd", "TRIALS_PER_SESSION", "BETA_SCALE"]

log = logging.getLogger(__name__)

#: Keys of the config section ``nsd`` and their defaults.
NSD_DEFAULTS = {
    "root": None,
    "subjects": [1],
    "sessions": None,
    "space": "func1pt8mm",
    "preparation": "betas_fithrf_GLMdenoise_RR",
    "roi": "nsdgeneral",
    "image_size": 256,
}
TRIALS_PER_SESSION = 750
#: NSD stores betas as int16 percent signal change times this.
BETA_SCALE = 300.0


def nsd_files(spec: dict, subject: int) -> dict:
    """The NSD files one subject's import reads.

    Returns
    -------
    dict
        ``expdesign``, ``stimuli``, ``roi`` (Paths) and ``sessions`` (the
        ``betas_sessionSS.hdf5`` present, in session order; the first ``spec["sessions"]``
        when set).
    """
    root = Path(spec["root"])
    subj = f"subj{int(subject):02d}"
    folder = root / "nsddata_betas" / "ppdata" / subj / spec["space"] / spec["preparation"]
    sessions = sorted(folder.glob("betas_session[0-9][0-9].hdf5"))
    if spec.get("sessions"):
        sessions = sessions[: int(spec["sessions"])]
    return {
        "expdesign": root / "nsddata" / "experiments" / "nsd" / "nsd_expdesign.mat",
        "stimuli": root / "nsddata_stimuli" / "stimuli" / "nsd" / "nsd_stimuli.hdf5",
        "roi": root / "nsddata" / "ppdata" / subj / spec["space"] / "roi" / f"{spec['roi']}.nii.gz",
        "betas_folder": folder,
        "sessions": sessions,
    }


def read_expdesign(path: str | Path) -> dict:
    """``masterordering``, ``subjectim`` and ``sharedix`` of ``nsd_expdesign.mat`` as
    1-based integer arrays (shapes (30000,), (8, 10000), (1000,))."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except Exception as err:  # scipy raises several types for broken files
        raise ValueError(f"{path}: cannot read the NSD design ({err})") from err
    missing = [k for k in ("masterordering", "subjectim", "sharedix") if k not in mat]
    if missing:
        raise ValueError(f"{path}: no variable(s) {missing}; is this nsd_expdesign.mat?")
    return {"masterordering": np.asarray(mat["masterordering"]).ravel().astype(np.int64),
            "subjectim": np.atleast_2d(np.asarray(mat["subjectim"])).astype(np.int64),
            "sharedix": np.asarray(mat["sharedix"]).ravel().astype(np.int64)}


def subject_trials(design: dict, subject: int, n_sessions: int) -> pd.DataFrame:
    """One row per trial of a subject's first ``n_sessions`` sessions, in session order.

    Columns ``trial``, ``task`` (``nsd``), ``run`` and ``session`` (the session number),
    ``onset``/``duration`` (n/a), ``stim_id`` (the image's 1-based 73k id),
    ``stim_file`` (``nsd<id>.png``), ``split`` (``test`` for the shared images),
    ``repetition``.
    """
    n = n_sessions * TRIALS_PER_SESSION
    order = design["masterordering"][:n]
    ids = design["subjectim"][int(subject) - 1, order - 1]
    session = np.repeat(np.arange(1, n_sessions + 1), TRIALS_PER_SESSION)
    split = np.where(np.isin(ids, design["sharedix"]), "test", "train")
    trials = pd.DataFrame({
        "trial": np.arange(n), "task": "nsd", "run": session, "onset": np.nan, "duration": np.nan,
        "stim_file": [f"nsd{i:05d}.png" for i in ids], "split": split,
        "session": [f"{s:02d}" for s in session], "stim_id": ids.astype(str),
    })
    trials["repetition"] = trials.groupby(["split", "stim_file"], sort=False).cumcount() + 1
    return trials[TRIAL_COLUMNS + SOURCE_COLUMNS]


def check_nsd(spec: dict, problems: Problems | None = None, results_dir=None) -> Problems:
    """Pre-flight of the ``nsd`` entry point: every file present and readable, shapes
    that fit together (headers only; seconds), and ``results_dir`` (when given) outside
    ``nsd.root``."""
    problems = Problems() if problems is None else problems
    root = Path(spec["root"] or "")
    if results_dir is not None and spec["root"] and is_inside(results_dir, root):
        problems.add(Path(results_dir), "results_dir is inside nsd.root; choose a folder outside the dataset")
    if not spec["root"] or not root.is_dir():
        problems.add(root, "nsd.root not found; it must hold nsddata/, nsddata_betas/ and nsddata_stimuli/")
        return problems
    design = None
    for subject in spec["subjects"]:
        files = nsd_files(spec, subject)
        for key in ("expdesign", "stimuli", "roi"):
            if not files[key].is_file():
                problems.add(files[key], f"missing (NSD {key}); download it into nsd.root")
        if not files["sessions"]:
            problems.add(files["betas_folder"], "no betas_sessionNN.hdf5; check nsd.space and nsd.preparation")
            continue
        if files["expdesign"].is_file() and design is None:
            try:
                design = read_expdesign(files["expdesign"])
            except ValueError as err:
                problems.append(str(err))
                design = {}
        if design and len(design["masterordering"]) < len(files["sessions"]) * TRIALS_PER_SESSION:
            problems.add(files["expdesign"], f"masterordering has {len(design['masterordering'])} trials, "
                         f"fewer than {len(files['sessions'])} sessions x {TRIALS_PER_SESSION}")
        roi_shape = None
        if files["roi"].is_file():
            try:
                roi_shape = tuple(int(s) for s in nib.load(files["roi"]).shape)
            except Exception as err:  # nibabel raises several types
                problems.add(files["roi"], f"cannot read the ROI ({err})")
        for path in files["sessions"]:
            try:
                with h5py.File(path, "r") as f:
                    if "betas" not in f:
                        problems.add(path, f"no dataset 'betas'; it has {list(f)}")
                        continue
                    shape = f["betas"].shape
            except OSError as err:
                problems.add(path, f"cannot read the HDF5 file ({err})")
                continue
            if shape[0] != TRIALS_PER_SESSION or len(shape) != 4:
                problems.add(path, f"betas of shape {shape}; NSD sessions hold ({TRIALS_PER_SESSION}, Z, Y, X)")
            elif roi_shape is not None and tuple(shape[1:][::-1]) != roi_shape:
                problems.add(path, f"volume {tuple(shape[1:][::-1])} (X, Y, Z) differs from the ROI "
                             f"{files['roi'].name} {roi_shape}; use the ROI of the same nsd.space")
        if files["stimuli"].is_file():
            try:
                with h5py.File(files["stimuli"], "r") as f:
                    shape = f["imgBrick"].shape if "imgBrick" in f else None
            except OSError as err:
                problems.add(files["stimuli"], f"cannot read the HDF5 file ({err})")
                shape = ()
            if shape is None:
                problems.add(files["stimuli"], "no dataset 'imgBrick'")
            elif shape and design and design["subjectim"].max() > shape[0]:
                problems.add(files["stimuli"], f"{shape[0]} images, but subjectim names image "
                             f"{design['subjectim'].max()}")
    return problems


def _zscore(x: np.ndarray) -> np.ndarray:
    """Each column z-scored across rows; constant columns (invalid voxels) become 0."""
    mean = x.mean(axis=0)
    sd = x.std(axis=0)
    out = (x - mean) / np.where(sd > 0, sd, 1.0)
    out[:, sd == 0] = 0.0
    return out


def import_nsd(spec: dict, subject: int, out_betas, out_trials, stimuli_dir) -> None:
    """Import one NSD subject as the pipeline's betas, trial table and stimuli.

    Parameters
    ----------
    spec : dict
        The config section ``nsd`` (keys and defaults: :data:`NSD_DEFAULTS`).
    subject : int
        NSD subject number (1-8).
    out_betas, out_trials : path
        Betas HDF5 and trial table (:func:`fmrirecon.betas.write_betas`).
    stimuli_dir : path
        Folder for the images the subject saw (``nsd<73k id>.png``, resized to
        ``image_size``) and ``stimuli.tsv`` (``stim_file``, ``nsd_id``, ``split``).

    Notes
    -----
    Per session: the ROI's bounding box is read from the HDF5 file (not the whole
    volume), the ROI voxels kept, divided by :data:`BETA_SCALE` and z-scored per voxel
    across the session's 750 trials; rows go straight into the output matrix, so the
    subject is in memory once (30,000 trials x 15,000 voxels: 1.8 GB float32).
    """
    spec = {**NSD_DEFAULTS, **spec}
    problems = check_nsd({**spec, "subjects": [subject]})
    problems.raise_if_any()
    files = nsd_files(spec, subject)
    design = read_expdesign(files["expdesign"])
    roi_img = nib.load(files["roi"])
    roi = np.asarray(roi_img.dataobj) > 0  # (X, Y, Z)
    if not roi.any():
        raise ValueError(f"{files['roi']}: the ROI is empty")
    ijk = np.argwhere(roi)  # C order over (X, Y, Z)
    lo, hi = ijk.min(0), ijk.max(0) + 1
    # the HDF5 volume is (Z, Y, X): index it with the ROI's voxels reversed
    local = ijk - lo
    n_sessions = len(files["sessions"])
    trials = subject_trials(design, subject, n_sessions)
    out = np.empty((len(trials), len(ijk)), dtype=np.float32)
    for s, path in enumerate(files["sessions"]):
        with h5py.File(path, "r") as f:
            box = f["betas"][:, lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]]
        values = box[:, local[:, 2], local[:, 1], local[:, 0]].astype(np.float32) / BETA_SCALE
        out[s * TRIALS_PER_SESSION:(s + 1) * TRIALS_PER_SESSION] = _zscore(values)
        log.info("%s: %d trials x %d voxels", path.name, len(values), len(ijk))
        del box, values
    betas = Betas(out, trials, ijk.astype(np.int32), np.asarray(roi_img.affine, dtype=np.float64),
                  tuple(int(s) for s in roi.shape),
                  attrs={"glm_method": "nsd", "source_file": str(files["betas_folder"]),
                         "nsd_subject": int(subject), "nsd_roi": spec["roi"],
                         "units": "z-scored per voxel and session (NSD betas / 300)"})
    betas = _reliability_by_chunks(betas)
    for path in (out_betas, out_trials):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_betas(out_betas, betas, out_trials)
    _write_stimuli(files["stimuli"], trials, Path(stimuli_dir), spec["image_size"])
    log.info("imported NSD subj%02d: %d sessions, %d trials (%d test) x %d voxels", subject,
             n_sessions, len(trials), (trials["split"] == "test").sum(), len(ijk))


def _reliability_by_chunks(betas: Betas, chunk: int = 2000) -> Betas:
    """:func:`fmrirecon.reliability.add_reliability` (train split) computed a few thousand
    voxels at a time: it works in float64 on a copy of the split, which for a whole NSD
    subject would be 4 times the betas. Per-voxel statistics: the result is the same."""
    reliability, ceiling, attrs = [], [], {}
    for start in range(0, betas.betas.shape[1], chunk):
        cols = slice(start, start + chunk)
        part = add_reliability(Betas(betas.betas[:, cols], betas.trials, betas.voxel_ijk[cols],
                                     betas.affine, betas.shape), split="train")
        reliability.append(part.reliability)
        ceiling.append(part.noise_ceiling)
        attrs = part.attrs
    betas.reliability = np.concatenate(reliability).astype(np.float32)
    betas.noise_ceiling = np.concatenate(ceiling).astype(np.float32)
    betas.attrs.update(attrs)
    return betas


def _write_stimuli(brick_path: Path, trials: pd.DataFrame, stimuli_dir: Path, size) -> None:
    stimuli_dir.mkdir(parents=True, exist_ok=True)
    first = trials.drop_duplicates("stim_id")
    ids = np.sort(first["stim_id"].astype(np.int64).to_numpy())
    with h5py.File(brick_path, "r") as f:
        brick = f["imgBrick"]
        for start in range(0, len(ids), 256):  # h5py reads increasing indices in chunks
            chunk = ids[start:start + 256]
            for nsd_id, pixels in zip(chunk, brick[chunk - 1]):
                img = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
                if size and img.size != (size, size):
                    img = img.resize((size, size), Image.Resampling.BICUBIC)
                img.save(stimuli_dir / f"nsd{nsd_id:05d}.png")
    pd.DataFrame({"stim_file": first["stim_file"], "nsd_id": first["stim_id"],
                  "split": first["split"]}).to_csv(stimuli_dir / "stimuli.tsv", sep="\t", index=False)
