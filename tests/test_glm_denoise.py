"""The ``denoised`` GLM: HRF choice, number of noise components, fractional ridge, I/O."""

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from fmrirecon.fracridge import DEFAULT_FRACTIONS, fracridge
from fmrirecon.glm_denoise import (STEPS, _nuisance, denoise_maps, fit_denoised, reliability_by_step,
                                   step_reliability, write_denoise)
from fmrirecon.hrf_library import GLOVER_PEAK, _stretched, canonical_hrf, hrf_library, trial_regressors

TR = 2.0


def _synth(seed=0, k=3, n_runs=6, n_scans=130, n_cond=40, reps=3, n_sig=150, n_noise=350,
           shared_sd=1.5, peaks=None):
    """Runs with per-voxel HRFs (stretched Glover, peak ``peaks``), ``k`` shared noise
    components loaded on every voxel, AR(1) noise and drift."""
    rng = np.random.default_rng(seed)
    n_vox = n_sig + n_noise
    order = np.concatenate([rng.permutation(n_cond) for _ in range(reps)])
    per_run = len(order) // n_runs
    peaks = np.round(rng.uniform(4, 7, n_sig), 1) if peaks is None else peaks
    response = rng.normal(1.0, 1.0, (n_cond, n_sig))
    loadings = rng.normal(size=(k, n_vox))
    frame_times = np.arange(n_scans) * TR
    data, designs, conditions = [], [], []
    for r in range(n_runs):
        cond = order[r * per_run:(r + 1) * per_run]
        onsets = 8 + 9.0 * np.arange(len(cond)) + rng.uniform(0, 2, len(cond))
        durations = np.full(len(cond), 3.0)
        Y = np.zeros((n_scans, n_vox))
        for p in np.unique(peaks):
            cols = np.flatnonzero(peaks == p)
            Y[:, cols] = trial_regressors(_stretched(p), onsets, durations, frame_times) @ response[cond][:, cols]
        Y += shared_sd * rng.normal(size=(n_scans, k)) @ loadings
        e = rng.normal(size=(n_scans, n_vox))
        for t in range(1, n_scans):
            e[t] = 0.3 * e[t - 1] + np.sqrt(1 - 0.09) * e[t]
        Y += e + np.cos(np.pi * frame_times[:, None] / frame_times[-1]) * rng.normal(0, 2, n_vox)
        data.append(Y.astype(np.float32))
        designs.append({"onsets": onsets, "durations": durations, "frame_times": frame_times,
                        "nuisance": _nuisance(frame_times, 0.01, None)})
        conditions += [f"stim{c}" for c in cond]
    return data, designs, conditions, peaks


def test_hrf_library():
    hrfs, peaks = hrf_library(20, (4.0, 7.0))
    assert hrfs.shape[0] == 20 and np.allclose(hrfs.max(axis=1), 1)
    t = np.arange(hrfs.shape[1]) * 0.05
    np.testing.assert_allclose(t[hrfs.argmax(axis=1)], peaks, atol=0.06)
    assert 4.9 < GLOVER_PEAK < 5.2 and canonical_hrf().max() == 1
    X = trial_regressors(hrfs[0], [10.0, 30.0], [3.0, 3.0], np.arange(40) * 0.5)
    assert X.shape == (40, 2) and X.max() <= 1 and X.max() > 0.95


def test_fracridge_matches_ridge_and_fractions():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 12))
    X[:, 1] = X[:, 0] + 0.01 * rng.normal(size=60)      # ill-conditioned, where ridge matters
    Y = rng.normal(size=(60, 5))
    coefs, alphas = fracridge(X, Y, DEFAULT_FRACTIONS)
    ols = np.linalg.lstsq(X, Y, rcond=None)[0]
    np.testing.assert_allclose(coefs[0], ols, atol=1e-8)          # fraction 1 is OLS
    ratio = np.linalg.norm(coefs, axis=1) / np.linalg.norm(ols, axis=0)
    np.testing.assert_allclose(ratio, np.array(DEFAULT_FRACTIONS)[:, None] * np.ones(5), atol=1e-6)
    i, v = 7, 3
    direct = np.linalg.solve(X.T @ X + alphas[i, v] * np.eye(12), X.T @ Y[:, v])
    np.testing.assert_allclose(coefs[i, :, v], direct, atol=1e-8)
    with pytest.raises(ValueError, match="fractions"):
        fracridge(X, Y, [0.0, 0.5])


def test_chosen_hrf_tracks_true_hrf():
    data, designs, conditions, peaks = _synth(seed=1, k=0)
    fit = fit_denoised(data, designs, conditions, max_pcs=0)
    assert np.corrcoef(fit.hrf_peaks[fit.hrf_index[: len(peaks)]], peaks)[0, 1] > 0.9
    fit = fit_denoised(data, designs, conditions, max_pcs=0, hrf_fit="trials")
    chosen = fit.hrf_peaks[fit.hrf_index[: len(peaks)]]
    assert np.corrcoef(chosen, peaks)[0, 1] > 0.9
    assert np.median(np.abs(chosen - peaks)) < 0.3


@pytest.mark.parametrize("k", [2, 4])
def test_number_of_noise_components_close_to_planted(k):
    data, designs, conditions, _ = _synth(seed=k, k=k)
    fit = fit_denoised(data, designs, conditions, max_pcs=8, fractions=[1.0])
    assert abs(fit.n_pcs - k) <= 1, fit.pc_scores
    # the pool is mostly noise voxels, the responsive (scoring) voxels all signal
    assert fit.noise_pool[150:].mean() > 0.7 and fit.noise_pool[:150].sum() < 0.2 * fit.noise_pool.sum()
    assert fit.good_voxels.sum() >= 50 and not fit.good_voxels[150:].any()


def test_noise_pool_stays_non_responsive_when_most_voxels_respond():
    # 600 responsive voxels of 1000, as in a visual ROI: a noise level centred on the
    # median on-off R2 sits inside the responsive group
    data, designs, conditions, _ = _synth(seed=3, k=3, n_sig=600, n_noise=400, shared_sd=0.5)
    fits = {mode: fit_denoised(data, designs, conditions, max_pcs=8, fractions=[1.0], noise_pool=mode)
            for mode in ("mixture", "median")}
    share = {mode: fit.noise_pool[600:].sum() / fit.noise_pool.sum() for mode, fit in fits.items()}
    assert share["mixture"] > 0.88 and share["median"] < 0.7, share
    # the components are scored on responsive voxels, more than the 50-voxel fallback
    good = fits["mixture"].good_voxels
    assert good.sum() > 100 and not good[600:].any()
    assert abs(fits["mixture"].n_pcs - 3) <= 1


def test_ridge_fractions_are_scored_against_held_out_unregularised_betas():
    from fmrirecon.denoise_algebra import _CrossValidation

    xval = _CrossValidation(["a", "a", "b", "b"], [0, 1, 0, 1])
    ridge = np.array([[1.0], [1.0], [-1.0], [-1.0]])
    ols = np.array([[2.0], [2.0], [-2.0], [-2.0]])
    assert xval.r2(ridge)[0] == pytest.approx(100.0)      # shrunk on both sides: perfect
    assert xval.r2(ridge, ols)[0] == pytest.approx(75.0)  # against the unshrunk betas
    data, designs, conditions, _ = _synth(seed=5, k=3)
    fits = {m: fit_denoised(data, designs, conditions, ridge_xval=m) for m in ("ols", "ridge")}
    assert not np.array_equal(fits["ols"].fraction, fits["ridge"].fraction)


def test_polynomial_drift_has_glmsingles_degree():
    from fmrirecon.glm_denoise import polynomial_degree

    frame_times = np.arange(300) * 2.0          # 10 minutes: degree 5
    assert polynomial_degree(frame_times) == 5
    X = _nuisance(frame_times, 0.01, None, "polynomial")
    assert X.shape == (300, 6)                  # 5 drifts + constant
    with pytest.raises(ValueError, match="drift_model"):
        _nuisance(frame_times, 0.01, None, "spline")


def test_steps_improve_reliability_and_outputs(tmp_path):
    from fmrirecon.betas import Betas, write_betas
    from fmrirecon.reliability import split_half_reliability

    data, designs, conditions, _ = _synth(seed=5, k=3)
    fit = fit_denoised(data, designs, conditions, keep_steps=True, chunk_size=128)
    n_sig = 150
    rel = {s: np.median(split_half_reliability(fit.step_betas[s][:, :n_sig], conditions)) for s in STEPS}
    assert rel["+denoise"] > rel["lsa"] + 0.1 and rel["+ridge"] >= rel["+denoise"] - 0.02
    np.testing.assert_array_equal(fit.step_betas["+ridge"], fit.betas)
    assert fit.betas.dtype == np.float32 and np.isfinite(fit.betas).all()
    assert ((fit.fraction > 0) & (fit.fraction <= 1)).all()
    assert np.median(fit.r2[:n_sig]) > np.median(fit.r2[n_sig:])
    # chunking does not change the result (deterministic)
    again = fit_denoised(data, designs, conditions, chunk_size=10000)
    np.testing.assert_allclose(again.betas, fit.betas, rtol=1e-5, atol=1e-5)

    # on-disk outputs: maps, step reliabilities, report table and figure
    n_vox = fit.betas.shape[1]
    shape = (10, 10, 5)
    ijk = np.argwhere(np.ones(shape, bool))[:n_vox]
    trials = pd.DataFrame({"trial": np.arange(len(conditions)), "task": "test", "run": 1, "onset": 0.0,
                           "duration": 3.0, "stim_file": conditions, "split": "test", "repetition": 1})
    betas = Betas(fit.betas, trials, ijk, np.eye(4), shape)
    maps = denoise_maps(fit, betas)
    assert set(maps) == {"hrf", "r2", "npcs", "fraction", "noisepool"}
    hrf = np.asarray(maps["hrf"].dataobj)
    assert hrf.shape == shape and hrf[tuple(ijk[0])] == fit.hrf_index[0] + 1
    assert np.asarray(maps["noisepool"].dataobj).sum() == fit.noise_pool.sum()
    path = tmp_path / "b.h5"
    write_betas(path, betas, tmp_path / "t.tsv")
    write_denoise(path, fit, step_reliability(fit, trials), "test")
    with h5py.File(path) as f:
        assert f["denoise/step_reliability"].shape == (4, n_vox)
    table, figure = reliability_by_step({"01": path})
    assert list(table["step"]) == list(STEPS)
    assert table.set_index("step").loc["+ridge", "gain"] > 1.2
    figure.savefig(tmp_path / "f.png")
    with pytest.raises(ValueError, match="step_reliability"):
        bad = tmp_path / "lsa.h5"
        write_betas(bad, betas, tmp_path / "t.tsv")
        reliability_by_step({"01": bad})


def test_bad_inputs():
    data, designs, conditions, _ = _synth(seed=0, k=0, n_runs=2, n_scans=60, n_cond=8, reps=2,
                                          n_sig=5, n_noise=20)
    with pytest.raises(ValueError, match="hrf_fit"):
        fit_denoised(data, designs, conditions, hrf_fit="best")
    with pytest.raises(ValueError, match="conditions"):
        fit_denoised(data, designs, conditions[:-1])


def test_denoised_from_files_and_stage(tmp_path):
    """The file route: glm.single_trial_betas(method="denoised") and the glm stage."""
    from snakemake.utils import validate

    from conftest import REPO
    from fmrirecon import stages
    from fmrirecon.betas import read_betas
    from fmrirecon.glm import single_trial_betas

    data, designs, conditions, _ = _synth(seed=3, k=2, n_runs=4, n_cond=20, reps=2)
    shape = (10, 10, 5)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    mask = np.ones(shape, dtype=np.uint8)
    runs, start = [], 0
    for r, (Y, d) in enumerate(zip(data, designs)):
        bold = 1000.0 * (1 + Y / 100.0)             # data are percent signal change of 1000
        img = nib.Nifti1Image(bold.T.reshape(shape + (len(Y),)).astype(np.float32), affine)
        img.header.set_zooms((3.0, 3.0, 3.0, TR))
        img.to_filename(tmp_path / f"bold{r}.nii.gz")
        nib.Nifti1Image(mask, affine).to_filename(tmp_path / "mask.nii.gz")
        n = len(d["onsets"])
        task = "train" if r < 2 else "test"
        pd.DataFrame({"onset": d["onsets"], "duration": d["durations"], "trial_type": "image",
                      "stim_file": conditions[start:start + n]}).to_csv(tmp_path / f"ev{r}.tsv", sep="\t", index=False)
        start += n
        runs.append({"bold": tmp_path / f"bold{r}.nii.gz", "mask": tmp_path / "mask.nii.gz", "confounds": None,
                     "events": tmp_path / f"ev{r}.tsv", "task": task, "run": r + 1, "tr": TR})
    splits = {"train": ["train"], "test": ["test"]}
    betas = single_trial_betas(runs, splits, method="denoised", confounds="none", progress=False,
                               denoise={"max_pcs": 4})
    assert betas.betas.shape == (len(conditions), 500) and betas.attrs["glm_method"] == "denoised"
    assert list(betas.trials["split"].unique()) == ["train", "test"]

    config = {"glm": {"method": "denoised", "confounds": "none", "max_pcs": 4}}
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))  # the defaults
    outs = {k: tmp_path / f"sub-01_desc-denoised{v}" for k, v in stages.DENOISED_MAPS.items()}
    stages.glm(runs, splits, config["glm"], tmp_path / "b.h5", tmp_path / "t.tsv",
               tmp_path / "rel.nii.gz", outs)
    written = read_betas(tmp_path / "b.h5", tmp_path / "t.tsv")
    np.testing.assert_allclose(written.betas, betas.betas, rtol=1e-5, atol=1e-5)
    assert written.reliability is not None
    assert all(p.exists() for p in outs.values())
    with pytest.raises(ValueError, match="events file not found"):
        single_trial_betas([dict(runs[0], events=tmp_path / "nope.tsv")], splits, method="denoised",
                           confounds="none", progress=False)


def test_simulator_hrf_variability_and_shared_noise(tmp_path):
    from fmrirecon.simulate import simulate_subject, study_plan, write_stimuli

    cfg = {"subjects": 1, "n_train": 20, "n_train_repeated": 4, "n_test": 5, "test_repeats": 2,
           "trials_per_run": 20, "volume_shape": [12, 14, 10], "n_visual_voxels": 60,
           "hrf_peak_range": [4.0, 7.0], "shared_noise_components": 2, "shared_noise_psc": 1.0}
    write_stimuli(cfg, tmp_path / "bids")
    simulate_subject(cfg, tmp_path / "bids", "01", tmp_path / "truth.h5")
    with h5py.File(tmp_path / "truth.h5") as f:
        peak, n_brain = f["hrf_peak"][()], len(f["voxel_ijk"])
        assert peak.shape == (n_brain,) and peak.min() >= 4.0 and peak.max() <= 7.0 and peak.std() > 0.5
        assert f["shared_loadings"].shape == (2, n_brain)
    with pytest.raises(ValueError, match="hrf_peak_range"):
        study_plan(dict(cfg, hrf_peak_range=[7.0, 4.0]))
