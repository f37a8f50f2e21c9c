"""Multi-session datasets: runs that repeat their labels across sessions keep their own
BOLD, through light preprocessing and through fMRIPrep derivatives with ses- in their
names (issue 16)."""

import re

import numpy as np
import pandas as pd
import pytest

from datasets import (TINY_METHODS, fmriprep_derivatives, run_snakemake, signal_voxels,
                      two_session_dataset, write_image)
from fmrirecon.betas import read_betas
from fmrirecon.paths import bids_name, bids_path, run_key

pytestmark = pytest.mark.slow


def _betas(results):
    stem = results / "derivatives" / "fmrirecon" / "sub-01" / "func" / "sub-01_desc-lsa"
    return read_betas(f"{stem}_betas.h5", f"{stem}_trials.tsv")


def _check_own_session(betas, truth):
    """Each trial's beta, averaged over the signal voxels, tracks its own session's planted
    amplitude (and not the other session's trial at the same place)."""
    i, j, k = betas.voxel_ijk.T
    signal = betas.betas[:, signal_voxels()[i, j, k]].mean(1)
    trials = betas.trials.assign(signal=signal)
    assert set(trials["session"]) == {"01", "02"}
    merged = trials.merge(truth, on=["session", "task", "onset", "stim_file"], validate="one_to_one")
    assert len(merged) == len(truth) == 48
    for session, rows in merged.groupby("session"):
        r_own = np.corrcoef(rows["signal"], rows["amplitude"])[0, 1]
        other = truth[truth["session"] != session].reset_index(drop=True)
        r_other = np.corrcoef(rows.sort_values(["task", "onset"])["signal"],
                              other.sort_values(["task", "onset"])["amplitude"])[0, 1]
        assert r_own > 0.95, (session, r_own)  # measured 0.99
        assert abs(r_other) < 0.6, (session, r_other)


def _config(bids, **extra):
    return {"bids_dir": str(bids), "seed": 1, **TINY_METHODS, **extra}


def test_light_fits_each_session_on_its_own_bold(tmp_path):
    truth = two_session_dataset(tmp_path / "bids")
    results = tmp_path / "work" / "results"
    target = "results/derivatives/fmrirecon/sub-01/func/sub-01_desc-lsa_betas.h5"
    done = run_snakemake(tmp_path / "work", _config(tmp_path / "bids"), target)
    # one preprocessed file per run, named by its session
    prep = results / "derivatives" / "fmriprep" / "sub-01"
    assert sorted(p.name for p in prep.glob("ses-*/func/*_desc-preproc_bold.nii.gz")) == [
        f"sub-01_ses-{s}_task-{t}_run-01_desc-preproc_bold.nii.gz" for s in ("01", "02") for t in ("test", "train")]
    assert (results / "logs" / "preprocess_light" / "sub-01" / "ses-02" / "func"
            / "sub-01_ses-02_task-train_run-01.log").is_file()
    assert "pre-flight: train: 24 trials of 24 images in 2 runs (sub-01 24)" in done.stderr
    _check_own_session(_betas(results), truth)


def test_precomputed_derivatives_with_sessions_and_spaces(tmp_path):
    truth = two_session_dataset(tmp_path / "bids")
    fmriprep_derivatives(tmp_path / "bids", tmp_path / "fmriprep", space="MNI152NLin2009cAsym", res="2")
    config = _config(tmp_path / "bids", preprocess={
        "method": "precomputed", "derivatives_dir": str(tmp_path / "fmriprep"),
        "space": "MNI152NLin2009cAsym", "res": "2"})
    target = "results/derivatives/fmrirecon/sub-01/func/sub-01_desc-lsa_betas.h5"
    run_snakemake(tmp_path / "work", config, target)
    _check_own_session(_betas(tmp_path / "work" / "results"), truth)
    # the whole study runs on to the report
    run_snakemake(tmp_path / "work", config)
    metrics = pd.read_csv(tmp_path / "work" / "results" / "report" / "metrics.tsv", sep="\t")
    assert {"pixcorr", "ident2"} <= set(metrics["metric"])

    # rerun triggers: the images a subject saw are inputs, the folder is not
    write_image(tmp_path / "bids" / "stimuli" / "unrelated.png", seed=99)
    plan = run_snakemake(tmp_path / "work", config, "--dry-run")
    assert "Nothing to be done" in plan.stdout + plan.stderr
    write_image(tmp_path / "bids" / "stimuli" / "train_03.png", seed=98)  # edited in place
    plan = run_snakemake(tmp_path / "work", config, "--dry-run")
    jobs = set(re.findall(r"^(?:local)?rule (\w+):", plan.stdout, flags=re.M))
    assert {"decode", "reconstruct", "evaluate", "report"} <= jobs
    assert not {"glm", "select_voxels"} & jobs


def test_path_builder_orders_entities_as_bids():
    row = {"subject": "01", "session": "2", "task": "x", "acquisition": "fast", "run": "03",
           "direction": "AP", "echo": ""}
    assert run_key(row) == "sub-01_ses-2_task-x_acq-fast_dir-AP_run-03"
    path = bids_path("d", "func", "bold", ".nii.gz", **row, space="T1w", res="2", desc="preproc")
    assert path.as_posix() == ("d/sub-01/ses-2/func/sub-01_ses-2_task-x_acq-fast_dir-AP_run-03_space-T1w_res-2"
                               "_desc-preproc_bold.nii.gz")
    assert bids_name("betas", ".h5", desc="lsa", subject="{subject}") == "sub-{subject}_desc-lsa_betas.h5"
    assert bids_name("recon", ".npz", subject="{subject}", desc="{method}{split}") == \
        "sub-{subject}_desc-{method}{split}_recon.npz"
    assert bids_name("", ".log", subject="01", desc="pca") == "sub-01_desc-pca.log"
    with pytest.raises(ValueError, match="ses: label 'a_b'"):
        bids_name("bold", ses="a_b", sub="01")
    with pytest.raises(ValueError, match="unknown BIDS entity 'session_id'"):
        bids_name("bold", session_id="1")
