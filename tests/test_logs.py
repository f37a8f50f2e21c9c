"""A step's log: messages, progress and errors go to the rule's log file."""

import subprocess
import sys

from conftest import REPO


def test_an_error_is_one_console_line_and_a_whole_traceback_in_the_log(tmp_path):
    log = tmp_path / "step.log"
    script = ("from fmrirecon.logs import log_to\n"
              f"log = log_to({str(log)!r})\n"
              "log.info('working')\n"
              "raise ValueError('events.tsv: onset ten is not a number\\nsecond line')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO / "src")})
    assert done.returncode == 1
    assert done.stderr == f"fmrirecon error: events.tsv: onset ten is not a number (traceback in {log})\n"
    text = log.read_text()
    assert "working" in text and "Traceback (most recent call last)" in text
    assert "ValueError: events.tsv: onset ten is not a number" in text
