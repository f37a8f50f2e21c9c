"""Features of a study's stimuli, written to a features file."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: pandas is imported where it is used
    import pandas as pd

import logging
from pathlib import Path


from .io import extract_features, write_features
from .networks import FeatureExtractor

log = logging.getLogger(__name__)


def stimulus_table(stimuli_dir: str | Path) -> "pd.DataFrame":
    """``stimuli.tsv`` of a BIDS ``stimuli/`` folder, or a listing of its images.

    Returns a table with at least ``stim_file`` (relative to ``stimuli_dir``).
    """
    import pandas as pd

    from ..stimuli import read_stimuli_table

    stimuli_dir = Path(stimuli_dir)
    table = read_stimuli_table(stimuli_dir)
    if table is not None:
        if "stim_file" not in table:
            raise ValueError(f"{stimuli_dir / 'stimuli.tsv'}: no column 'stim_file'")
        return table
    files = sorted(p.relative_to(stimuli_dir).as_posix() for p in stimuli_dir.rglob("*")
                   if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"))
    if not files:
        raise FileNotFoundError(f"{stimuli_dir}: no stimuli.tsv and no images")
    return pd.DataFrame({"stim_file": files})


def extract_stimulus_features(stimuli_dir: str | Path, settings: dict, images: dict,
                              out_h5: str | Path, device: str = "auto") -> None:
    """Features of every stimulus image of a dataset, written to ``out_h5``.

    Parameters
    ----------
    stimuli_dir : str or Path
        The BIDS ``stimuli/`` folder (its ``stimuli.tsv`` lists the images).
    settings : dict
        ``network``, ``layers``, ``weights``, ``input_size``, ``seed`` (all optional;
        the config's ``methods.dir`` section).
    images : dict
        The config's ``images`` section (``size``, ``channels``).
    out_h5 : str or Path
    device : str
        See :func:`fmrirecon.torchkit.select_device`.
    """
    from ..torchkit import select_device
    from ..images import load_images

    table = stimulus_table(stimuli_dir)
    pixels = load_images([Path(stimuli_dir) / s for s in table["stim_file"]],
                         images["size"], images["channels"])
    extractor = FeatureExtractor(settings.get("network", "smallconv"), settings.get("layers"),
                                 settings.get("weights"), device=select_device(device),
                                 seed=settings.get("seed", 0), input_size=settings.get("input_size"))
    log.info("features of %d images: %s", len(pixels), extractor.provenance)
    features = extract_features(pixels, extractor)
    attrs = {"provenance": extractor.provenance, "network": extractor.network,
             "weights": str(extractor.weights), "image_size": int(images["size"]),
             "channels": int(images["channels"]),
             "stim_file": [str(s) for s in table["stim_file"]],
             "layer_shapes": {k: list(v) for k, v in extractor.layer_shapes().items()}}
    for column in ("family", "split"):
        if column in table:
            attrs[column] = [str(v) for v in table[column]]
    write_features(out_h5, features, attrs)
