"""Single-trial beta quality: LSA vs each step of the ``denoised`` GLM (run by hand).

Simulates the built-in study (config.yaml's ``simulate`` section) with per-voxel HRF
variability and shared low-rank noise, preprocesses it (light), then per subject:

- fits nilearn LSA (``glm.method: lsa``) and ``denoised`` (with the betas of every
  step: LSA-equivalent -> +HRF -> +denoise -> +ridge), each in a fresh process so
  that wall time and peak memory are its own;
- on the truly visual voxels (from the simulator's truth), reports the median
  single-trial test-retest reliability (mean correlation across test stimuli
  between every two repetitions), the split-half reliability of
  :mod:`fmrirecon.reliability` on the test split, and the correlation of the
  repetition-averaged test betas with the true responses;
- runs the same decoder on the same split for LSA and ``denoised`` betas (voxel
  selection, ``pca`` method, reconstruction and evaluation of the default config)
  and prints the metrics.

The test split is never used to choose the number of noise components or the
ridge fractions (``xval_split: train``), so its numbers are out of sample.

Usage::

    .venv/bin/python benchmarks/glm_quality.py [--out /tmp/glm_quality] [--subjects 01 02]
        [--shared-components 3] [--shared-psc 1.0] [--peaks 4 7]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SPLITS = {"train": ["train"], "test": ["test"], "imagery": ["imagery"]}


def simulate(cfg: dict, out: Path) -> list[str]:
    from fmrirecon.preprocess import derivative_paths
    from fmrirecon.preprocess.light import preprocess_subject
    from fmrirecon.simulate import bids_run_name, simulate_subject, study_plan, write_stimuli

    bids = out / "bids"
    plan = study_plan(cfg)
    if not (bids / "stimuli" / "stimuli.tsv").exists():
        write_stimuli(cfg, bids)
    for s in plan["subjects"]:
        truth = out / "truth" / f"sub-{s}_truth.h5"
        if truth.exists():
            continue
        simulate_subject(cfg, bids, s, truth)
        runs = [r for r in plan["runs"] if r["subject"] == s]
        bolds = [bids / f"sub-{s}" / "func" / f"{bids_run_name(s, r['task'], r['run'])}_bold.nii.gz" for r in runs]
        outs = [derivative_paths(out / "prep", s, r["task"], r["run"]) for r in runs]
        preprocess_subject(bolds, outs, out / "prep" / f"sub-{s}_boldref.nii.gz", progress=False)
    return plan["subjects"]


def glm_runs(cfg: dict, out: Path, subject: str) -> list[dict]:
    from fmrirecon.preprocess import derivative_paths
    from fmrirecon.simulate import bids_run_name, study_plan

    runs = []
    for r in study_plan(cfg)["runs"]:
        if r["subject"] != subject:
            continue
        p = derivative_paths(out / "prep", subject, r["task"], r["run"])
        events = out / "bids" / f"sub-{subject}" / "func" / f"{bids_run_name(subject, r['task'], r['run'])}_events.tsv"
        runs.append({"bold": str(p["bold"]), "mask": str(p["mask"]), "confounds": str(p["confounds"]),
                     "events": str(events), "task": r["task"], "run": r["run"], "tr": float(cfg.get("tr", 2.0))})
    return runs


def _glm_job(method: str, runs: list[dict], out_prefix: str, queue) -> None:
    """Fit one GLM in this (fresh) process; report time and peak RSS."""
    from fmrirecon.betas import write_betas
    from fmrirecon.glm import single_trial_betas
    from fmrirecon.glm_denoise import denoised_betas, step_reliability, write_denoise
    from fmrirecon.reliability import add_reliability

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if method == "lsa":
        betas = single_trial_betas(runs, SPLITS, method="lsa", progress=False)
        fit = None
    else:
        betas, fit = denoised_betas(runs, SPLITS, progress=False, keep_steps=True)
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    betas = add_reliability(betas, split="train")
    write_betas(f"{out_prefix}_betas.h5", betas, f"{out_prefix}_trials.tsv")
    if fit is not None:
        write_denoise(f"{out_prefix}_betas.h5", fit, step_reliability(fit, betas.trials), "test")
        np.savez_compressed(f"{out_prefix}_steps.npz", **{k.replace("+", "p_"): v for k, v in fit.step_betas.items()})
    queue.put({"seconds": seconds, "peak_rss_mb": rss / 1024, "rss_after_imports_mb": rss0 / 1024})


def run_glm(method, runs, out_prefix):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_glm_job, args=(method, runs, str(out_prefix), queue))
    proc.start()
    result = queue.get()
    proc.join()
    if proc.exitcode:
        raise RuntimeError(f"{method} GLM failed")
    return result


def retest(betas: np.ndarray, trials: pd.DataFrame) -> np.ndarray:
    """Mean correlation across test stimuli between every two repetitions, per voxel."""
    test = trials[trials["split"] == "test"]
    stims = sorted(test["stim_file"].unique())
    reps = sorted(test["repetition"].unique())
    cube = np.full((len(reps), len(stims), betas.shape[1]), np.nan)
    for a, rep in enumerate(reps):
        rows = test[test["repetition"] == rep].set_index("stim_file")["trial"]
        cube[a] = betas[rows.reindex(stims).to_numpy()]
    rs = []
    for a in range(len(reps)):
        for b in range(a + 1, len(reps)):
            x = cube[a] - cube[a].mean(0)
            y = cube[b] - cube[b].mean(0)
            rs.append((x * y).sum(0) / np.sqrt((x**2).sum(0) * (y**2).sum(0)))
    return np.mean(rs, axis=0)


def quality(betas: np.ndarray, trials: pd.DataFrame, voxel_ijk, truth_path) -> dict:
    from fmrirecon.reliability import split_half_reliability

    with h5py.File(truth_path) as f:
        t_ijk = f["voxel_ijk"][()]
        visual = f["is_visual"][()]
        stim_resp = f["model/stim_response"][()]
        stim_names = f["model/stim_file"].asstr()[()]
    lookup = {tuple(v): i for i, v in enumerate(t_ijk[visual])}
    cols = np.array([i for i, v in enumerate(map(tuple, voxel_ijk)) if v in lookup])
    true_cols = np.array([lookup[tuple(v)] for v in voxel_ijk[cols]])
    test = (trials["split"] == "test").to_numpy()
    b = betas[:, cols]
    codes, names = pd.factorize(trials["stim_file"][test])
    avg = np.stack([b[test][codes == k].mean(0) for k in range(len(names))])
    truth = stim_resp[[list(stim_names).index(n) for n in names]][:, true_cols]
    x, y = avg - avg.mean(0), truth - truth.mean(0)
    r_true = (x * y).sum(0) / np.sqrt((x**2).sum(0) * (y**2).sum(0))
    return {
        "n_visual_voxels": len(cols),
        "retest": float(np.nanmedian(retest(b, trials))),
        "split_half": float(np.nanmedian(split_half_reliability(b[test], trials["stim_file"][test]))),
        "r_truth": float(np.nanmedian(r_true)),
    }


def downstream(prefix: Path, stimuli_dir: Path, cfg: dict, work: Path) -> dict:
    """Voxel selection + pca decoder + reconstruction + evaluation (default config)."""
    from fmrirecon import stages

    name = prefix.name
    mask = work / f"{name}_selected_mask.nii.gz"
    stages.select_voxels(f"{prefix}_betas.h5", f"{prefix}_trials.tsv",
                         {"select": "reliability", "n_top": 500, "min_reliability": None, "mask": None,
                          "atlas": None, "atlas_labels": []}, mask)
    images = cfg["images"]
    stages.fit_method(f"{prefix}_betas.h5", f"{prefix}_trials.tsv", mask, stimuli_dir, "pca",
                      cfg["methods"]["pca"], images, 0, work / f"{name}_model.pkl",
                      work / f"{name}_history.tsv")
    stages.reconstruct(work / f"{name}_model.pkl", f"{prefix}_betas.h5", f"{prefix}_trials.tsv", mask,
                       stimuli_dir, "test", images, 0, work / f"{name}_recon.npz",
                       work / f"{name}_recon.png")
    stages.method_metrics(work / f"{name}_model.pkl", work / f"{name}_recon.npz", f"{prefix}_betas.h5",
                          f"{prefix}_trials.tsv", mask, stimuli_dir, "test", images,
                          cfg["evaluation"], 0, work / f"{name}_extra.json")
    stages.evaluate(work / f"{name}_recon.npz", work / f"{name}_extra.json", cfg["evaluation"], 0,
                    work / f"{name}_metrics.tsv", work / f"{name}_summary.json")
    summary = json.loads((work / f"{name}_summary.json").read_text())
    return {k: round(v["mean"], 4) for k, v in summary.items() if isinstance(v, dict) and "mean" in v}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/glm_quality")
    parser.add_argument("--subjects", nargs="*", default=None)
    parser.add_argument("--shared-components", type=int, default=3)
    parser.add_argument("--shared-psc", type=float, default=1.0)
    parser.add_argument("--peaks", type=float, nargs=2, default=[4.0, 7.0])
    args = parser.parse_args(argv)

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    sim = dict(config["simulate"], hrf_peak_range=list(args.peaks),
               shared_noise_components=args.shared_components, shared_noise_psc=args.shared_psc)
    config.setdefault("methods", {"pca": {"n_components": 50}})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("simulate:", json.dumps(sim))
    subjects = simulate(sim, out)
    if args.subjects:
        subjects = [s for s in subjects if s in args.subjects]

    rows, recon_rows, cost_rows = [], [], []
    for s in subjects:
        runs = glm_runs(sim, out, s)
        truth = out / "truth" / f"sub-{s}_truth.h5"
        from fmrirecon.betas import read_betas

        for method in ("lsa", "denoised"):
            prefix = out / f"sub-{s}_desc-{method}"
            cost = run_glm(method, runs, prefix)
            cost_rows.append({"subject": s, "glm": method, **cost})
            betas = read_betas(f"{prefix}_betas.h5", f"{prefix}_trials.tsv")
            if method == "lsa":
                rows.append({"subject": s, "betas": "nilearn lsa",
                             **quality(betas.betas, betas.trials, betas.voxel_ijk, truth)})
            else:
                steps = np.load(f"{prefix}_steps.npz")
                for step in ("lsa", "p_hrf", "p_denoise", "p_ridge"):
                    rows.append({"subject": s, "betas": step.replace("p_", "+"),
                                 **quality(steps[step], betas.trials, betas.voxel_ijk, truth)})
                with h5py.File(f"{prefix}_betas.h5") as f:
                    peaks = f["denoise/hrf_peaks"][()][f["denoise/hrf_index"][()]]
                    n_pcs = int(f["denoise"].attrs["n_pcs"])
                    frac = f["denoise/fraction"][()]
                with h5py.File(truth) as f:
                    t_ijk, vis, true_peak = f["voxel_ijk"][()], f["is_visual"][()], f["hrf_peak"][()]
                idx = {tuple(v): i for i, v in enumerate(t_ijk)}
                ti = np.array([idx.get(tuple(v), -1) for v in betas.voxel_ijk])
                ok = (ti >= 0) & vis[np.maximum(ti, 0)]
                print(f"sub-{s}: noise components {n_pcs} (planted {args.shared_components}); "
                      f"HRF peak chosen vs true on visual voxels r = "
                      f"{np.corrcoef(peaks[ok], true_peak[ti[ok]])[0, 1]:.2f}; "
                      f"median ridge fraction (visual) {np.median(frac[ok]):.2f}")
            recon_rows.append({"subject": s, "glm": method,
                               **downstream(prefix, out / "bids" / "stimuli", config, out)})

    pd.set_option("display.width", 200)
    table = pd.DataFrame(rows)
    print("\nBeta quality on the truly visual voxels (medians; test split, out of sample):")
    print(table.round(3).to_string(index=False))
    mean = table.groupby("betas", sort=False)[["retest", "split_half", "r_truth"]].mean()
    mean["retest_x_lsa"] = mean["retest"] / mean.loc["nilearn lsa", "retest"]
    print("\nMean over subjects:")
    print(mean.round(3).to_string())
    print("\nReconstruction (pca decoder, same voxels count and split):")
    print(pd.DataFrame(recon_rows).to_string(index=False))
    print("\nGLM cost (fresh process each; peak RSS includes ~the interpreter and imports):")
    cost = pd.DataFrame(cost_rows)
    print(cost.round(1).to_string(index=False))
    per = cost.pivot(index="subject", columns="glm", values="seconds")
    print("time ratio denoised / lsa:", (per["denoised"] / per["lsa"]).round(2).to_dict())
    table.to_csv(out / "quality.tsv", sep="\t", index=False)
    pd.DataFrame(recon_rows).to_csv(out / "recon.tsv", sep="\t", index=False)
    cost.to_csv(out / "cost.tsv", sep="\t", index=False)


if __name__ == "__main__":
    main()
