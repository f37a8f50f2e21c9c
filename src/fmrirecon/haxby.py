"""Converters for the Haxby et al. (2001) slice shipped in ``shared/data``.

``fmri/haxby2001_slice/`` (PyMVPA example data): subject 1, one axial slice (40 x 20
x 1), 1452 volumes in 12 runs of 121, TR 2.5 s, 8 object categories in blocks of 9
volumes with rest between them; ``attributes_literal.txt`` gives each volume's label
and run, ``bold_mc.par`` the 6 MCFLIRT motion parameters, ``mask.nii.gz`` the 530
in-brain voxels.

:func:`haxby_to_bids` writes a BIDS raw dataset (one task, 12 runs, block events) so
the pipeline's own preprocessing and GLM can run on it; :func:`haxby_to_derivatives`
writes the same runs as fMRIPrep-named derivatives (the shipped mask and the MCFLIRT
motion as confounds), the input of ``preprocess.method: precomputed``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from .preprocess import derivative_paths, write_dataset_description
from .preprocess.light import motion_confounds

logger = logging.getLogger(__name__)

__all__ = ["haxby_to_bids", "haxby_to_derivatives", "read_attributes", "block_events",
           "CATEGORIES", "TASK", "SUBJECT", "TR"]

CATEGORIES = ("face", "house", "cat", "bottle", "scissors", "shoe", "chair", "scrambledpix")
TASK = "objectviewing"
SUBJECT = "1"
TR = 2.5
_FILES = ("bold.nii.gz", "mask.nii.gz", "attributes_literal.txt", "bold_mc.par")


def _check_source(src_dir) -> Path:
    src_dir = Path(src_dir)
    missing = [f for f in _FILES if not (src_dir / f).is_file()]
    if missing:
        raise ValueError(f"{src_dir}: not the Haxby 2001 slice folder (missing {', '.join(missing)})")
    return src_dir


def read_attributes(src_dir) -> pd.DataFrame:
    """One row per volume: ``label`` (category or ``rest``) and ``run`` (0-based chunk)."""
    path = _check_source(src_dir) / "attributes_literal.txt"
    table = pd.read_csv(path, sep=r"\s+", header=None, names=["label", "run"])
    unknown = sorted(set(table["label"]) - set(CATEGORIES) - {"rest"})
    if unknown:
        raise ValueError(f"{path}: unknown label(s) {unknown}")
    return table


def block_events(labels, tr: float = TR) -> pd.DataFrame:
    """Blocks of consecutive identical non-rest labels of one run, as BIDS events.

    Parameters
    ----------
    labels : sequence of str
        The label of each volume of the run.
    tr : float

    Returns
    -------
    DataFrame
        ``onset`` (start of the block's first volume, s), ``duration`` (its number of
        volumes times ``tr``), ``trial_type`` (the category), ``stim_file``
        (``<category>.png``).
    """
    labels = np.asarray(labels, dtype=str)
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    ends = np.r_[starts[1:], len(labels)]
    rows = [dict(onset=s * tr, duration=(e - s) * tr, trial_type=labels[s],
                 stim_file=f"{labels[s]}.png") for s, e in zip(starts, ends) if labels[s] != "rest"]
    return pd.DataFrame(rows, columns=["onset", "duration", "trial_type", "stim_file"])


def _placeholder(category: str, path: Path, size: int = 64) -> None:
    """A gray card with the category name: the study's photos are not distributed."""
    img = Image.new("L", (size, size), 128)
    draw = ImageDraw.Draw(img)
    draw.rectangle([2, 2, size - 3, size - 3], outline=255)
    text = category if len(category) <= 8 else category[:8]
    left, top, right, bottom = draw.textbbox((0, 0), text)
    draw.text(((size - (right - left)) / 2, (size - (bottom - top)) / 2), text, fill=0)
    img.save(path)


def _runs(src_dir: Path):
    """(run number 1-based, volume index array) per run, in order."""
    attributes = read_attributes(src_dir)
    for chunk in sorted(attributes["run"].unique()):
        yield int(chunk) + 1, np.flatnonzero(attributes["run"].to_numpy() == chunk), attributes


def _load_bold(src_dir: Path, n_volumes: int) -> nib.Nifti1Image:
    img = nib.load(src_dir / "bold.nii.gz")
    if img.ndim != 4 or img.shape[3] != n_volumes:
        raise ValueError(f"{src_dir / 'bold.nii.gz'}: shape {img.shape} does not match the "
                         f"{n_volumes} rows of attributes_literal.txt")
    return img


def _save_run(img: nib.Nifti1Image, data: np.ndarray, path: Path) -> None:
    header = img.header.copy()
    header.set_data_dtype(data.dtype)
    out = nib.Nifti1Image(data, img.affine, header)
    out.header.set_zooms(img.header.get_zooms()[:3] + (TR,))
    out.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_filename(path)


def haxby_to_bids(src_dir, bids_dir) -> Path:
    """Write the Haxby slice as a BIDS raw dataset.

    Parameters
    ----------
    src_dir : str or Path
        ``shared/data/fmri/haxby2001_slice``.
    bids_dir : str or Path
        Output root (created).

    Returns
    -------
    Path
        ``bids_dir``. It holds ``sub-1/func/sub-1_task-objectviewing_run-<01..12>_bold``
        (``.nii.gz`` + ``.json``, the volumes of each run) and ``_events.tsv`` (one event
        per block: ``trial_type`` the category, ``stim_file`` ``<category>.png``,
        duration = block length), and ``stimuli/<category>.png``: **placeholder gray
        cards labelled with the category** (the photographs shown are not part of the
        data), plus ``stimuli/stimuli.tsv`` (``stim_file``, ``category``).
    """
    src_dir, bids_dir = _check_source(src_dir), Path(bids_dir)
    (bids_dir / "stimuli").mkdir(parents=True, exist_ok=True)
    (bids_dir / "dataset_description.json").write_text(json.dumps({
        "Name": "Haxby et al. 2001, subject 1, one axial slice (PyMVPA example data)",
        "BIDSVersion": "1.10.0", "DatasetType": "raw",
        "ReferencesAndLinks": ["https://doi.org/10.1126/science.1063736"],
    }, indent=2) + "\n")
    (bids_dir / "participants.tsv").write_text(f"participant_id\nsub-{SUBJECT}\n")
    (bids_dir / "README").write_text(
        "Haxby et al. (2001) subject 1, posterior half of one axial slice, converted by "
        "fmrirecon.haxby.haxby_to_bids. stimuli/ holds placeholder cards, not the photos.\n")
    for category in CATEGORIES:
        _placeholder(category, bids_dir / "stimuli" / f"{category}.png")
    pd.DataFrame({"stim_file": [f"{c}.png" for c in CATEGORIES], "category": CATEGORIES}).to_csv(
        bids_dir / "stimuli" / "stimuli.tsv", sep="\t", index=False)

    attributes = read_attributes(src_dir)
    img = _load_bold(src_dir, len(attributes))
    data = np.asarray(img.dataobj)
    for run, index, _ in _runs(src_dir):
        stem = bids_dir / f"sub-{SUBJECT}" / "func" / f"sub-{SUBJECT}_task-{TASK}_run-{run:02d}"
        _save_run(img, data[..., index], Path(f"{stem}_bold.nii.gz"))
        Path(f"{stem}_bold.json").write_text(json.dumps(
            {"RepetitionTime": TR, "TaskName": TASK}, indent=2) + "\n")
        block_events(attributes["label"].to_numpy()[index]).to_csv(
            f"{stem}_events.tsv", sep="\t", index=False)
    return bids_dir


def _motion(src_dir: Path, data: np.ndarray, affine: np.ndarray, n_volumes: int) -> np.ndarray:
    """Per-volume trans_x/y/z (mm) and rot_x/y/z (rad), shape (n_volumes, 6)."""
    par = np.loadtxt(src_dir / "bold_mc.par", ndmin=2)
    if par.shape == (n_volumes, 6):
        return np.c_[par[:, 3:], par[:, :3]]  # MCFLIRT order: rotations first
    # The shipped file is incomplete (19 rows in shared/data): estimate translations
    # the way light preprocessing does (rotations are then 0, as there).
    logger.warning("%s: %d rows for %d volumes; translations re-estimated, rotations 0",
                   src_dir / "bold_mc.par", len(par), n_volumes)
    from .preprocess.light import N_REFERENCE_VOLUMES, _estimate_shift

    data = np.asarray(data, dtype=np.float32)
    reference = data[..., :N_REFERENCE_VOLUMES].mean(axis=3)
    shifts = np.stack([_estimate_shift(reference, data[..., t]) for t in range(n_volumes)])
    out = np.zeros((n_volumes, 6))
    out[:, :3] = (-shifts) @ affine[:3, :3].T  # head motion is minus the correcting shift
    return out


def haxby_to_derivatives(src_dir, deriv_dir, space: str | None = None, motion: bool = True) -> Path:
    """Write the Haxby runs as fMRIPrep-named derivatives (``preprocess: precomputed``).

    The BOLD of each run as shipped, the shipped ``mask.nii.gz`` as every run's brain
    mask, and motion confounds (``trans_*``/``rot_*``, their 24-parameter expansion and
    framewise displacement, Power et al. 2012, 50 mm radius) in
    ``_desc-confounds_timeseries.tsv``: from the MCFLIRT parameters in ``bold_mc.par``
    (rotations in radians, then translations in mm) when it has one row per volume;
    otherwise (the shared copy has only 19 rows) translations re-estimated with light
    preprocessing's phase correlation and rotations 0, with a logged warning.

    Use it when light preprocessing cannot run: its brain mask
    (:func:`nilearn.masking.compute_epi_mask`) comes out empty on a single slice.

    Parameters
    ----------
    src_dir : str or Path
    deriv_dir : str or Path
        Output root (created, with ``dataset_description.json``).
    space : str or None
        ``space`` entity of the BOLD and mask names (None: native BOLD space).
    motion : bool, default=True
        Write the confounds files. False skips them (and the ~10 s motion estimate);
        the GLM then needs ``confounds: none``.

    Returns
    -------
    Path
        ``deriv_dir``.
    """
    src_dir, deriv_dir = _check_source(src_dir), Path(deriv_dir)
    write_dataset_description(deriv_dir, "Haxby 2001 slice as fMRIPrep-named derivatives",
                              {"Name": "fmrirecon.haxby.haxby_to_derivatives"})
    attributes = read_attributes(src_dir)
    img = _load_bold(src_dir, len(attributes))
    data = np.asarray(img.dataobj)
    mask = nib.load(src_dir / "mask.nii.gz")
    params = _motion(src_dir, data, img.affine, len(attributes)) if motion else None
    for run, index, _ in _runs(src_dir):
        paths = derivative_paths(deriv_dir, SUBJECT, TASK, f"{run:02d}", space=space)
        _save_run(img, data[..., index], paths["bold"])
        nib.Nifti1Image((np.asarray(mask.dataobj) > 0).astype(np.uint8), mask.affine).to_filename(
            paths["mask"])
        if params is None:
            continue
        motion_confounds(params[index]).to_csv(paths["confounds"], sep="\t", index=False,
                                               na_rep="n/a", float_format="%.6g")
    return deriv_dir


def main(argv=None) -> None:
    """``python -m fmrirecon.haxby SRC BIDS_DIR [--derivatives DIR]``: convert the slice."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m fmrirecon.haxby", description=main.__doc__)
    parser.add_argument("src", help="shared/data/fmri/haxby2001_slice")
    parser.add_argument("bids_dir", help="BIDS raw dataset to write")
    parser.add_argument("--derivatives", help="also write fMRIPrep-named derivatives here "
                        "(the shipped mask and motion; for preprocess.method: precomputed)")
    args = parser.parse_args(argv)
    print(haxby_to_bids(args.src, args.bids_dir))
    if args.derivatives:
        print(haxby_to_derivatives(args.src, args.derivatives))


if __name__ == "__main__":
    main()
