"""Every method of a finished run beside the mean-image and retrieval baselines.

Reads a run's reconstructions (``results_dir/derivatives/fmrirecon/sub-*/recon/``),
evaluates each with :func:`fmrirecon.evaluation.evaluate` (PixCorr, SSIM, exhaustive
2-way and n-way identification, 95% bootstrap CIs over test images) and lists the
library's baselines from the same call, as the report shows them (the distinct training
images of the run's trials table):

- ``mean image``: the mean training image, for every test image;
- ``retrieval``: the training image nearest (pixel correlation) to the reconstruction;
- ``shuffled``: each reconstruction scored against another test image.

Retrieval and shuffled depend on the reconstructions: the table lists them for the last
entry (the report gives them per method).

It also prints what validation on held-out training pairs chose for each entry (its
``_validation.json``). Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/methods_table.py runs/after/miyawaki2008 \\
        --config config/miyawaki2008.yaml [--markdown]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml


def _rows(name, recon, true, stim, n_way, n_boot, seed, train_images, train_names):
    """The entry's metrics and, from the same call, the library's baselines (the report's)."""
    from fmrirecon.evaluation import evaluate

    _, summary = evaluate(recon, true, stim, n_way=n_way, n_boot=n_boot, seed=seed,
                          train_images=train_images, train_stim_files=train_names)
    metrics = {"pixcorr": summary["pixcorr"], "ssim": summary["ssim"], "ident2": summary["ident2"],
               **{f"nway{n}": entry for n, entry in summary["nway"].items()}}
    row = {"entry": name, **metrics}
    baselines = {}
    for metric, entry in metrics.items():
        for baseline, value in (entry or {}).get("baselines", {}).items():
            baselines.setdefault(baseline, {"entry": baseline.replace("_", " ")})[metric] = value
    return row, list(baselines.values())


def _fmt(entry):
    if entry is None or entry.get("mean") is None or not np.isfinite(entry["mean"]):
        return "-"
    return f"{entry['mean']:.3f} [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)

    from fmrirecon.stages import training_images

    config = yaml.safe_load(args.config.read_text())
    seed = config.get("seed", 0)
    ev = config.get("evaluation", {})
    n_way, n_boot = tuple(ev.get("n_way", (2, 5, 10))), ev.get("n_boot", 2000)
    images = config.get("images", {"size": 32, "channels": 1})
    out = args.results_dir / "derivatives" / "fmrirecon"
    for sub in sorted(p.name for p in out.glob("sub-*")):
        recon_dir = out / sub / "recon"
        rows, choices, baselines = [], {}, []
        files = sorted(recon_dir.glob(f"{sub}_desc-*{args.split}_recon.npz"))
        if not files:
            continue
        func = out / sub / "func"
        trials_path = next(func.glob(f"{sub}_desc-*_trials.tsv"))
        stimuli = (args.results_dir / "imported" / sub / "stimuli"
                   if (args.results_dir / "imported").exists()
                   else args.results_dir / "simulated" / "bids" / "stimuli")
        # the distinct training images, as the evaluate rule reads them
        train_images, train_names = training_images(trials_path, stimuli, {"channels": 1, **images})
        for path in files:
            name = path.name[len(f"{sub}_desc-"):-len(f"{args.split}_recon.npz")]
            data = np.load(path)
            true = data["true"]
            row, baselines = _rows(name, data["images"], true, data["stim_file"], n_way, n_boot, seed,
                                   train_images, train_names)
            rows.append(row)
            record = recon_dir / f"{sub}_desc-{name}_validation.json"
            if record.exists():
                choices[name] = json.loads(record.read_text())
        rows += baselines  # the same for every entry: from the last
        metrics = ["pixcorr", "ssim", "ident2"] + [f"nway{n}" for n in n_way if n > 2]
        print(f"## {args.results_dir} {sub} ({args.split}, {len(true)} images)\n")
        print("| entry | " + " | ".join(metrics) + " |")
        print("| --- " * (len(metrics) + 1) + "|")
        for row in rows:
            print(f"| {row['entry']} | " + " | ".join(_fmt(row.get(m)) for m in metrics) + " |")
        print()
        for name, record in choices.items():
            if not record.get("enabled"):
                print(f"- {name}: no validation")
                continue
            entries = "; ".join(
                f"{e['role']} {json.dumps(e['settings'])}: {e['pixcorr']:.3f}"
                for e in record["entries"])
            print(f"- {name}: chose {json.dumps(record['chosen']['settings'])} "
                  f"({record['chosen']['role']}) on {record['n_validation_images']} held-out "
                  f"images ({record['held_out']}); validation PixCorr: {entries}"
                  + (f"; notes: {' | '.join(record['notes'])}" if record["notes"] else ""))
        print()


if __name__ == "__main__":
    main()
