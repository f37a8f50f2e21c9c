"""Built-in light preprocessing: translation-only motion correction and a brain mask.

A fast stand-in for fMRIPrep when a full anatomical pipeline is not needed (simulated
data, quick looks). It writes the same files as fMRIPrep (see
:func:`fmrirecon.preprocess.derivative_paths`) in the native BOLD space.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn.masking import compute_epi_mask
from scipy import ndimage
from skimage.registration import phase_cross_correlation
from tqdm import tqdm

__all__ = ["write_reference", "preprocess_run", "preprocess_subject", "motion_confounds",
           "MOTION_COLUMNS"]

MOTION_COLUMNS = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]

#: Number of leading volumes of the first run averaged into the reference.
N_REFERENCE_VOLUMES = 10
#: Head radius (mm) turning rotations into arc lengths in framewise displacement.
FD_RADIUS_MM = 50.0
UPSAMPLE_FACTOR = 20


def _load_bold(path: Path) -> nib.Nifti1Image:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: BOLD file not found")
    img = nib.load(path)
    if img.ndim != 4 or img.shape[3] < 2:
        raise ValueError(f"{path}: expected a 4-D BOLD series with >= 2 volumes, got shape {img.shape}")
    return img


def _same_grid(img_a, img_b) -> bool:
    return img_a.shape[:3] == img_b.shape[:3] and np.allclose(img_a.affine, img_b.affine, atol=1e-4)


def _estimate_shift(reference: np.ndarray, volume: np.ndarray) -> np.ndarray:
    """Voxel shift that moves ``volume`` onto ``reference``."""
    # Plain (unnormalised) cross-correlation: on small EPI volumes the whitened
    # phase-only spectrum is dominated by noise and edge ringing, and its subpixel
    # peak is biased by several tenths of a voxel; the raw correlation peak is not.
    shift, _, _ = phase_cross_correlation(
        reference, volume, upsample_factor=UPSAMPLE_FACTOR, normalization=None
    )
    return np.asarray(shift, dtype=np.float64)


def motion_confounds(translations_mm: np.ndarray) -> pd.DataFrame:
    """fMRIPrep-style motion confounds from per-volume translations (and rotations).

    Parameters
    ----------
    translations_mm : ndarray, shape (n_volumes, 3) or (n_volumes, 6)
        Head displacement along x, y, z in mm; with 6 columns, followed by the
        rotations about x, y, z in radians (motion parameters from elsewhere).

    Returns
    -------
    DataFrame
        ``trans_*``, ``rot_*`` (all 0: rotations are not estimated), their
        ``_derivative1``, ``_power2`` and ``_derivative1_power2`` expansions and
        ``framewise_displacement`` (Power et al. 2012). First-row derivatives and
        displacement are missing (NaN), as in fMRIPrep.
    """
    translations_mm = np.asarray(translations_mm, dtype=np.float64)
    params = np.zeros((len(translations_mm), 6))
    params[:, :translations_mm.shape[1]] = translations_mm
    table = pd.DataFrame(params, columns=MOTION_COLUMNS)
    # Power et al. 2012: rotations count as arc length on a 50 mm sphere.
    scaled = params.copy()
    scaled[:, 3:] *= FD_RADIUS_MM
    fd = np.abs(np.diff(scaled, axis=0)).sum(axis=1)
    columns = {}
    for name in MOTION_COLUMNS:
        derivative = table[name].diff()
        columns[name] = table[name]
        columns[f"{name}_derivative1"] = derivative
        columns[f"{name}_power2"] = table[name] ** 2
        columns[f"{name}_derivative1_power2"] = derivative**2
    out = pd.DataFrame(columns)
    out["framewise_displacement"] = np.concatenate([[np.nan], fd])
    return out


def _confounds_sidecar() -> dict:
    note = (
        "Rotations are not estimated by fmrirecon's light preprocessing "
        "(translation-only motion correction); written as 0."
    )
    sidecar = {}
    for axis in "xyz":
        sidecar[f"trans_{axis}"] = {
            "Description": (
                f"Head translation along the scanner {axis} axis relative to the "
                f"reference (mean of the first {N_REFERENCE_VOLUMES} volumes of the "
                "subject's first run), estimated by 3-D subpixel phase correlation "
                f"(skimage phase_cross_correlation, upsample_factor={UPSAMPLE_FACTOR}, "
                "normalization=None) and corrected by linear interpolation."
            ),
            "Units": "mm",
        }
        sidecar[f"rot_{axis}"] = {"Description": f"Rotation about {axis}. {note}", "Units": "rad"}
    for name in MOTION_COLUMNS:
        sidecar[f"{name}_derivative1"] = {
            "Description": f"Backward difference of {name}; n/a for the first volume."
        }
        sidecar[f"{name}_power2"] = {"Description": f"Square of {name}."}
        sidecar[f"{name}_derivative1_power2"] = {"Description": f"Square of {name}_derivative1."}
    sidecar["framewise_displacement"] = {
        "Description": (
            "Framewise displacement (Power et al. 2012): sum of absolute backward "
            "differences of the translations plus 50 mm times those of the rotations "
            f"(zero here). n/a for the first volume. {note}"
        ),
        "Units": "mm",
    }
    return sidecar


def mask_opening(shape) -> int:
    """Iterations of the morphological opening of the EPI mask for a volume ``shape``.

    nilearn's default (2) erodes in 3-D, which empties any slab thinner than 5 slices
    (e.g. single-slice or partial-coverage acquisitions): no opening there.
    """
    return 2 if min(shape) >= 5 else 0


def write_reference(first_bold: str | Path, out_path: str | Path) -> Path:
    """Write the subject's realignment reference: the mean of the first volumes.

    The mean of the first ``N_REFERENCE_VOLUMES`` volumes of the subject's first run;
    every run is realigned to it so that voxels correspond across runs.
    """
    first = _load_bold(first_bold)
    n_ref = min(N_REFERENCE_VOLUMES, first.shape[3])
    reference = np.asarray(first.dataobj[..., :n_ref], dtype=np.float32).mean(axis=3)
    if not np.isfinite(reference).all() or np.ptp(reference) == 0:
        raise ValueError(f"{first_bold}: reference volume is constant or not finite")
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(reference, first.affine).to_filename(out_path)
    return Path(out_path)


def preprocess_run(bold_path: str | Path, reference_path: str | Path, outs: dict,
                   progress: bool = True) -> None:
    """Motion-correct one run onto the subject reference; write fMRIPrep-style files.

    Per volume, the rigid translation is estimated by 3-D subpixel phase correlation
    (:func:`skimage.registration.phase_cross_correlation`, ``upsample_factor=20``,
    unnormalised cross-power spectrum) and undone by linear interpolation
    (:func:`scipy.ndimage.shift`, ``order=1``). **Rotations are not estimated**:
    ``rot_*`` are written as 0 (and the JSON sidecar says so). The brain mask is
    :func:`nilearn.masking.compute_epi_mask` of the run's mean corrected image (without
    morphological opening for slabs thinner than 5 slices, :func:`mask_opening`); the GLM
    intersects the masks of a subject's runs.

    Parameters
    ----------
    bold_path : str or Path
        Raw 4-D BOLD run.
    reference_path : str or Path
        The subject's reference volume (:func:`write_reference`), on the same grid.
    outs : dict
        ``bold``, ``mask`` and ``confounds`` output paths, as returned by
        :func:`fmrirecon.preprocess.derivative_paths`. The confounds JSON sidecar is
        written next to the TSV.
    progress : bool, default=True
        Show a per-volume progress bar on stderr.

    Notes
    -----
    ``trans_x/y/z`` are in mm along the scanner axes: the displacement of the head
    relative to the reference, mapped through the affine's 3x3 part. The corrected
    BOLD keeps the input header (voxel size, TR, units). The confounds also carry
    fMRIPrep's ``_derivative1``, ``_power2`` and ``_derivative1_power2`` expansions,
    so both ``motion="basic"`` and ``motion="full"`` of
    :func:`nilearn.interfaces.fmriprep.load_confounds` work on them.
    """
    missing = {"bold", "mask", "confounds"} - set(outs)
    if missing:
        raise ValueError(f"output paths {outs} lack {sorted(missing)}")
    bold_path = Path(bold_path)
    img = _load_bold(bold_path)
    ref_img = nib.load(reference_path)
    if not _same_grid(img, ref_img):
        raise ValueError(
            f"{bold_path}: voxel grid differs from the reference {reference_path}; light "
            "preprocessing needs all runs of a subject on one grid"
        )
    reference = np.asarray(ref_img.dataobj, dtype=np.float32)
    data = np.asarray(img.dataobj, dtype=np.float32)
    corrected = np.empty_like(data)
    shifts = np.zeros((data.shape[3], 3))
    volumes = tqdm(range(data.shape[3]), desc=f"realign {bold_path.name}", unit="vol",
                   file=sys.stderr, disable=not progress)
    for t in volumes:
        shifts[t] = _estimate_shift(reference, data[..., t])
        # mode="nearest" so that edges do not fill with zeros, which would bias the mask
        corrected[..., t] = ndimage.shift(data[..., t], shifts[t], order=1, mode="nearest")

    for key in ("bold", "mask", "confounds"):
        Path(outs[key]).parent.mkdir(parents=True, exist_ok=True)
    header = img.header.copy()
    header.set_data_dtype(np.float32)
    # the header carries voxel size and TR (pixdim[4]) through unchanged
    nib.Nifti1Image(corrected, img.affine, header).to_filename(outs["bold"])

    # The estimated shift moves the volume back onto the reference, so the head
    # moved by minus that shift.
    translations = (-shifts) @ img.affine[:3, :3].T
    table = motion_confounds(translations)
    table.to_csv(outs["confounds"], sep="\t", index=False, na_rep="n/a", float_format="%.6g")
    sidecar = Path(str(outs["confounds"]).removesuffix(".tsv") + ".json")
    sidecar.write_text(json.dumps(_confounds_sidecar(), indent=2) + "\n")

    mask = compute_epi_mask(nib.Nifti1Image(corrected.mean(axis=3), img.affine),
                            opening=mask_opening(data.shape[:3]))
    mask_data = np.asarray(mask.get_fdata() > 0, dtype=np.uint8)
    if not mask_data.any():
        raise ValueError(f"{bold_path}: compute_epi_mask found no brain voxels")
    nib.Nifti1Image(mask_data, img.affine).to_filename(outs["mask"])


def preprocess_subject(bold_paths: list[str | Path], out_paths: list[dict],
                       reference_path: str | Path, progress: bool = True) -> None:
    """Light preprocessing of all runs of one subject (first run first).

    :func:`write_reference` from the first run, then :func:`preprocess_run` per run;
    the workflow runs the same two steps as separate jobs.
    """
    if not bold_paths:
        raise ValueError("preprocess_subject needs at least one BOLD run")
    if len(out_paths) != len(bold_paths):
        raise ValueError(f"{len(bold_paths)} BOLD runs but {len(out_paths)} output path sets")
    write_reference(bold_paths[0], reference_path)
    for path, outs in zip(bold_paths, out_paths):
        preprocess_run(path, reference_path, outs, progress=progress)
