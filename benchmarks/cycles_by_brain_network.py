"""Do selfsup's cycles help identification as judged by the simulated brain itself?

The pipeline's ``cycles_gain_featnway<n>`` identifies reconstructions by the features of
the decoder's own perceptual network, the network of its training loss. In a simulated
study with a higher visual area there is an independent judge: the "brain network"
whose last hidden layer drives the simulated higher voxels (trained on another image
set, never seen by the decoders). This script repeats the paired cycles-minus-pairs
n-way comparison with that network's features, and with pixel correlation beside it.

Run by hand after the natural study (``config/natural.yaml``, selfsup with
``ablation: true``), from the repository root::

    .venv/bin/python benchmarks/cycles_by_brain_network.py results/natural --method selfsup

It prints one line per distance and n: mean accuracy of both decoders and the paired
gain with its 95% bootstrap CI over test images (same distractor draws for both).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="results_dir of a simulated study")
    parser.add_argument("--method", default="selfsup", help="config entry with ablation: true")
    parser.add_argument("--subject", default="01")
    parser.add_argument("--layers", default="relu3,relu4,fc5")
    parser.add_argument("--n-way", default="2,5,10,50")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from fmrirecon.betas import read_betas
    from fmrirecon.evaluation import identification_nway, similarity_matrix, summarise
    from fmrirecon.features import FeatureExtractor, feature_similarity
    from fmrirecon.methods import ReconstructionMethod
    from fmrirecon.stages import load_stimuli, voxel_columns

    torch.set_num_threads(1)
    func = args.results / "derivatives" / "fmrirecon" / f"sub-{args.subject}" / "func"
    recon_dir = func.parent / "recon"
    weights = args.results / "simulated" / "truth" / "brain_network" / "smallconv_weights.pt"
    stimuli = args.results / "simulated" / "bids" / "stimuli"
    for path in (func, recon_dir, weights, stimuli):
        if not path.exists():
            raise SystemExit(f"{path} not found: run a simulated study with "
                             f"simulate.higher_area and {args.method} (ablation: true) first")

    model = ReconstructionMethod.load(recon_dir / f"sub-{args.subject}_desc-{args.method}_model.pkl")
    if model.variants != ["cycles", "pairs"]:
        raise SystemExit(f"{args.method}: needs both decoders (ablation: true), has {model.variants}")
    betas = read_betas(next(func.glob("*_betas.h5")), next(func.glob("*_trials.tsv")))
    columns = voxel_columns(betas, next(func.glob("*_desc-selected_mask.nii.gz")))
    size, _, channels = model.image_shape_
    test_betas, stim_files = betas.select("test").average_repeats()
    true = load_stimuli(stimuli, stim_files, size, channels)
    train = load_stimuli(stimuli, betas.select("train").trials["stim_file"], size, channels)

    judge = FeatureExtractor("smallconv", layers=args.layers.split(","), weights=str(weights),
                             device="cpu")
    print(f"judge: {judge.provenance}")
    sims = {}
    for variant in ("cycles", "pairs"):
        recon = model.reconstruct(test_betas[:, columns], variant=variant)
        sims[variant] = {"pixel": similarity_matrix(recon, true, "pixcorr"),
                         "brain network": feature_similarity(recon, true, judge, reference=train)}
    rng = np.random.default_rng([args.seed, 1])
    for distance in ("pixel", "brain network"):
        for n in (int(v) for v in args.n_way.split(",")):
            acc = {v: identification_nway(sims[v][distance], n, n_draws=1000,
                                          rng=np.random.default_rng([args.seed, 29, n]))
                   for v in sims}
            gain = summarise(acc["cycles"] - acc["pairs"], 0.0, 2000, rng)
            print(f"{distance:>13} {n:>3}-way: cycles {acc['cycles'].mean():.3f}, pairs "
                  f"{acc['pairs'].mean():.3f}, gain {gain['mean']:+.3f} "
                  f"[{gain['ci_low']:+.3f}, {gain['ci_high']:+.3f}]")


if __name__ == "__main__":
    main()
