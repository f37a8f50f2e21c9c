"""Sending a step's messages and progress bars to its Snakemake log file."""

from __future__ import annotations

import logging
import sys
import traceback


def log_to(path: str) -> logging.Logger:
    """Route stderr (tqdm progress, warnings) and logging of ``fmrirecon`` to ``path``.

    An exception that ends the step is written whole to the log, and as one line
    (``<path>: <error>``) to the console the step was started from, so the user sees
    what went wrong without opening the log (Snakemake itself only says that the job
    failed).
    """
    console = sys.stderr
    stream = open(path, "a", buffering=1)
    sys.stderr = stream
    logging.basicConfig(stream=stream, level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s", force=True)
    logging.captureWarnings(True)

    def report(kind, error, tb):
        traceback.print_exception(kind, error, tb, file=stream)
        stream.flush()
        message = str(error).splitlines()[0] if str(error) else kind.__name__
        print(f"fmrirecon error: {message} (traceback in {path})", file=console, flush=True)

    sys.excepthook = report
    return logging.getLogger("fmrirecon")
