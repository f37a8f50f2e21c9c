"""Procedural stimulus images, and deterministic samples of a folder of real images.

Three procedural families, mixed in both the training and the test set:

- ``shape``: one to three geometric elements (filled or outlined ellipses,
  rectangles, crosses, bars) of random position, size and contrast on a uniform
  background, in the spirit of the Kamitani lab's artificial shapes;
- ``letter``: a capital letter drawn with Pillow's default (FreeType) font at a
  random position, size and polarity;
- ``natural``: random crops and small rotations of the natural photographs bundled
  with scikit-image (``skimage.data``; no download).

Every image is drawn from its own random generator, seeded by ``(seed, split,
index)``, so an image does not change when the number of images changes.
"""

from __future__ import annotations

import functools
import string
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

FAMILIES = ("shape", "letter", "natural")

# skimage.data photographs shipped inside the wheel (no pooch download needed).
NATURAL_SOURCES = (
    "astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "clock",
    "grass", "gravel", "brick", "immunohistochemistry", "horse", "page",
)

# Shapes and letters are drawn this many times larger, then downsampled (antialiasing).
_SUPERSAMPLE = 4

_SPLIT_CODES = {"train": 1, "test": 2, "unpaired": 3}


def stimulus_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of one stimulus (independent of the set sizes)."""
    return np.random.default_rng([int(seed), _SPLIT_CODES[split], int(index)])


def _to_pil(values: np.ndarray):
    """Float colour values in [0, 1] as a Pillow fill (int for L, tuple for RGB)."""
    ints = [int(round(255 * float(v))) for v in values]
    return ints[0] if len(ints) == 1 else tuple(ints)


def _mode(channels: int) -> str:
    return "L" if channels == 1 else "RGB"


def _finish(img: Image.Image, size: int, channels: int) -> np.ndarray:
    """Downsample a drawing to ``size`` and return float32 (size, size, channels)."""
    img = img.resize((size, size), Image.Resampling.LANCZOS)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return np.clip(arr, 0, 1).reshape(size, size, channels)


def draw_shape(rng: np.random.Generator, size: int, channels: int = 1) -> np.ndarray:
    """A composition of geometric elements on a uniform background.

    Parameters
    ----------
    rng : numpy.random.Generator
    size : int
        Side of the square image, in pixels.
    channels : {1, 3}

    Returns
    -------
    ndarray, shape (size, size, channels), float32 in [0, 1]
    """
    big = size * _SUPERSAMPLE
    # Mostly mid-gray backgrounds, as in the artificial-shape experiments.
    bg = rng.uniform(0, 1, size=channels) if rng.random() < 0.3 else np.full(channels, 0.5)
    img = Image.new(_mode(channels), (big, big), _to_pil(bg))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(1, 4)):
        kind = rng.choice(["ellipse", "rectangle", "cross", "bar"])
        # Keep elements large enough to survive downsampling to a few pixels.
        w, h = rng.uniform(0.2, 0.7, size=2) * big
        cx, cy = rng.uniform(0.2, 0.8, size=2) * big
        fill = rng.uniform(0, 1, size=channels)
        # Push the fill away from the background so every element has contrast.
        if np.abs(fill - bg).mean() < 0.25:
            fill = np.where(bg < 0.5, np.maximum(fill, bg + 0.3), np.minimum(fill, bg - 0.3))
        fill = _to_pil(np.clip(fill, 0, 1))
        outline = rng.random() < 0.35
        width = max(2, int(rng.uniform(0.04, 0.1) * big))
        box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        if kind == "ellipse":
            if outline:
                draw.ellipse(box, outline=fill, width=width)
            else:
                draw.ellipse(box, fill=fill)
        elif kind == "rectangle":
            if outline:
                draw.rectangle(box, outline=fill, width=width)
            else:
                draw.rectangle(box, fill=fill)
        elif kind == "cross":
            t = max(width, int(min(w, h) * 0.25))
            draw.rectangle([cx - w / 2, cy - t / 2, cx + w / 2, cy + t / 2], fill=fill)
            draw.rectangle([cx - t / 2, cy - h / 2, cx + t / 2, cy + h / 2], fill=fill)
        else:  # an oriented bar
            angle = rng.uniform(0, np.pi)
            length, t = max(w, h), max(width, int(min(w, h) * 0.2))
            dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
            draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=fill, width=t)
    return _finish(img, size, channels)


@functools.lru_cache(maxsize=8)
def _font(pixels: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=pixels)


def draw_letter(rng: np.random.Generator, size: int, channels: int = 1) -> np.ndarray:
    """A capital letter at a random position, size and polarity.

    Parameters
    ----------
    rng : numpy.random.Generator
    size : int
        Side of the square image, in pixels.
    channels : {1, 3}

    Returns
    -------
    ndarray, shape (size, size, channels), float32 in [0, 1]
    """
    big = size * _SUPERSAMPLE
    letter = str(rng.choice(list(string.ascii_uppercase)))
    # Dark on light or light on dark, with a random but clear contrast.
    lo, hi = rng.uniform(0.0, 0.3), rng.uniform(0.7, 1.0)
    fg, bg = (hi, lo) if rng.random() < 0.5 else (lo, hi)
    if channels == 3:
        tint = rng.uniform(0.6, 1.0, size=3)
        fg_c = tuple(int(255 * fg * t) for t in tint)
        bg_c = tuple(int(255 * bg) for _ in range(3))
    else:
        fg_c, bg_c = int(255 * fg), int(255 * bg)
    img = Image.new(_mode(channels), (big, big), bg_c)
    draw = ImageDraw.Draw(img)
    font = _font(int(big * rng.uniform(0.5, 0.95)))
    left, top, right, bottom = draw.textbbox((0, 0), letter, font=font)
    tw, th = right - left, bottom - top
    # Random position that keeps at least ~80% of the glyph inside the image.
    x = rng.uniform(-0.1 * tw, max(big - 0.9 * tw, -0.1 * tw + 1)) - left
    y = rng.uniform(-0.1 * th, max(big - 0.9 * th, -0.1 * th + 1)) - top
    draw.text((x, y), letter, fill=fg_c, font=font)
    return _finish(img, size, channels)


@functools.lru_cache(maxsize=len(NATURAL_SOURCES))
def _natural_source(name: str) -> Image.Image:
    import skimage.data

    arr = getattr(skimage.data, name)()
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.dtype == bool:  # the horse silhouette
        arr = np.where(arr, 255, 0).astype(np.uint8)
    return Image.fromarray(arr)


def draw_natural(rng: np.random.Generator, size: int, channels: int = 1) -> np.ndarray:
    """A random square crop, slightly rotated, of a photograph from ``skimage.data``.

    Parameters
    ----------
    rng : numpy.random.Generator
    size : int
        Side of the square image, in pixels.
    channels : {1, 3}

    Returns
    -------
    ndarray, shape (size, size, channels), float32 in [0, 1]
    """
    src = _natural_source(str(rng.choice(NATURAL_SOURCES))).convert(_mode(channels))
    w, h = src.size
    side = rng.uniform(0.3, 0.9) * min(w, h)
    angle = rng.uniform(-30, 30)
    # A crop of side/sqrt(2) stays inside a disc of radius side/2, so any rotation of
    # the side x side window keeps the crop free of empty corners.
    left = rng.uniform(0, w - side)
    top = rng.uniform(0, h - side)
    window = src.crop((int(left), int(top), int(left + side), int(top + side)))
    window = window.rotate(angle, resample=Image.Resampling.BILINEAR)
    inner = side / np.sqrt(2)
    off = (side - inner) / 2
    crop = window.crop((int(off), int(off), int(off + inner), int(off + inner)))
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return _finish(crop, size, channels)


_DRAWERS = {"shape": draw_shape, "letter": draw_letter, "natural": draw_natural}


def draw_stimulus(family: str, rng: np.random.Generator, size: int, channels: int = 1) -> np.ndarray:
    """Draw one procedural image of ``family`` (one of :data:`FAMILIES`)."""
    try:
        drawer = _DRAWERS[family]
    except KeyError:
        raise ValueError(f"unknown stimulus family {family!r}; expected one of {FAMILIES}") from None
    return drawer(rng, size, channels)


def family_of(index: int) -> str:
    """The procedural family of the ``index``-th image of a split (families alternate)."""
    return FAMILIES[index % len(FAMILIES)]


def read_folder(folder: str | Path) -> pd.DataFrame:
    """List the images of a stimulus folder and their labels.

    Parameters
    ----------
    folder : path
        A folder with an ``images/`` subfolder and an optional ``labels.tsv`` whose
        first column, ``file``, is relative to ``folder``.

    Returns
    -------
    DataFrame
        Column ``file`` (relative to ``folder``, sorted) plus the label columns.
    """
    folder = Path(folder)
    labels = folder / "labels.tsv"
    if labels.exists():
        table = pd.read_csv(labels, sep="\t", dtype={"file": str})
        if table.columns[0] != "file":
            raise ValueError(f"{labels}: first column must be 'file', got {table.columns[0]!r}")
    else:
        exts = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
        files = [p for p in (folder / "images").rglob("*") if p.suffix.lower() in exts]
        if not files:
            raise ValueError(f"{folder}: no images under images/ and no labels.tsv")
        table = pd.DataFrame({"file": [p.relative_to(folder).as_posix() for p in files]})
    return table.sort_values("file", kind="stable").reset_index(drop=True)


def sample_folder(folder: str | Path, n: int, seed: int, *, n_test: int = 0,
                  disjoint_column: str | None = None,
                  n_test_classes: int | None = None) -> pd.DataFrame:
    """Draw ``n`` distinct images of a folder, deterministically from ``seed``.

    Parameters
    ----------
    folder : path
        A folder as read by :func:`read_folder`.
    n : int
        Images to draw in all; the last ``n_test`` are the test images.
    seed : int
    n_test : int
        Number of test images (only used with ``disjoint_column``).
    disjoint_column : str, optional
        A label column of ``labels.tsv`` (e.g. ``wnid``): the test images then come
        from classes no training image has, one class per test image while classes
        last and training keeps enough images, as in the studies of unseen-class
        decoding (Horikawa & Kamitani 2017).
    n_test_classes : int, optional
        With ``disjoint_column``: at most this many test classes (default ``n_test``),
        their images taken in turn, e.g. 2 test images per class.

    Returns
    -------
    DataFrame
        Rows of :func:`read_folder` in the order drawn.
    """
    table = read_folder(folder)
    if n > len(table):
        raise ValueError(f"{folder}: {n} stimuli requested but only {len(table)} images")
    rng = np.random.default_rng([int(seed), 3])
    if disjoint_column is None:
        pick = rng.choice(len(table), size=n, replace=False)
        return table.iloc[pick].reset_index(drop=True)
    if disjoint_column not in table:
        raise ValueError(f"{Path(folder) / 'labels.tsv'}: no column {disjoint_column!r} for "
                         f"simulate.disjoint_test_classes (has {list(table.columns)})")
    labels = table[disjoint_column].astype(str)
    classes = rng.permutation(np.unique(labels))
    n_train = n - n_test
    counts = labels.value_counts().reindex(classes).to_numpy()
    # as many test classes as test images, fewer if training needs their images
    most = min(n_test if n_test_classes is None else n_test_classes, n_test, len(classes) - 1)
    n_held = next((k for k in range(most, 0, -1)
                   if counts[k:].sum() >= n_train and counts[:k].sum() >= n_test), 0)
    if n_held == 0:
        raise ValueError(
            f"{folder}: cannot draw {n_test} test images from classes ({disjoint_column!r}) "
            f"disjoint from {n_train} training images: {len(classes)} classes, "
            f"{len(labels)} images")
    test_classes, train_classes = classes[:n_held], classes[n_held:]
    train_pool = np.flatnonzero(labels.isin(train_classes).to_numpy())
    # test images: one per test class in turn (skipping exhausted classes), then again
    by_class = [list(rng.permutation(np.flatnonzero((labels == c).to_numpy())))
                for c in test_classes]
    test_pick = []
    while len(test_pick) < n_test:
        test_pick += [pool.pop() for pool in by_class if pool][: n_test - len(test_pick)]
    train_pick = rng.choice(train_pool, size=n_train, replace=False)
    return table.iloc[np.concatenate([train_pick, test_pick])].reset_index(drop=True)


def save_png(path: str | Path, image: np.ndarray) -> None:
    """Write a float image (H, W, C) in [0, 1] as an 8-bit PNG."""
    arr = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = arr[..., 0]
    Image.fromarray(arr).save(path)


def load_folder_images(folder: str | Path, files: Sequence[str], size: int, channels: int) -> np.ndarray:
    """Read folder images, centre-cropped and resized like :func:`fmrirecon.images.load_image`."""
    from fmrirecon.images import load_images

    return load_images([Path(folder) / f for f in files], size, channels)
