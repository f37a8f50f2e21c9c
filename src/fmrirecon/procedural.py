"""Procedural unpaired image sets: images like a study's stimuli that it never shows.

Self-supervised and generative methods learn from unpaired images of the stimuli's
domain (Beliy et al. 2019 drew theirs from ImageNet for natural-image studies). For a
study of small binary patches such as Miyawaki et al. (2008), the domain is drawn
here: random binary patterns like the ones its decoders were trained on, and
geometric shapes and letters rendered on the same grid and thresholded, like its test
patches. The set is written as an image folder (``images/*.png`` and ``labels.tsv``
with ``file`` and ``family``), the layout every method's image-folder setting reads.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

log = logging.getLogger(__name__)

#: Kinds of images a set draws (see :func:`draw`).
KINDS = ("binary_pattern", "binary_shape", "binary_letter", "shape", "letter")

#: A folder setting of this form names a set of the config's ``unpaired.images``.
PREFIX = "unpaired:"


def resolve_folder(value, sets: dict, root: str | Path):
    """The folder a setting names: ``unpaired:<name>`` is the procedural set ``name``
    (written under ``root``), anything else is returned as it is.

    Raises ValueError naming the setting when ``name`` is not a key of ``sets``.
    """
    if isinstance(value, str) and value.startswith(PREFIX):
        name = value[len(PREFIX):]
        if name not in (sets or {}):
            raise ValueError(f"{value}: no set {name!r} in config['unpaired']['images'] "
                             f"(sets: {', '.join(sorted(sets or {})) or 'none'})")
        return Path(root) / name
    return value


def procedural_settings(settings: dict, sets: dict, root: str | Path) -> dict:
    """The settings of a method entry that name a procedural set, as ``{key: folder}``."""
    return {key: resolve_folder(value, sets, root) for key, value in (settings or {}).items()
            if isinstance(value, str) and value.startswith(PREFIX)}


def binary_pattern(rng: np.random.Generator, grid: int) -> np.ndarray:
    """A grid x grid patch, each cell black or white with probability 1/2."""
    return (rng.random((grid, grid)) < 0.5).astype(np.float32)


def _binarised(drawing: np.ndarray) -> np.ndarray:
    """A grey drawing thresholded midway between its darkest and lightest values."""
    lo, hi = float(drawing.min()), float(drawing.max())
    if hi - lo < 1e-6:
        return np.zeros_like(drawing)
    return (drawing > (lo + hi) / 2).astype(np.float32)


def draw(kind: str, rng: np.random.Generator, grid: int, size: int) -> np.ndarray:
    """One image of ``kind`` (see :data:`KINDS`), float32 (size, size, 1) in [0, 1].

    The binary kinds are drawn on a ``grid`` x ``grid`` patch and enlarged to ``size``
    by pixel repetition (nearest neighbour), as the patches of a block design are.
    """
    from .simulate.stimuli import draw_letter, draw_shape

    if kind == "binary_pattern":
        patch = binary_pattern(rng, grid)
    elif kind == "binary_shape":
        patch = _binarised(draw_shape(rng, grid, 1)[..., 0])
    elif kind == "binary_letter":
        patch = _binarised(draw_letter(rng, grid, 1)[..., 0])
    elif kind == "shape":
        return draw_shape(rng, size, 1)
    elif kind == "letter":
        return draw_letter(rng, size, 1)
    else:
        raise ValueError(f"unpaired.images kind {kind!r}: expected one of {', '.join(KINDS)}")
    if size != grid:
        img = Image.fromarray((patch * 255).astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST)
        patch = np.asarray(img, dtype=np.float32) / 255.0
    return patch[..., None]


def write_image_set(spec: dict, size: int, folder: str | Path) -> Path:
    """Write the procedural set ``spec`` (a config ``unpaired.images.<name>`` entry).

    Parameters
    ----------
    spec : dict
        ``kinds`` (drawn in turn), ``n``, ``grid`` (default 10), ``size`` (default
        ``size``), ``seed`` (default 0).
    size : int
        Side of the images (the config's ``images.size``) when ``spec`` has none.
    folder : path
        Written as ``images/<kind>_<i>.png`` plus ``labels.tsv`` (``file``, ``family``).

    Returns
    -------
    Path
        ``folder``.
    """
    kinds = list(spec["kinds"])
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"unpaired.images: kinds {unknown or kinds} not among {', '.join(KINDS)}")
    n, grid = int(spec["n"]), int(spec.get("grid", 10))
    side = int(spec.get("size") or size)
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([int(spec.get("seed", 0)), 71])
    rows = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        image = draw(kind, rng, grid, side)
        name = f"images/{kind}_{i:05d}.png"
        Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8)).save(folder / name)
        rows.append({"file": name, "family": kind})
    pd.DataFrame(rows).to_csv(folder / "labels.tsv", sep="\t", index=False)
    log.info("wrote %d procedural images (%s) to %s", n, ", ".join(kinds), folder)
    return folder
