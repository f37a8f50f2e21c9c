"""What the ``nsd`` entry point costs, job by job, measured on an NSD-shaped fixture.

Writes tests/datasets.py:nsd_like at a size that fits a laptop (by default one subject,
4 sessions = 3,000 trials, a 40 x 48 x 40 grid whose ROI holds 17,600 voxels, 64-pixel
images), runs the workflow (pca and ridge, all ROI voxels) and prints each job's wall
time and peak memory from Snakemake's benchmark files. docs/formats.md scales them to
the full NSD.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/nsd_cost.py --sessions 4
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from datasets import nsd_like  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--volume", type=int, nargs=3, default=[40, 48, 40])
    parser.add_argument("--image-side", type=int, default=64)
    parser.add_argument("--keep", type=Path, default=None, help="work here instead of a temporary folder")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        per_subject = 250 * args.sessions
        nsd_like(root / "nsd", subjects=(1,), n_sessions=args.sessions, n_shared=per_subject // 10,
                 n_own=per_subject - per_subject // 10, image_side=args.image_side,
                 volume=tuple(args.volume), keep_raw=False)
        config = {"nsd": {"root": str(root / "nsd"), "subjects": [1], "image_size": args.image_side},
                  "voxels": {"select": "all", "n_top": None}, "images": {"size": 32},
                  "methods": {"pca": {"n_components": 50}, "ridge": {}},
                  "evaluation": {"n_way": [2, 10], "n_boot": 1000}}
        work = root / "work"
        work.mkdir(parents=True, exist_ok=True)
        (work / "config.yaml").write_text(yaml.safe_dump(config))
        subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
                        str(work), "--configfile", str(work / "config.yaml"), "--cores", "2"], check=True)
        rows = []
        for path in sorted((work / "results" / "benchmarks").rglob("*.tsv")):
            bench = pd.read_csv(path, sep="\t")
            rows.append({"job": path.relative_to(work / "results" / "benchmarks").as_posix(),
                         "seconds": round(float(bench["s"].iloc[0]), 1),
                         "max_rss_mb": round(float(bench["max_rss"].iloc[0]))})
        table = pd.DataFrame(rows)
        print(f"{args.sessions} sessions ({750 * args.sessions} trials), grid {args.volume}")
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
