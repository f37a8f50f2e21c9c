"""Loading stimulus images into arrays and drawing image grids."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image


def load_image(path: str | Path, size: int, channels: int = 1) -> np.ndarray:
    """Read an image as a float32 array (size, size, channels) in [0, 1].

    Non-square images are centre-cropped to a square before resizing, as the
    reconstruction literature does.
    """
    try:
        img = Image.open(path)
        img.load()
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read image ({err})") from err
    img = img.convert("L" if channels == 1 else "RGB")
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side))
    img = img.resize((size, size), Image.Resampling.BICUBIC if side > size else Image.Resampling.NEAREST)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return arr.reshape(size, size, channels)


def load_images(paths: Sequence[str | Path], size: int, channels: int = 1) -> np.ndarray:
    """Read several images into an array (n, size, size, channels)."""
    if len(paths) == 0:
        return np.zeros((0, size, size, channels), dtype=np.float32)
    return np.stack([load_image(p, size, channels) for p in paths])


def image_grid(rows: Sequence[np.ndarray], pad: int = 2) -> np.ndarray:
    """Tile rows of images (each (n, H, W, C)) into one uint8 RGB array."""
    n = max(len(r) for r in rows)
    h, w = rows[0].shape[1:3]
    grid = np.ones(((h + pad) * len(rows) + pad, (w + pad) * n + pad, 3), dtype=np.float32)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            img = np.clip(img, 0, 1)
            if img.shape[-1] == 1:
                img = np.repeat(img, 3, axis=-1)
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            grid[y:y + h, x:x + w] = img
    return (grid * 255).round().astype(np.uint8)


def save_grid(path: str | Path, rows: Sequence[np.ndarray], scale: int = 1) -> None:
    """Write :func:`image_grid` of ``rows`` to a PNG, upscaled by ``scale``."""
    img = Image.fromarray(image_grid(rows))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    img.save(path)
