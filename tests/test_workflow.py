"""The whole workflow, end to end, on a tiny simulated study (a few minutes)."""

import re
import shutil
import subprocess
import sys

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO
from fmrirecon.betas import read_betas
from fmrirecon.simulate import read_truth_trials

pytestmark = pytest.mark.slow

TINY = {
    "seed": 3,
    "simulate": {
        "subjects": 2, "image_size": 16, "n_train": 60, "n_train_repeated": 20, "n_test": 8,
        "test_repeats": 3, "imagery_repeats": 2, "trials_per_run": 30,
        "volume_shape": [14, 14, 10], "n_visual_voxels": 150, "noise_psc": 0.5,
    },
    "voxels": {"n_top": 120},
    "images": {"size": 16},
    "methods": {"pca": {"n_components": 12}},
    "evaluation": {"n_way": [2, 4], "n_boot": 200},
}


def snakemake(workdir, *args, config="tiny.yaml"):
    """Run snakemake on the repository's Snakefile in ``workdir``; return stdout+stderr."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
           str(workdir), "--configfile", str(workdir / config), "--cores", "2", *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("study")
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    snakemake(workdir)
    return workdir


@pytest.fixture(scope="module")
def bids_study(study):
    """A copy of the simulated data entered as a user's BIDS dataset (bids_dir)."""
    shutil.copytree(study / "results" / "simulated" / "bids", study / "user_bids")
    config = {**TINY, "bids_dir": str(study / "user_bids"), "results_dir": "bids_results"}
    (study / "bids.yaml").write_text(yaml.safe_dump(config))
    snakemake(study, config="bids.yaml")
    return study


def out(study, subject, name):
    return study / "results" / "derivatives" / "fmrirecon" / f"sub-{subject}" / name


def peak_cores(log: str) -> int:
    """The most cores Snakemake's jobs held at once, from its log (in log order: each
    job block "rule <name>:" with its "threads:" claims them, "Finished jobid: <n>"
    gives them back)."""
    lines = log.splitlines()
    held, running, peak = {}, 0, 0
    for i, line in enumerate(lines):
        if re.fullmatch(r"(local)?rule \w+:", line):
            fields = {}
            for follow in lines[i + 1:]:
                if not follow.startswith("    "):
                    break
                key, _, value = follow.strip().partition(": ")
                fields[key] = value
            held[int(fields["jobid"])] = int(fields.get("threads", 1))
            running += held[int(fields["jobid"])]
            peak = max(peak, running)
        elif finished := re.match(r"Finished jobid: (\d+)", line):
            running -= held.pop(int(finished[1]))
    return peak


def test_cores_are_never_oversubscribed(study):
    """--cores 2 holds: never more than 2 cores' worth of jobs at once (Snakemake 9.10
    and later broke this, snakemake/snakemake#3913: 5 at once on this study)."""
    first_run = sorted((study / ".snakemake" / "log").glob("*.snakemake.log"))[0].read_text()
    assert "Finished jobid" in first_run and "threads: 2" in first_run
    assert peak_cores(first_run) == 2


def test_lint_is_clean():
    done = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_report_covers_every_subject_method_and_split(study):
    html = (study / "results" / "report" / "index.html").read_text()
    assert "data:image/png;base64" in html
    metrics = pd.read_csv(study / "results" / "report" / "metrics.tsv", sep="\t",
                          dtype={"subject": str})
    assert set(metrics.subject) == {"01", "02"}
    assert set(metrics.split) == {"test", "imagery"}
    assert set(metrics.metric) >= {"pixcorr", "ssim", "ident2", "nway"}
    # every stage's wall time and peak memory, from the jobs' benchmark files
    assert "Compute resources per stage" in html
    for rule in ("simulate_subject", "glm", "decode", "reconstruct", "evaluate"):
        assert f"<td>{rule}</td>" in html
    for folder in ("fmrirecon", "fmriprep"):  # fmriprep: light preprocessing's layout
        description = study / "results" / "derivatives" / folder / "dataset_description.json"
        assert '"DatasetType": "derivative"' in description.read_text()


@pytest.mark.parametrize("subject", ["01", "02"])
def test_glm_recovers_the_simulated_trial_responses(study, subject):
    betas = read_betas(out(study, subject, f"func/sub-{subject}_desc-lsa_betas.h5"),
                       out(study, subject, f"func/sub-{subject}_desc-lsa_trials.tsv"))
    truth_path = study / "results" / "simulated" / "truth" / f"sub-{subject}_truth.h5"
    truth_trials = read_truth_trials(truth_path)
    with h5py.File(truth_path) as f:
        truth_ijk, visual, response = f["voxel_ijk"][()], f["is_visual"][()], f["trial_response"][()]
    # match trials by (task, run, onset) and voxels by their grid indices
    key = lambda t: list(zip(t.task, t.run.astype(int), t.onset.round(3)))  # noqa: E731
    row_of = {k: i for i, k in enumerate(key(truth_trials))}
    rows = [row_of[k] for k in key(betas.trials)]
    col_of = {tuple(v): i for i, v in enumerate(truth_ijk)}
    cols = np.array([col_of[tuple(v)] for v in betas.voxel_ijk])
    r = np.array([np.corrcoef(betas.betas[:, j], response[rows, c])[0, 1]
                  for j, c in enumerate(cols) if visual[c]])
    assert len(r) > 50
    assert np.median(r) > 0.5  # chance 0; measured 0.68
    # reliability singles out the voxels that carry signal
    assert np.nanmedian(betas.reliability[visual[cols]]) > np.nanmedian(betas.reliability[~visual[cols]]) + 0.3


def test_bids_entry_indexes_once_and_gives_the_same_numbers(bids_study):
    manifest = pd.read_csv(bids_study / "bids_results" / "manifest.tsv", sep="\t", dtype=str)
    assert set(manifest.subject) == {"01", "02"} and set(manifest.task) == {"train", "test", "imagery"}
    simulated = (bids_study / "results" / "report" / "metrics.tsv").read_text()
    assert (bids_study / "bids_results" / "report" / "metrics.tsv").read_text() == simulated


def test_changing_one_subject_reruns_only_its_chain_and_the_aggregate(bids_study):
    # new data for one run of sub-02 (touching is not enough: snakemake compares checksums)
    bold = next((bids_study / "user_bids" / "sub-02" / "func").glob("*_bold.nii.gz"))
    img = nib.load(bold)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj) * 1.01, img.affine, img.header), bold)
    plan = snakemake(bids_study, "--dry-run", config="bids.yaml")
    subjects = set(re.findall(r"wildcards: .*subject=(\w+)", plan))
    assert subjects == {"02"}
    jobs = set(re.findall(r"^(?:local)?rule (\w+):", plan, flags=re.M))
    assert {"preprocess_light", "glm", "decode", "reconstruct", "evaluate", "report"} <= jobs
    assert "bold_reference" not in jobs or "subject=01" not in plan


def test_same_config_gives_the_same_numbers(study):
    metrics = study / "results" / "report" / "metrics.tsv"
    before = metrics.read_text()
    snakemake(study, "--forcerun", "glm")
    assert metrics.read_text() == before


def test_changing_a_method_setting_refits_that_method(study):
    # A method's settings reach its rule through params computed from the wildcards,
    # which Snakemake's params rerun trigger tracks (not so for params of the input).
    changed = {**TINY, "methods": {"pca": {"n_components": 11}}}
    (study / "changed.yaml").write_text(yaml.safe_dump(changed))
    plan = snakemake(study, "--dry-run", config="changed.yaml")
    jobs = set(re.findall(r"^(?:local)?rule (\w+):", plan, flags=re.M))
    assert {"decode", "reconstruct", "evaluate", "report"} <= jobs
    assert not {"simulate_subject", "glm", "select_voxels"} & jobs
    assert "Params have changed" in plan


def test_changing_the_simulated_noise_keeps_the_stimuli(study):
    # The stimuli (and any network trained on them) depend on the stimulus settings only.
    changed = {**TINY, "simulate": {**TINY["simulate"], "noise_psc": 0.7}}
    (study / "noisier.yaml").write_text(yaml.safe_dump(changed))
    plan = snakemake(study, "--dry-run", config="noisier.yaml")
    jobs = set(re.findall(r"^(?:local)?rule (\w+):", plan, flags=re.M))
    assert {"simulate_dataset", "simulate_subject", "glm", "report"} <= jobs
    assert "simulate_stimuli" not in jobs
