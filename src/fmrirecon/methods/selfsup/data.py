"""Unpaired images of the self-supervised method, and the fingerprint of a fit's data."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def load_unpaired_images(folder: str | Path, size: int, channels: int, max_images: int | None,
                         seed: int, exclude=()) -> np.ndarray:
    """A deterministic sample of a folder's images (see ``simulate.stimuli.read_folder``).

    Parameters
    ----------
    folder : path
        Folder with ``images/`` and an optional ``labels.tsv`` (first column ``file``).
    size, channels : int
        Images are centre-cropped and resized like :func:`fmrirecon.images.load_image`.
    max_images : int or None
        Draw at most this many (without replacement, from ``seed``).
    exclude : iterable of (str, str)
        ``(folder name, file)`` of images to leave out, e.g. the study's own stimuli
        (:func:`fmrirecon.stimuli.stimulus_sources`); pairs naming other folders are ignored.
    """
    from ...images import load_images
    from ...simulate.stimuli import read_folder

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"methods.selfsup.unpaired_folder: {folder} is not a folder")
    table = read_folder(folder)
    exclude = {file for name, file in exclude if name == folder.name}
    files = [f for f in table["file"] if f not in exclude]
    if exclude:
        log.info("%s: %d images left out as stimulus sources", folder, len(table) - len(files))
    if max_images is not None and len(files) > max_images:
        pick = np.sort(np.random.default_rng([seed, 11]).choice(len(files), max_images, replace=False))
        files = [files[i] for i in pick]
    log.info("loading %d unpaired images from %s", len(files), folder)
    return load_images([folder / f for f in files], size, channels)


def _fingerprint(*arrays) -> str:
    h = hashlib.sha1()
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()

