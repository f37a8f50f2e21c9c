"""The ``denoised`` GLM's noise pool, drift basis and ridge scoring, side by side.

On the GLMsingle-style simulation of ``glm_quality.py`` (the built-in study with
per-voxel HRF variability, peaks 4-7 s, and shared low-rank noise), per subject and
per variant of the three settings the issue names:

- ``noise_pool``: ``median`` (the former median-centred noise level) or ``mixture``
  (GLMsingle's two-Gaussian threshold, :func:`fmrirecon.glm_denoise.noise_threshold`);
- ``drift_model``: ``cosine`` (nilearn, 0.01 Hz) or ``polynomial`` (GLMsingle's);
- ``ridge_xval``: ``ridge`` (held-out ridge betas) or ``ols`` (held-out unregularised
  betas, GLMsingle's),

prints the noise pool's size and its share of truly non-responsive voxels (not
visual in the simulator's truth), the number of scoring voxels and of noise components,
and the median single-trial test-retest correlation of each step's betas on the truly
visual voxels (test split: never used for any choice). Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/denoise_pool.py [--out /tmp/glm_quality]
        [--subjects 01]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

VARIANTS = {
    "before (median, cosine, ridge)": dict(noise_pool="median", drift_model="cosine", ridge_xval="ridge"),
    "mixture pool": dict(noise_pool="mixture", drift_model="cosine", ridge_xval="ridge"),
    "+ polynomial drift": dict(noise_pool="mixture", drift_model="polynomial", ridge_xval="ridge"),
    "+ ols ridge scoring": dict(noise_pool="mixture", drift_model="polynomial", ridge_xval="ols"),
    "median pool, polynomial": dict(noise_pool="median", drift_model="polynomial", ridge_xval="ridge"),
}


def _roi_mask(brain_mask, t_ijk, visual, share, seed=0):
    """Every visual voxel plus random non-visual ones, visual being ``share`` of the ROI."""
    import nibabel as nib

    ref = nib.load(brain_mask)
    data = np.zeros(ref.shape[:3], dtype=np.uint8)
    rng = np.random.default_rng(seed)
    others = np.flatnonzero(~visual)
    n_other = min(len(others), int(round(visual.sum() * (1 - share) / share)))
    keep = np.concatenate([np.flatnonzero(visual), rng.choice(others, n_other, replace=False)])
    i, j, k = t_ijk[keep].T
    data[i, j, k] = 1
    return nib.Nifti1Image(data, ref.affine)


def main(argv=None):
    from glm_quality import SPLITS, glm_runs, retest, simulate

    from fmrirecon.glm_denoise import STEPS, denoised_betas

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/glm_quality")
    parser.add_argument("--subjects", nargs="*", default=None)
    parser.add_argument("--variants", nargs="*", default=None, help="names of VARIANTS to run")
    parser.add_argument("--roi-visual-share", type=float, default=None,
                        help="fit within an ROI mask: every visual voxel plus enough random "
                             "non-visual ones that visual voxels are this share (e.g. 0.6, as "
                             "in a visual ROI); default the whole brain mask")
    args = parser.parse_args(argv)
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    sim = dict(config["simulate"], hrf_peak_range=[4.0, 7.0], shared_noise_components=3,
               shared_noise_psc=1.0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    subjects = simulate(sim, out)
    if args.subjects:
        subjects = [s for s in subjects if s in args.subjects]
    rows = []
    for s in subjects:
        runs = glm_runs(sim, out, s)
        with h5py.File(out / "truth" / f"sub-{s}_truth.h5") as f:
            t_ijk, visual = f["voxel_ijk"][()], f["is_visual"][()].astype(bool)
        lookup = {tuple(v): i for i, v in enumerate(t_ijk)}
        mask_img = None
        if args.roi_visual_share:
            mask_img = _roi_mask(runs[0]["mask"], t_ijk, visual, args.roi_visual_share)
        for name, variant in VARIANTS.items():
            if args.variants and name not in args.variants:
                continue
            drift = variant["drift_model"]
            betas, fit = denoised_betas(runs, SPLITS, progress=False, keep_steps=True,
                                        drift_model=drift, noise_pool=variant["noise_pool"],
                                        mask_img=mask_img,
                                        ridge_xval=variant["ridge_xval"])
            idx = np.array([lookup.get(tuple(v), -1) for v in betas.voxel_ijk])
            is_visual = (idx >= 0) & visual[np.maximum(idx, 0)]
            pool = fit.noise_pool
            row = {"subject": s, "variant": name, "pool": int(pool.sum()),
                   "pool_nonresponsive": float((~is_visual[pool]).mean()) if pool.any() else np.nan,
                   "scoring_voxels": int(fit.good_voxels.sum()),
                   "scoring_responsive": float(is_visual[fit.good_voxels].mean()),
                   "n_pcs": int(fit.n_pcs)}
            for step in STEPS:
                row[f"retest {step}"] = float(np.nanmedian(
                    retest(fit.step_betas[step][:, is_visual], betas.trials)))
            rows.append(row)
            print(row, flush=True)
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 250)
    print("\nNoise pool and single-trial test-retest (median over truly visual voxels):")
    print(table.round(3).to_string(index=False))
    print("\nMean over subjects:")
    print(table.drop(columns="subject").groupby("variant", sort=False).mean().round(3).to_string())
    table.to_csv(out / "denoise_pool.tsv", sep="\t", index=False)


if __name__ == "__main__":
    main()
