"""Sending a step's messages and progress bars to its Snakemake log file."""

from __future__ import annotations

import logging
import sys


def log_to(path: str) -> logging.Logger:
    """Route stderr (tqdm progress, warnings) and logging of ``fmrirecon`` to ``path``."""
    stream = open(path, "a", buffering=1)
    sys.stderr = stream
    logging.basicConfig(stream=stream, level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s", force=True)
    logging.captureWarnings(True)
    return logging.getLogger("fmrirecon")
