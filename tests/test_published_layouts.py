"""Published datasets as they are: the ds001506 file tree and events conventions
(sessions for splits, a stimulus name column, rest and repetition rows, images outside
the dataset) through the whole workflow (issue 16)."""

import numpy as np
import pandas as pd
import pytest

from datasets import DS001506_DESIGN, TINY_METHODS, ds001506_like, run_snakemake, signal_columns
from fmrirecon.betas import read_betas

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ds001506(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ds001506")
    truth = ds001506_like(tmp / "ds001506", tmp / "imagenet_images")
    config = {"bids_dir": str(tmp / "ds001506"), "seed": 2, **TINY_METHODS,
              "design": DS001506_DESIGN,
              "stimuli": {"column": "stimulus_name", "folder": str(tmp / "imagenet_images")}}
    done = run_snakemake(tmp / "work", config)
    return tmp, truth, done


def test_ds001506_layout_runs_end_to_end(ds001506):
    tmp, truth, done = ds001506
    results = tmp / "work" / "results"
    metrics = pd.read_csv(results / "report" / "metrics.tsv", sep="\t")
    assert set(metrics["split"]) == {"test", "imagery"}
    # the count per split, printed before any job; the letter session is in no split
    assert "pre-flight: train: 40 trials of 40 images in 4 runs (sub-01 40)" in done.stderr
    assert "pre-flight: test: 20 trials of 10 images in 2 runs (sub-01 20)" in done.stderr
    assert "pre-flight: imagery: 4 trials of 4 images in 1 runs (sub-01 4)" in done.stderr
    assert "1 run(s) in no split skipped (session/task: perceptionLetterImage01/perception)" in done.stderr
    manifest = pd.read_csv(results / "manifest.tsv", sep="\t", dtype=str)
    assert "perceptionLetterImage01" not in set(manifest["session"])


def test_ds001506_trials_are_the_stimulus_events_with_their_own_responses(ds001506):
    tmp, truth, _ = ds001506
    stem = tmp / "work" / "results" / "derivatives" / "fmrirecon" / "sub-01" / "func" / "sub-01_desc-lsa"
    betas = read_betas(f"{stem}_betas.h5", f"{stem}_trials.tsv")
    trials = betas.trials
    # rest, repetition, cue and rating rows dropped; images named by stimulus_name + .JPEG
    assert len(trials) == len(truth) == 64
    assert trials["stim_file"].str.fullmatch(r"n\d{8}_\d+\.JPEG").all()
    assert (trials["stim_id"] + ".JPEG" == trials["stim_file"]).all()
    test = trials[trials["split"] == "test"]
    assert test.groupby("stim_file").size().eq(2).all()  # each test image twice: repeats by id
    # each trial's betas in the signal voxels follow its planted response
    columns, positions = signal_columns(betas.voxel_ijk)
    key = ["session", "run", "onset"]
    merged = trials.reset_index().merge(truth, on=key, validate="one_to_one")
    r = [np.corrcoef(betas.betas[row, columns], pattern[positions])[0, 1]
         for row, pattern in zip(merged["index"], merged["pattern"])]
    assert np.median(r) > 0.8  # chance 0
