"""The report as a reader sees it: rendered by headless Chromium at 1,400 px.

Builds a report at the natural study's scale (200 test images, three methods, two
subjects), opens it in Debian's ``chromium`` with a small script added that writes
what the page looks like into the DOM (``--dump-dom``): every image must have loaded
and no element may reach past the viewport's right edge.

Needs ``chromium``: runs when CI is set or FMRIRECON_BROWSER_TESTS=1 (and then installs
it with apt when missing, and fails if it cannot); otherwise skips when it is absent.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np
import pytest

from conftest import smooth_images
from fmrirecon.report import build_report
from test_report import write_outputs

ENABLED = (os.environ.get("CI", "").lower() not in ("", "0", "false")
           or os.environ.get("FMRIRECON_BROWSER_TESTS") == "1")
WIDTH = 1400

# Runs at load: images that did not decode, elements past the right edge, the page's width.
CHECK = """
<script>
window.addEventListener("load", () => {
  const width = window.innerWidth;
  const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  const over = [...document.querySelectorAll("body *")].filter(e => {
    const r = e.getBoundingClientRect();
    return r.width > 0 && r.right > width + 1;
  }).map(e => e.tagName + (e.id ? "#" + e.id : "") + (e.className ? "." + e.className : "")).slice(0, 20);
  const out = document.createElement("pre");
  out.id = "fmrirecon-check";
  out.textContent = JSON.stringify({width: width, scrollWidth: document.documentElement.scrollWidth,
                                    images: document.images.length, broken: broken, over: over});
  document.body.appendChild(out);
});
</script>
"""


def chromium() -> str:
    """The chromium executable; installed with apt under CI, else the test skips."""
    path = shutil.which("chromium")
    if path:
        return path
    if not ENABLED:
        pytest.skip("headless-browser test: chromium not found (apt-get install chromium); runs in CI "
                    "or with FMRIRECON_BROWSER_TESTS=1, which install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        assert done.returncode == 0, f"{' '.join(cmd)} failed (root and apt needed):\n{done.stderr[-2000:]}"
    path = shutil.which("chromium")
    assert path, "chromium still not found after apt-get install chromium"
    return path


def render(html_path, browser) -> dict:
    """What the page looks like in headless Chromium at WIDTH px (see CHECK)."""
    page = html_path.with_name("checked.html")
    page.write_text(html_path.read_text().replace("</body>", CHECK + "</body>"))
    with tempfile.TemporaryDirectory() as profile:
        # without the background-networking flags it stalls on a closed network
        done = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--window-size={WIDTH},1000", "--virtual-time-budget=20000",
             "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=300,
        )
    found = re.search(r'<pre id="fmrirecon-check">(.*?)</pre>', done.stdout, re.S)
    assert found, f"chromium did not run the check (exit {done.returncode}):\n{done.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


@pytest.mark.slow
def test_report_renders_whole_at_1400_px(tmp_path):
    browser = chromium()
    n = 200
    true = np.concatenate([smooth_images(n, size=16, seed=s) for s in range(3)], axis=-1)
    train = np.concatenate([smooth_images(50, size=16, seed=10 + s) for s in range(3)], axis=-1)
    keys = [(s, m, "test") for s in ("01", "02") for m in ("pca", "selfsup", "selfsuppairs")]
    records = write_outputs(tmp_path / "data", true, train, keys, n=n)
    config = {"seed": 0, "evaluation": {"n_boot": 200}, "report": {"gallery_columns": 10, "gallery_all_max": 60}}
    html = build_report(records, config, tmp_path / "report" / "index.html")
    seen = render(html, browser)
    assert seen["width"] == WIDTH
    # best / median / worst (10 each) and all 200 in the collapsed part, for 2 subjects,
    # shown images + 3 methods; plus the figures
    assert seen["images"] >= 2 * (3 * 10 + n) * 4
    assert seen["broken"] == []
    assert seen["over"] == [] and seen["scrollWidth"] <= WIDTH


@pytest.mark.slow
def test_the_check_sees_overflow_and_broken_images(tmp_path):
    # the check itself can fail: a too-wide table and an image that does not decode
    browser = chromium()
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><table style="width: 1800px"><tr><td>wide</td></tr></table>'
                    '<img alt="broken" src="data:image/png;base64,AAAA"></body></html>')
    seen = render(page, browser)
    assert seen["broken"] == ["broken"]
    assert "TABLE" in seen["over"] and seen["scrollWidth"] > WIDTH
