"""Entry point nsd: the Natural Scenes Dataset's own layout (issue 16)."""

import numpy as np
import pandas as pd
import pytest

from datasets import TINY_METHODS, nsd_like, run_snakemake
from fmrirecon.betas import read_betas
from fmrirecon.nsd import NSD_DEFAULTS, check_nsd, import_nsd, read_expdesign, subject_trials


@pytest.fixture(scope="module")
def nsd(tmp_path_factory):
    root = tmp_path_factory.mktemp("nsd")
    return root, nsd_like(root)


def test_import_matches_a_reference_per_session_zscore(nsd, tmp_path):
    root, truth = nsd
    spec = {**NSD_DEFAULTS, "root": str(root), "image_size": None}
    import_nsd(spec, 2, tmp_path / "b.h5", tmp_path / "t.tsv", tmp_path / "stimuli")
    betas = read_betas(tmp_path / "b.h5", tmp_path / "t.tsv")
    # reference: the ROI voxels of the (X, Y, Z) mask, read from (750, Z, Y, X), / 300,
    # z-scored per voxel within each session (constant voxels 0)
    roi = truth["roi"][2] > 0
    raw = truth["raw"][2].transpose(0, 3, 2, 1)[:, roi].astype(np.float64) / 300
    expected = np.concatenate([(x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1)
                               for x in np.split(raw, 2)])
    expected[:, raw.std(0) == 0] = 0
    np.testing.assert_allclose(betas.betas, expected, atol=1e-5)
    np.testing.assert_array_equal(betas.voxel_ijk, np.argwhere(roi))
    assert betas.shape == roi.shape and betas.betas.shape == (1500, roi.sum())
    # trials: the design's images, shared ones are the test split, three repeats each
    trials = betas.trials
    ids = truth["design"]["subjectim"][1, truth["design"]["masterordering"][:1500] - 1]
    assert list(trials["stim_id"].astype(int)) == list(ids)
    assert set(trials.loc[trials["split"] == "test", "stim_id"].astype(int)) == set(truth["design"]["sharedix"])
    assert trials.groupby("stim_file").size().eq(3).all()
    assert list(trials["session"].unique()) == ["01", "02"]
    # stimuli: the subject's images, as stored in imgBrick
    import h5py
    from PIL import Image

    first = trials.iloc[0]
    with h5py.File(root / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5") as f:
        pixels = f["imgBrick"][int(first["stim_id"]) - 1]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "stimuli" / first["stim_file"])), pixels)
    assert len(list((tmp_path / "stimuli").glob("*.png"))) == 500


def test_design_reader_and_missing_files_are_named(nsd, tmp_path):
    root, truth = nsd
    design = read_expdesign(root / "nsddata/experiments/nsd/nsd_expdesign.mat")
    assert design["masterordering"].shape == (30000,) and design["subjectim"].shape == (8, 10000)
    trials = subject_trials(design, 1, 2)
    assert len(trials) == 1500 and set(trials["split"]) == {"train", "test"}
    problems = check_nsd({**NSD_DEFAULTS, "root": str(root), "subjects": [1, 3]})
    assert any("subj03" in p and "no betas_sessionNN.hdf5" in p for p in problems)
    assert len(problems) == 2  # subj03: no betas, no ROI; subj01 fine
    assert not check_nsd({**NSD_DEFAULTS, "root": str(root), "subjects": [1, 2]})
    inside = check_nsd({**NSD_DEFAULTS, "root": str(root), "subjects": [1, 2]}, results_dir=root / "results")
    assert len(inside) == 1 and "results_dir is inside nsd.root" in inside[0]
    assert not check_nsd({**NSD_DEFAULTS, "root": str(root), "subjects": [1, 2]}, results_dir=tmp_path / "out")


@pytest.mark.slow
def test_nsd_entry_runs_end_to_end(nsd, tmp_path):
    root, _ = nsd
    config = {**TINY_METHODS, "seed": 4, "nsd": {"root": str(root), "subjects": [1, 2], "image_size": 32},
              "voxels": {"select": "reliability", "n_top": 200},
              "evaluation": {"n_way": [2, 10], "n_boot": 200}}
    run_snakemake(tmp_path, config)
    metrics = pd.read_csv(tmp_path / "results" / "report" / "metrics.tsv", sep="\t", dtype={"subject": str})
    assert set(metrics["subject"]) == {"01", "02"} and set(metrics["split"]) == {"test"}
    ident = metrics[metrics["metric"] == "ident2"]
    method = ident[ident["baseline"].isna()].set_index("subject")
    mean_image = ident[ident["baseline"] == "mean_image"].set_index("subject")
    # the fixture's responses are a linear map of the images: identification above chance
    # by its CI, and above the mean-image baseline's CI (measured 0.66 and 0.63 against
    # 0.50 [0.45, 0.55])
    assert (method["ci_low"] > 0.5).all(), ident
    assert (method["mean"] > mean_image["ci_high"]).all(), ident
