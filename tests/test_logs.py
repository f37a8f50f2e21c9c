"""Rule logs: never empty, progress bars line by line, what a fit decided."""

import subprocess
import sys

import numpy as np

from conftest import REPO, linear_voxels, smooth_images


def test_a_step_log_has_its_start_its_progress_line_by_line_and_its_time(tmp_path):
    log = tmp_path / "step.log"
    code = (f"from fmrirecon.logs import log_to\nlog_to({str(log)!r})\n"
            "from tqdm import tqdm\n"
            "for _ in tqdm(range(3), desc='runs', mininterval=0):\n    pass\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = log.read_text()
    assert "\r" not in text
    lines = text.splitlines()
    assert "fmrirecon INFO: started" in lines[0]
    assert sum("runs:" in line for line in lines) >= 3  # each redraw of the bar on its own line
    assert "exited after" in lines[-1]


def test_describe_fit_logs_the_penalties_and_cv_scores(caplog):
    from fmrirecon.methods import get_method
    from fmrirecon.stages import describe_fit

    images = smooth_images(60, size=8)
    model = get_method("pca")(seed=0, n_components=6)
    model.fit(linear_voxels(images, 80), images, groups=np.repeat(np.arange(5), 12))
    with caplog.at_level("INFO", logger="fmrirecon"):
        describe_fit(model, "pca")
    (message,) = [r.getMessage() for r in caplog.records]
    alphas = model.decoder_.best_alphas_
    assert message.startswith("pca.decoder_: 6 targets; penalty per target median")
    assert f"median {np.median(alphas):.3g}" in message
    assert f"CV R2 median {np.nanmedian(model.decoder_.cv_scores_):.3f}" in message


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
    assert "started" in text and "working" in text and "Traceback (most recent call last)" in text
    assert "ValueError: events.tsv: onset ten is not a number" in text
