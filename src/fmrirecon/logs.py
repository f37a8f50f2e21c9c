"""Sending a step's messages and progress bars to its Snakemake log file."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import time
import traceback

# Progress bars in a log file: one line per update, at most one every 10 s (tqdm reads
# its defaults from TQDM_* variables).
os.environ.setdefault("TQDM_MININTERVAL", "10")


class _LineStream:
    """A text stream that turns carriage returns (progress-bar redraws) into new lines."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(text.replace("\r\n", "\n").replace("\r", "\n").replace("\n\n", "\n"))

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name):
        return getattr(self._stream, name)


def log_to(path: str) -> logging.Logger:
    """Route stderr (tqdm progress, warnings) and logging of ``fmrirecon`` to ``path``.

    Progress bars are written line by line; the log starts with the step's name and
    ends with its wall time, so that no step's log is empty. An exception that ends the
    step is written whole to the log, and as one line (``fmrirecon error: <error>``) to
    the console the step was started from, so the user sees what went wrong without
    opening the log (Snakemake itself only says that the job failed).
    """
    console = sys.stderr
    stream = _LineStream(open(path, "a", buffering=1))
    sys.stderr = stream
    logging.basicConfig(stream=stream, level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s", force=True)
    logging.captureWarnings(True)
    logger = logging.getLogger("fmrirecon")
    start = time.monotonic()
    logger.info("started")
    atexit.register(lambda: logger.info("exited after %.1f s", time.monotonic() - start))

    def report(kind, error, tb):
        traceback.print_exception(kind, error, tb, file=stream)
        stream.flush()
        message = str(error).splitlines()[0] if str(error) else kind.__name__
        print(f"fmrirecon error: {message} (traceback in {path})", file=console, flush=True)

    sys.excepthook = report
    return logger
