"""Speed, peak memory and agreement of the decoder and GLM solvers against their peers.

Run by hand (not in CI)::

    python benchmarks/solvers.py --size small --stage all
    python benchmarks/solvers.py --size medium --stage decoder --repeats 3
    python benchmarks/solvers.py --size nsd --stage glm

Every (stage, implementation) runs in its own subprocess, one after the other in the
same invocation so the ratios share the machine's conditions; repeats are interleaved
(ours, peer, ours, peer, ...) and medians reported. Peak memory is the worker's
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (whole process: interpreter, libraries
and the synthetic data it holds); ``data`` is the same high-water mark right after
the data were generated, so ``peak - data`` is what the solver added.

Peers that cannot run in full at a size are timed on a stated subset (targets,
penalties, folds, runs or trials) and extrapolated linearly; the output says so.
Agreement is the max abs difference of predictions (decoder, on held-out trials) or
betas (GLM) against ours, on whatever the peer computed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ALPHAS = np.logspace(-1, 6, 15)
N_FOLDS = 5

# decoder: trials, voxels, targets, runs (CV groups), held-out test trials
DECODER_SIZES = {
    "small": dict(n=300, p=1000, k=32, runs=10, n_test=100),
    "medium": dict(n=2000, p=5000, k=256, runs=20, n_test=200),
    "nsd": dict(n=10000, p=15000, k=1024, runs=40, n_test=500),
}
# GLM: runs, volumes per run, trials per run, voxels, TR (s)
GLM_SIZES = {
    "small": dict(runs=2, vols=120, trials=20, voxels=2000, tr=2.0),
    "medium": dict(runs=4, vols=300, trials=60, voxels=20000, tr=1.6),
    # 40 runs x 250 trials = 10,000 trials; 100,000 voxels; one run (626 x 1e5 float64,
    # 0.5 GB) in memory at a time
    "nsd": dict(runs=40, vols=626, trials=250, voxels=100000, tr=1.6),
}
# Peer subsets per size (None = in full). Extrapolated linearly to the full problem.
SUBSETS = {
    "small": dict(sklearn_targets=8, sklearn_shared_alphas=None, himalaya_folds=None,
                  nilearn_lsa_runs=None, nilearn_lss_trials=None),
    "medium": dict(sklearn_targets=4, sklearn_shared_alphas=None, himalaya_folds=None,
                   nilearn_lsa_runs=None, nilearn_lss_trials=20),
    "nsd": dict(sklearn_targets=0, sklearn_shared_alphas=1, himalaya_folds=1,
                nilearn_lsa_runs=2, nilearn_lss_trials=6),
}


def _rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# --------------------------------------------------------------------------- data
def decoder_data(n, p, k, runs, n_test, seed=0):
    """Betas with a low-rank signal shared with the targets; run labels for CV."""
    rng = np.random.default_rng(seed)
    n_all = n + n_test
    latent = rng.standard_normal((n_all, 64)).astype(np.float32)
    X = latent @ rng.standard_normal((64, p)).astype(np.float32) * 0.3
    X += rng.standard_normal((n_all, p), dtype=np.float32)
    weights = rng.standard_normal((64, k)) * np.logspace(-2, 0, k)  # easy to pure noise
    Y = (latent @ weights + rng.standard_normal((n_all, k))).astype(np.float32)
    groups = np.repeat(np.arange(runs), int(np.ceil(n / runs)))[:n]
    return X[:n], Y[:n], groups, X[n:], Y[n:]


def glm_run(r, vols, trials, voxels, tr, seed=0):
    """One run: onsets, 6 motion confounds and BOLD (vols, voxels) around 1000."""
    from nilearn.glm.first_level import compute_regressor

    rng = np.random.default_rng([seed, r])
    frame_times = np.arange(vols) * tr
    spacing = (vols * tr - 20.0) / trials
    onsets = 4.0 + spacing * np.arange(trials) + rng.uniform(0, 0.5, trials)
    regs = np.stack([compute_regressor(np.array([[o], [3.0], [1.0]]), "glover", frame_times)[0][:, 0]
                     for o in onsets], 1)
    amps = rng.normal(1.0, 1.0, (trials, voxels)) * (rng.random(voxels) < 0.3)
    bold = 1000.0 + 10.0 * (regs @ amps) + rng.normal(0, 5.0, (vols, voxels))
    bold += 5.0 * np.cos(np.pi * frame_times / frame_times[-1])[:, None]
    motion = rng.normal(0, 0.05, (vols, 6))
    return onsets, motion, bold.astype(np.float32)


# --------------------------------------------------------------------------- decoder workers
def _standardise(X, Xt):
    X = np.asarray(X, dtype=np.float64)
    mean, scale = X.mean(0), X.std(0)
    scale[scale == 0] = 1.0
    return (X - mean) / scale, (np.asarray(Xt, dtype=np.float64) - mean) / scale


def _subsets(size):
    # FMRIRECON_BENCH_FULL=1 (set by --full) runs every peer on the whole problem
    if os.environ.get("FMRIRECON_BENCH_FULL") == "1":
        return {key: None for key in SUBSETS[size]}
    return SUBSETS[size]


def decoder_worker(impl, size, out):
    from fmrirecon.decoding import RidgeDecoder, cv_splits

    X, Y, groups, Xt, _ = decoder_data(**DECODER_SIZES[size])
    sub = _subsets(size)
    data_rss = _rss_mib()
    info = {}
    import torch  # noqa: F401  (ours solves with torch: its import is not the solver's time)

    t0 = time.perf_counter()
    if impl == "ours":
        model = RidgeDecoder(ALPHAS, N_FOLDS, device="auto").fit(X, Y, groups=groups)
        pred = model.predict(Xt).astype(np.float64)
        cols = np.arange(Y.shape[1])
    else:
        cv = cv_splits(len(X), N_FOLDS, groups)
        Xs, Xts = _standardise(X, Xt)
        y_mean = Y.mean(0, dtype=np.float64)
        Yc = Y - y_mean
        if impl.startswith("himalaya"):
            from himalaya.backend import set_backend
            from himalaya.kernel_ridge import KernelRidgeCV
            from himalaya.ridge import RidgeCV
            from himalaya.scoring import r2_score

            backend = set_backend("torch" if "torch" in impl else "numpy")
            dtype = np.float32 if impl.endswith("f32") else np.float64
            if sub["himalaya_folds"]:
                cv = cv[: sub["himalaya_folds"]]
                info["subset"] = f"{len(cv)} of {N_FOLDS} folds (+ refit): a lower bound, not extrapolated"
            params = dict(alphas=ALPHAS, cv=cv,
                          solver_params=dict(local_alpha=True, score_func=r2_score))
            Xs_, Yc_ = Xs.astype(dtype), Yc.astype(dtype)
            if len(X) < X.shape[1]:
                m = KernelRidgeCV(kernel="linear", **params).fit(Xs_, Yc_)
                coef = Xs_.T @ backend.to_numpy(m.dual_coef_)
            else:
                m = RidgeCV(**params).fit(Xs_, Yc_)
                coef = backend.to_numpy(m.coef_)
            pred = Xts @ coef.astype(np.float64) + y_mean
            cols = np.arange(Y.shape[1])
        elif impl == "sklearn_per_target":
            # sklearn's RidgeCV supports a per-target alpha only with its LOO (cv=None):
            # with the run-grouped folds the same estimator is one RidgeCV per target
            from sklearn.linear_model import RidgeCV

            n_sub = Y.shape[1] if sub["sklearn_targets"] is None else sub["sklearn_targets"]
            cols = np.arange(n_sub)
            pred = np.empty((len(Xt), n_sub))
            for t in cols:
                m = RidgeCV(alphas=ALPHAS, cv=cv, fit_intercept=False).fit(Xs, Yc[:, t])
                pred[:, t] = Xts @ m.coef_ + y_mean[t]
            if n_sub < Y.shape[1]:
                info["subset"] = f"{n_sub} of {Y.shape[1]} targets, time x {Y.shape[1] / n_sub:g}"
                info["scale"] = Y.shape[1] / n_sub
        elif impl == "sklearn_shared":
            # what a sklearn user runs on all targets at once: ONE alpha for all targets
            from sklearn.linear_model import RidgeCV

            alphas = ALPHAS
            if sub["sklearn_shared_alphas"]:
                alphas = ALPHAS[[len(ALPHAS) // 2]][: sub["sklearn_shared_alphas"]]
                fits_full = len(ALPHAS) * len(cv) + 1
                fits_done = len(alphas) * len(cv) + 1
                info["subset"] = (f"{len(alphas)} of {len(ALPHAS)} alphas, time x "
                                  f"{fits_full}/{fits_done} Ridge fits")
                info["scale"] = fits_full / fits_done
            m = RidgeCV(alphas=alphas, cv=cv, fit_intercept=False).fit(Xs, Yc)
            pred = Xts @ m.coef_.T + y_mean
            cols = np.arange(Y.shape[1])
            info["no_agreement"] = "different estimator (one alpha for all targets)"
        else:
            raise ValueError(impl)
    seconds = time.perf_counter() - t0
    np.save(out + ".npy", pred)
    np.save(out + ".cols.npy", cols)
    info.update(seconds=seconds, peak_mib=_rss_mib(), data_mib=data_rss)
    Path(out + ".json").write_text(json.dumps(info))


# --------------------------------------------------------------------------- GLM workers
def _frame(onsets, types):
    import pandas as pd

    return pd.DataFrame({"onset": onsets, "duration": 3.0, "trial_type": types})


def glm_worker(impl, size, out):
    import pandas as pd

    from fmrirecon.glm import _percent_signal_change, _run_betas

    cfg = GLM_SIZES[size]
    sub = _subsets(size)
    motion_cols = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
    seconds, data_rss, results, info = 0.0, 0.0, [], {}
    runs = range(cfg["runs"])
    if impl == "nilearn_lsa" and sub["nilearn_lsa_runs"]:
        runs = range(sub["nilearn_lsa_runs"])
        info["subset"] = f"{len(runs)} of {cfg['runs']} runs, time x {cfg['runs'] / len(runs):g}"
        info["scale"] = cfg["runs"] / len(runs)
    if impl == "nilearn_lss" and sub["nilearn_lss_trials"]:
        runs = range(1)
        n_sub = sub["nilearn_lss_trials"]
        total = cfg["runs"] * cfg["trials"]
        info["subset"] = f"{n_sub} of {total} trials (1 model each), time x {total / n_sub:g}"
        info["scale"] = total / n_sub
    for r in runs:
        onsets, motion, bold = glm_run(r, cfg["vols"], cfg["trials"], cfg["voxels"], cfg["tr"])
        data_rss = max(data_rss, _rss_mib())
        conf = pd.DataFrame(motion, columns=motion_cols)
        names = [f"trial{i:05d}" for i in range(len(onsets))]
        t0 = time.perf_counter()
        if impl in ("ours_lsa", "ours_lss"):
            events = pd.DataFrame({"onset": onsets, "duration": 3.0})
            Y = _percent_signal_change(bold.astype(np.float64), "bench")
            betas = _run_betas({"tr": cfg["tr"]}, events, Y, impl[5:], "glover", 0.01, "ols", conf)
            del Y
        else:
            import nibabel as nib
            from nilearn.glm.first_level import FirstLevelModel

            # voxels laid out on a 3-D grid, all in the mask; an in-memory image
            shape = (cfg["voxels"] // 100, 10, 10)
            img = nib.Nifti1Image(bold.T.reshape(*shape, -1), np.eye(4))
            mask = nib.Nifti1Image(np.ones(shape, dtype=np.uint8), np.eye(4))
            kwargs = dict(t_r=cfg["tr"], hrf_model="glover", drift_model="cosine", high_pass=0.01,
                          noise_model="ols", mask_img=mask, signal_scaling=0, minimize_memory=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if impl == "nilearn_lsa":
                    model = FirstLevelModel(**kwargs).fit(img, events=_frame(onsets, names),
                                                          confounds=conf)
                    betas = np.stack([model.compute_contrast(n, output_type="effect_size")
                                      .get_fdata().reshape(-1) for n in names])
                else:
                    trials = range(sub["nilearn_lss_trials"] or len(onsets))
                    betas = np.empty((len(trials), cfg["voxels"]))
                    for i in trials:
                        types = np.array(["other"] * len(onsets), dtype=object)
                        types[i] = "target"
                        model = FirstLevelModel(**kwargs).fit(img, events=_frame(onsets, types),
                                                              confounds=conf)
                        betas[i] = model.compute_contrast("target", output_type="effect_size") \
                            .get_fdata().reshape(-1)
        seconds += time.perf_counter() - t0
        results.append(betas.astype(np.float32))
        del bold
    np.save(out + ".npy", np.concatenate(results))
    info.update(seconds=seconds, peak_mib=_rss_mib(), data_mib=data_rss)
    Path(out + ".json").write_text(json.dumps(info))


# --------------------------------------------------------------------------- driver
def _run_worker(stage, impl, size, tmp, rep):
    out = str(Path(tmp) / f"{stage}-{impl}-{rep}")
    cmd = [sys.executable, __file__, "--worker", stage, impl, "--size", size, "--out", out]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    subprocess.run(cmd, check=True, env=env)
    info = json.loads(Path(out + ".json").read_text())
    info["out"] = out
    return info


def _compare(ours_out, peer_out, stage):
    ours, peer = np.load(ours_out + ".npy"), np.load(peer_out + ".npy")
    if stage == "decoder":
        cols = np.load(peer_out + ".cols.npy")
        return float(np.abs(ours[:, cols] - peer).max())
    return float(np.abs(ours[: len(peer)] - peer).max())


def run_stage(stage, size, repeats, tmp, only=None):
    if stage == "decoder":
        impls = ["ours", "himalaya", "himalaya_torch", "himalaya_f32", "sklearn_shared",
                 "sklearn_per_target"]
        if size == "nsd" and not only:  # float32 and torch variants add hours
            impls = ["ours", "himalaya", "sklearn_shared"]
        pairs = {"himalaya": "ours", "himalaya_torch": "ours", "himalaya_f32": "ours",
                 "sklearn_shared": "ours", "sklearn_per_target": "ours"}
    else:
        impls = ["ours_lsa", "ours_lss", "nilearn_lsa", "nilearn_lss"]
        pairs = {"nilearn_lsa": "ours_lsa", "nilearn_lss": "ours_lss"}
    if only:
        impls = [impl for impl in impls if impl in only]
    slow = {"sklearn_per_target", "sklearn_shared", "himalaya", "himalaya_torch", "himalaya_f32",
            "nilearn_lss", "nilearn_lsa"}
    runs = {impl: [] for impl in impls}
    for rep in range(repeats):
        for impl in impls:
            if rep > 0 and (impl in slow and size == "nsd"):
                continue  # one timing of the hour-long peers is enough
            print(f"[{stage}/{size}] {impl} repeat {rep + 1}", file=sys.stderr, flush=True)
            info = _run_worker(stage, impl, size, tmp, rep)
            runs[impl].append(info)
            print(f"[{stage}/{size}] {impl}: {info['seconds']:.2f} s, peak {info['peak_mib']:.0f} MiB, "
                  f"data {info['data_mib']:.0f} MiB {info.get('subset', '')}", file=sys.stderr, flush=True)
    rows = []
    for impl in impls:
        infos = runs[impl]
        t = float(np.median([i["seconds"] for i in infos]))
        row = dict(stage=stage, size=size, impl=impl, seconds=t, repeats=len(infos),
                   full_seconds=t * infos[0].get("scale", 1.0), peak_mib=max(i["peak_mib"] for i in infos),
                   data_mib=max(i["data_mib"] for i in infos), subset=infos[0].get("subset", ""))
        if impl in pairs and runs.get(pairs[impl]):
            ref = runs[pairs[impl]]
            ref_t = float(np.median([i["seconds"] for i in ref]))
            row["ratio"] = row["full_seconds"] / ref_t
            row["vs"] = pairs[impl]
            row["max_abs_diff"] = (None if "no_agreement" in infos[0]
                                   else _compare(ref[0]["out"], infos[0]["out"], stage))
        rows.append(row)
    return rows


def print_table(rows):
    head = (f"{'stage':8} {'size':6} {'impl':19} {'time s':>9} {'full s':>10} {'x ours':>8} "
            f"{'peak MiB':>9} {'data MiB':>9} {'max|diff|':>10}  note")
    print(head)
    print("-" * len(head))
    for r in rows:
        diff = r.get("max_abs_diff")
        diff = "n/a" if diff is None and "vs" in r else ("" if diff is None else f"{diff:.2e}")
        ratio = f"{r['ratio']:.1f}" if "ratio" in r else ""
        print(f"{r['stage']:8} {r['size']:6} {r['impl']:19} {r['seconds']:9.2f} {r['full_seconds']:10.1f} "
              f"{ratio:>8} {r['peak_mib']:9.0f} {r['data_mib']:9.0f} {diff:>10}  "
              f"{'median of ' + str(r['repeats']) + '; ' if r['repeats'] > 1 else ''}{r['subset']}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=list(DECODER_SIZES), default="small")
    parser.add_argument("--stage", choices=["decoder", "glm", "all"], default="all")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--impls", nargs="+",
                        help="run only these implementations (e.g. ours himalaya)")
    parser.add_argument("--full", action="store_true",
                        help="run every peer on the whole problem, no subset (hours at nsd): "
                             "for agreement at size")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        stage, impl = args.worker
        (decoder_worker if stage == "decoder" else glm_worker)(impl, args.size, args.out)
        return
    for stage, sizes in (("decoder", DECODER_SIZES), ("glm", GLM_SIZES)):
        if args.stage in (stage, "all"):
            print(f"{stage} {args.size}: {sizes[args.size]}", flush=True)
    if args.full:
        os.environ["FMRIRECON_BENCH_FULL"] = "1"  # read by the worker subprocesses
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for stage in ("decoder", "glm"):
            if args.stage in (stage, "all"):
                rows += run_stage(stage, args.size, args.repeats, tmp, args.impls)
    print_table(rows)
    print("time s: measured (median of repeats); full s: extrapolated to the full problem when "
          "the peer ran on a subset; x ours: full s / ours; peak MiB: the worker's ru_maxrss; "
          "data MiB: ru_maxrss right after data generation; max|diff|: predictions (decoder) or "
          "betas (GLM) vs ours on what the peer computed")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
