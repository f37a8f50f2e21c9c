"""Data quality of one subject: counts, variance explained where the signal is, warnings, figures."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from fmrirecon.betas import write_betas
from fmrirecon.glm import single_trial_betas
from fmrirecon.quality import BETAS_FIGURES, BOLD_FIGURES, subject_quality
from fmrirecon.reliability import add_reliability
from test_glm import SPLITS, dataset  # noqa: F401 - the fixture: two runs with planted signal

GLM = {"confounds": "motion6", "high_pass": 0.01, "hrf_model": "glover"}


@pytest.fixture(scope="module")
def subject(dataset, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("quality")
    runs = [dict(r) for r in dataset["runs"]]
    for k, run in enumerate(runs):
        # fMRIPrep's framewise displacement, one spike in the second run
        conf = pd.read_csv(run["confounds"], sep="\t")
        conf["framewise_displacement"] = 0.1
        if k == 1:
            conf.loc[30, "framewise_displacement"] = 1.3
        conf.to_csv(run["confounds"], sep="\t", index=False)
    betas = add_reliability(single_trial_betas(runs, SPLITS, progress=False), split="test")
    write_betas(tmp / "betas.h5", betas, tmp / "trials.tsv")
    affine = nib.load(runs[0]["mask"]).affine
    selected = (dataset["signal"] & dataset["mask"]).astype(np.uint8)
    nib.save(nib.Nifti1Image(selected, affine), tmp / "selected.nii.gz")
    return {"runs": runs, "tmp": tmp, "betas": betas}


def test_bold_quality(subject, dataset):  # noqa: F811
    tmp = subject["tmp"]
    figures = {key: tmp / f"{key}.png" for key in BOLD_FIGURES}
    summary = subject_quality(tmp / "betas.h5", tmp / "trials.tsv", tmp / "selected.nii.gz", tmp / "q.json",
                              figures, runs=subject["runs"], glm=GLM, train_tasks=["train"])
    assert json.loads((tmp / "q.json").read_text())["counts"] == summary["counts"]
    counts = summary["counts"]
    assert counts["voxels"] == dataset["mask"].sum()
    assert counts["voxels_selected"] == (dataset["signal"] & dataset["mask"]).sum()
    assert counts["splits"]["train"] == {"runs": 1, "trials": 20, "images": 20, "repeats_min": 1,
                                         "repeats_median": 1.0, "repeats_max": 1}
    assert counts["splits"]["test"]["images"] == 10 and counts["splits"]["test"]["repeats_min"] == 2
    # the single trials explain the variance where the signal was planted, not elsewhere
    r2 = summary["r2_trials"]
    assert r2["run"] == "train run 1"
    assert r2["selected"]["median"] > 0.8 and r2["all"]["median"] < r2["selected"]["median"]
    assert r2["noise_level"] == pytest.approx(20 / (80 - 10))  # 6 motion, 3 drifts, constant
    betas = subject["betas"]
    assert summary["reliability"]["selected"]["median"] > summary["reliability"]["all"]["median"]
    # motion: the spike is found and said
    assert [m["outliers"] for m in summary["motion"]] == [0, 1]
    assert any("1 of 2 runs" in w and "FD > 0.5 mm" in w for w in summary["warnings"])
    for path in figures.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(summary["figures"]) == set(BOLD_FIGURES)
    assert len(betas.trials) == 40


def test_single_trial_r2_separates_signal_from_noise_voxels(subject, dataset):  # noqa: F811
    from fmrirecon.quality import single_trial_fit

    design, r2_full, r2_trials = single_trial_fit(subject["runs"][0], GLM, subject["runs"])
    assert design.shape == (80, 20 + 6 + design.filter(like="drift").shape[1] + 1)
    in_mask = dataset["signal"][dataset["mask"]]
    assert np.median(r2_trials[in_mask]) > 0.8
    # pure noise: 20 trial regressors of the 80 - 10 volumes the nuisance leaves, ~0.29
    assert 0.15 < np.median(r2_trials[~in_mask]) < 0.4
    assert (r2_full <= 1).all() and (r2_trials >= -1e-9).all()


def test_imported_betas_get_histograms_and_nan_warnings(subject, tmp_path):
    betas = subject["betas"]
    betas.reliability[:5] = np.nan
    write_betas(tmp_path / "b.h5", betas, tmp_path / "t.tsv")
    out = {"histograms": tmp_path / "h.png"}
    summary = subject_quality(tmp_path / "b.h5", tmp_path / "t.tsv", subject["tmp"] / "selected.nii.gz",
                              tmp_path / "q.json", out)
    assert "r2_trials" not in summary and summary["motion"] == []
    assert any(w.startswith("5 of") and "NaN reliability" in w for w in summary["warnings"])
    assert set(summary["figures"]) == set(BETAS_FIGURES)
    with pytest.raises(ValueError, match="out_figures: expected keys"):
        subject_quality(tmp_path / "b.h5", tmp_path / "t.tsv", subject["tmp"] / "selected.nii.gz",
                        tmp_path / "q.json", {"brain": tmp_path / "x.png"})


def test_runs_that_repeat_their_labels_across_sessions_are_counted_apart():
    from types import SimpleNamespace

    import pandas as pd

    from fmrirecon.quality import _counts

    trials = pd.DataFrame({"split": "train", "session": ["01", "01", "02", "02"], "task": "train",
                           "run": [1, 1, 1, 1], "stim_file": ["a.png", "b.png", "c.png", "d.png"]})
    counts = _counts(SimpleNamespace(trials=trials, betas=np.zeros((4, 3))), np.ones(3, bool))
    assert counts["splits"]["train"]["runs"] == 2
    assert _counts(SimpleNamespace(trials=trials.drop(columns="session"), betas=np.zeros((4, 3))),
                   np.ones(3, bool))["splits"]["train"]["runs"] == 1
