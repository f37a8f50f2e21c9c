"""Count what the workflow does with each bad input of tests/bad_inputs.py (issue 17).

Run by hand, on this checkout or another (e.g. main before the pre-flight), in the
layout without sessions that older code reads too:

    git archive main | tar -x -C /tmp/mainco
    .venv/bin/python benchmarks/bad_inputs.py --repo /tmp/mainco --out before.tsv
    .venv/bin/python benchmarks/bad_inputs.py --repo . --out after.tsv

Per case: ``snakemake --dry-run`` first; a failure there stopped the run before any
compute. Otherwise the study runs for real (``--cores 2``): it either finishes (the
bad input went through: silent) or a job fails (in job). A message is *clear* when the
console names the file or config key at fault (the case's first word; for a failed job,
in its error lines, not the input files Snakemake lists) without a Python traceback.
Prints the counts and writes one row per case.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

import bad_inputs  # noqa: E402
from bad_inputs import CASES, base_study, words_in_layout  # noqa: E402


def snakemake(repo: Path, workdir: Path, *args, timeout=1800):
    env = {**os.environ, "PYTHONPATH": str(repo / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, "timeout"
    return done.returncode, done.stdout + done.stderr


def attempt(repo: Path, name, change, words) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = base_study(tmp)
        change(tmp, config)
        work = tmp / "work"
        work.mkdir()
        (work / "config.yaml").write_text(yaml.safe_dump(config))
        start = time.time()
        rc, out = snakemake(repo, work, "--dry-run")
        stage = "before"
        if rc == 0:
            rc, out = snakemake(repo, work)
            stage = "finished" if rc == 0 else "in_job"
        culprit = words_in_layout(words)[0]
        lines = [line for line in out.splitlines() if "rror" in line]
        # a failed job's console block lists its input files: only its error lines count
        named = culprit in ("\n".join(lines) if stage == "in_job" else out)
        raw = "Traceback (most recent call last)" in out
        return {"case": name, "stage": stage, "clear": stage != "finished" and named and not raw,
                "named": named, "traceback": raw, "seconds": round(time.time() - start, 1),
                "message": (lines[0] if lines else "")[:200]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cases", default="", help="comma-separated case ids (default: all)")
    args = parser.parse_args(argv)
    bad_inputs.LAYOUT["sessions"] = False
    chosen = [c for c in CASES if not args.cases or c[0] in args.cases.split(",")]
    import pandas as pd

    rows = []
    for name, change, words in chosen:
        row = attempt(args.repo.resolve(), name, change, words)
        rows.append(row)
        print("\t".join(str(row[k]) for k in ("case", "stage", "clear", "seconds", "message")), flush=True)
        pd.DataFrame(rows).to_csv(args.out, sep="\t", index=False)  # a row at a time
    table = pd.DataFrame(rows)
    counts = {
        "clear before compute": int(((table.stage == "before") & table.clear).sum()),
        "clear in a job": int(((table.stage == "in_job") & table.clear).sum()),
        "unclear (before or in a job)": int(((table.stage != "finished") & ~table.clear).sum()),
        "silent (finished)": int((table.stage == "finished").sum()),
    }
    print(f"{len(table)} cases: " + "; ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
