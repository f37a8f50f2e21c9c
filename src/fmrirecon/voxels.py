"""Which voxels a decoder sees: all, the most reliable, or those in a mask or atlas."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from fmrirecon.betas import Betas

__all__ = ["select_voxels", "METHODS"]

METHODS = ("all", "reliability", "mask", "atlas")


def _grid_values(img, betas: Betas, what: str) -> np.ndarray:
    """Values of a 3-D image at the betas' voxels, after checking the grids match."""
    if img is None:
        raise ValueError(f"method {what!r} needs {what}_img")
    name = str(img) if isinstance(img, (str, Path)) else f"{what}_img"
    if isinstance(img, (str, Path)):
        if not Path(img).is_file():
            raise ValueError(f"{name}: {what} file not found")
        img = nib.load(img)
    shape = tuple(img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if shape != tuple(betas.shape) or not np.allclose(img.affine, betas.affine, atol=1e-4):
        raise ValueError(
            f"{name}: {what} grid (shape {shape}) differs from the BOLD grid of the betas "
            f"(shape {tuple(betas.shape)}); resample it to the BOLD grid first"
        )
    data = np.asarray(img.dataobj).reshape(shape)
    i, j, k = np.asarray(betas.voxel_ijk).T
    return data[i, j, k]


def select_voxels(
    betas: Betas,
    method: str = "all",
    n_top: int | None = None,
    min_reliability: float | None = None,
    mask_img=None,
    atlas_img=None,
    atlas_labels=None,
) -> np.ndarray:
    """Boolean selection over the columns of ``betas.betas``.

    Parameters
    ----------
    betas : Betas
    method : {"all", "reliability", "mask", "atlas"}, default="all"
        ``reliability``: the ``n_top`` most reliable voxels and/or those with
        reliability >= ``min_reliability`` (both given: the top ``n_top`` among those
        above the threshold; NaN reliability is never selected). ``mask``: voxels
        where ``mask_img`` is non-zero. ``atlas``: voxels whose ``atlas_img`` value is
        in ``atlas_labels``.
    n_top : int or None
    min_reliability : float or None
    mask_img, atlas_img : str, Path, Nifti1Image or None
        3-D images on the BOLD grid of the betas (same shape and affine).
    atlas_labels : sequence of int or None

    Returns
    -------
    ndarray of bool, shape (n_voxels,)

    Raises
    ------
    ValueError
        Unknown method, missing parameters, images on another grid (naming the
        file), or an empty selection.
    """
    n_voxels = betas.betas.shape[1]
    if method == "all":
        selected = np.ones(n_voxels, dtype=bool)
    elif method == "reliability":
        if betas.reliability is None:
            raise ValueError("method 'reliability' needs betas.reliability (run add_reliability)")
        if n_top is None and min_reliability is None:
            raise ValueError("method 'reliability' needs n_top and/or min_reliability")
        reliability = np.asarray(betas.reliability, dtype=np.float64)
        selected = np.isfinite(reliability)
        if min_reliability is not None:
            selected &= reliability >= float(min_reliability)
        if n_top is not None:
            if int(n_top) < 1:
                raise ValueError(f"n_top must be >= 1, got {n_top}")
            score = np.where(selected, reliability, -np.inf)
            # stable sort: ties go to the lower voxel index, deterministically
            top = np.argsort(-score, kind="stable")[: int(n_top)]
            keep = np.zeros(n_voxels, dtype=bool)
            keep[top] = True
            selected &= keep
    elif method == "mask":
        selected = _grid_values(mask_img, betas, "mask") > 0
    elif method == "atlas":
        if atlas_labels is None or len(atlas_labels) == 0:
            raise ValueError("method 'atlas' needs atlas_labels")
        values = _grid_values(atlas_img, betas, "atlas")
        selected = np.isin(values, np.asarray(atlas_labels))
    else:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not selected.any():
        raise ValueError(f"voxel selection {method!r} is empty")
    return selected
