"""Every method of a finished run beside the mean-image and retrieval baselines.

Reads a run's reconstructions (``results_dir/derivatives/fmrirecon/sub-*/recon/``),
evaluates each with :func:`fmrirecon.evaluation.evaluate` (PixCorr, SSIM, exhaustive
2-way and n-way identification, 95% bootstrap CIs over test images), and adds two
baselines computed from the same training data:

- ``mean image``: the mean of the training images shown, for every test image;
- ``retrieval (<method>)``: for each test item, the training image whose target (the
  method's own space: pixels for ridge, PCA coefficients for pca) is nearest, by
  correlation, to the item's decoded target.

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


def _row(name, recon, true, stim, n_way, n_boot, seed):
    from fmrirecon.evaluation import evaluate

    _, summary = evaluate(recon, true, stim, n_way=n_way, n_boot=n_boot, seed=seed)
    row = {"entry": name}
    for metric in ("pixcorr", "ssim", "ident2"):
        row[metric] = summary[metric]
    for n, entry in summary["nway"].items():
        row[f"nway{n}"] = entry
    return row


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

    from fmrirecon.betas import read_betas
    from fmrirecon.methods import ReconstructionMethod
    from fmrirecon.stages import load_stimuli, voxel_columns

    config = yaml.safe_load(args.config.read_text())
    seed = config.get("seed", 0)
    ev = config.get("evaluation", {})
    n_way, n_boot = tuple(ev.get("n_way", (2, 5, 10))), ev.get("n_boot", 2000)
    images = config.get("images", {"size": 32, "channels": 1})
    out = args.results_dir / "derivatives" / "fmrirecon"
    for sub in sorted(p.name for p in out.glob("sub-*")):
        recon_dir = out / sub / "recon"
        rows, choices = [], {}
        files = sorted(recon_dir.glob(f"{sub}_desc-*{args.split}_recon.npz"))
        true = stim = None
        for path in files:
            name = path.name[len(f"{sub}_desc-"):-len(f"{args.split}_recon.npz")]
            data = np.load(path)
            true, stim = data["true"], data["stim_file"]
            rows.append(_row(name, data["images"], true, stim, n_way, n_boot, seed))
            record = recon_dir / f"{sub}_desc-{name}_validation.json"
            if record.exists():
                choices[name] = json.loads(record.read_text())
        if true is None:
            continue
        # the baselines, from the training data of the run
        func = out / sub / "func"
        betas_path = next(func.glob(f"{sub}_desc-*_betas.h5"))
        trials_path = Path(str(betas_path).replace("_betas.h5", "_trials.tsv"))
        betas = read_betas(betas_path, trials_path)
        train = betas.select("train")
        stimuli = (args.results_dir / "imported" / sub / "stimuli"
                   if (args.results_dir / "imported").exists()
                   else args.results_dir / "simulated" / "bids" / "stimuli")
        train_images = load_stimuli(stimuli, train.trials["stim_file"], images["size"],
                                    images.get("channels", 1))
        mean = np.repeat(train_images.mean(0, keepdims=True), len(true), axis=0)
        rows.append(_row("mean image", mean, true, stim, n_way, n_boot, seed))
        columns = voxel_columns(betas, out / sub / "func" / f"{sub}_desc-selected_mask.nii.gz")
        test_betas, _ = betas.select(args.split).average_repeats()
        for name in ("ridge", "pca"):
            model_path = recon_dir / f"{sub}_desc-{name}_model.pkl"
            if not model_path.exists():
                continue
            model = ReconstructionMethod.load(model_path)
            decoded = model.decode(test_betas[:, columns])
            targets = model.encode_targets(train_images)
            if targets is None:
                targets = train_images.reshape(len(train_images), -1)
            from fmrirecon.evaluation import correlation_matrix

            nearest = correlation_matrix(decoded, targets).argmax(1)
            rows.append(_row(f"retrieval ({name})", train_images[nearest], true, stim,
                             n_way, n_boot, seed))
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
