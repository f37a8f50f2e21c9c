"""Reliability, noise ceiling and voxel selection on synthetic betas."""

import logging

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from fmrirecon.betas import TRIAL_COLUMNS, Betas
from fmrirecon.reliability import (
    add_reliability,
    noise_ceiling,
    reliability_map,
    split_half_reliability,
)
from fmrirecon.voxels import select_voxels

SHAPE = (5, 4, 3)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
N_SIGNAL, N_NOISE = 10, 10


def _repeated(rng, n_stim, n_rep, signal_sd=1.0, noise_sd=0.3):
    """Betas (n_stim * n_rep, 20): the first 10 voxels carry a stimulus effect."""
    effect = rng.normal(0, signal_sd, (n_stim, N_SIGNAL + N_NOISE))
    effect[:, N_SIGNAL:] = 0
    stims = np.tile([f"s{i:02d}.png" for i in range(n_stim)], n_rep)  # repeats in blocks
    betas = effect[np.tile(np.arange(n_stim), n_rep)] + rng.normal(0, noise_sd, (len(stims), effect.shape[1]))
    return betas, stims


def _betas(train_reps=1, seed=0):
    rng = np.random.default_rng(seed)
    train, train_stims = _repeated(rng, 40, train_reps)
    test, test_stims = _repeated(rng, 12, 3)
    trials = pd.DataFrame({
        "task": ["train"] * len(train) + ["test"] * len(test),
        "run": 1,
        "onset": np.arange(len(train) + len(test)) * 4.0,
        "duration": 1.0,
        "stim_file": np.concatenate([train_stims, test_stims]),
        "split": ["train"] * len(train) + ["test"] * len(test),
    })
    trials["trial"] = np.arange(len(trials))
    trials["repetition"] = trials.groupby(["split", "stim_file"]).cumcount() + 1
    ijk = np.argwhere(np.ones(SHAPE, dtype=bool))[: N_SIGNAL + N_NOISE]
    return Betas(np.vstack([train, test]).astype(np.float32), trials[TRIAL_COLUMNS], ijk,
                 AFFINE, SHAPE, attrs={"glm_method": "lsa"})


def test_split_half_reliability():
    rng = np.random.default_rng(3)
    betas, stims = _repeated(rng, 100, 4)
    reliability = split_half_reliability(betas, stims)
    assert reliability.shape == (N_SIGNAL + N_NOISE,)
    # expected: var_s / (var_s + var_n / 4) = 0.98 for signal voxels, 0 for noise ones
    assert (reliability[:N_SIGNAL] > 0.95).all()
    # Spearman-Brown stretches negative r, so check noise voxels on the raw half correlation
    raw = reliability[N_SIGNAL:] / (2 - reliability[N_SIGNAL:])
    assert abs(raw.mean()) < 0.1 and np.abs(raw).max() < 0.35
    # order of rows does not matter beyond the per-stimulus presentation order
    perm = rng.permutation(len(stims))
    shuffled = split_half_reliability(betas[perm], stims[perm])
    assert (shuffled[:N_SIGNAL] > 0.9).all()


def test_split_half_by_hand():
    rng = np.random.default_rng(4)
    betas, stims = _repeated(rng, 6, 3)
    # odd = mean of repeats 1 and 3, even = repeat 2, stimuli in first-seen order
    odd = (betas[:6] + betas[12:]) / 2
    even = betas[6:12]
    r = np.array([np.corrcoef(odd[:, v], even[:, v])[0, 1] for v in range(betas.shape[1])])
    np.testing.assert_allclose(split_half_reliability(betas, stims), 2 * r / (1 + r), rtol=1e-10)


def test_reliability_needs_three_repeated_stimuli():
    betas = np.random.default_rng(0).normal(size=(6, 4))
    stims = ["a", "a", "b", "b", "c", "d"]
    assert np.isnan(split_half_reliability(betas, stims)).all()
    assert np.isnan(noise_ceiling(betas[4:], ["c", "d"], 1)).all()


def test_noise_ceiling_by_hand():
    rng = np.random.default_rng(5)
    betas, stims = _repeated(rng, 30, 3)
    betas = np.vstack([betas, rng.normal(0, 0.3, (2, betas.shape[1]))])  # two unrepeated trials
    stims = np.concatenate([stims, ["x.png", "y.png"]])
    result = noise_ceiling(betas, stims, n_average=3)

    expected = np.empty(betas.shape[1])
    for v in range(betas.shape[1]):
        z = (betas[:, v] - betas[:, v].mean()) / betas[:, v].std()
        variances = [np.var(z[stims == s], ddof=1) for s in np.unique(stims) if (stims == s).sum() > 1]
        noise_var = np.mean(variances)
        signal_var = max(0.0, 1.0 - noise_var)
        ncsnr2 = signal_var / noise_var
        expected[v] = 100 * ncsnr2 / (ncsnr2 + 1 / 3)
    np.testing.assert_allclose(result, expected, rtol=1e-10)
    assert (result[:N_SIGNAL] > 80).all()
    assert result[N_SIGNAL:].mean() < 20
    # more averaging, higher ceiling
    assert (noise_ceiling(betas, stims, 6)[:N_SIGNAL] > result[:N_SIGNAL]).all()


def test_add_reliability_uses_requested_split():
    betas = _betas(train_reps=2)
    out = add_reliability(betas, split="train")
    assert out.attrs["reliability_split"] == "train"
    assert out.attrs["glm_method"] == "lsa"
    assert betas.reliability is None  # input untouched
    train = betas.select("train")
    np.testing.assert_allclose(
        out.reliability, split_half_reliability(train.betas, train.trials["stim_file"]), rtol=1e-6)
    test = betas.select("test")
    np.testing.assert_allclose(
        out.noise_ceiling, noise_ceiling(test.betas, test.trials["stim_file"], 3), rtol=1e-5)
    assert out.attrs["noise_ceiling_n_average"] == 3


def test_add_reliability_falls_back_to_test(caplog):
    betas = _betas(train_reps=1)
    with caplog.at_level(logging.WARNING):
        out = add_reliability(betas, split="train")
    assert "test split" in caplog.text
    assert out.attrs["reliability_split"] == "test"
    test = betas.select("test")
    np.testing.assert_allclose(
        out.reliability, split_half_reliability(test.betas, test.trials["stim_file"]), rtol=1e-6)
    assert (out.reliability[:N_SIGNAL] > 0.7).all()
    everything = add_reliability(betas, split="all")
    assert everything.attrs["reliability_split"] == "all"
    with pytest.raises(ValueError, match="split"):
        add_reliability(betas, split="imagery")


def test_reliability_map():
    out = add_reliability(_betas(train_reps=2))
    img = reliability_map(out)
    data = img.get_fdata()
    assert img.shape == SHAPE
    np.testing.assert_allclose(img.affine, AFFINE)
    i, j, k = out.voxel_ijk.T
    np.testing.assert_allclose(data[i, j, k], out.reliability, rtol=1e-6)
    assert np.isnan(data).sum() == np.prod(SHAPE) - len(out.voxel_ijk)
    with pytest.raises(ValueError, match="add_reliability"):
        reliability_map(_betas())


def test_select_voxels_by_reliability():
    betas = add_reliability(_betas(train_reps=2))
    signal = np.arange(N_SIGNAL + N_NOISE) < N_SIGNAL
    assert select_voxels(betas).all()
    np.testing.assert_array_equal(select_voxels(betas, "reliability", n_top=N_SIGNAL), signal)
    np.testing.assert_array_equal(select_voxels(betas, "reliability", min_reliability=0.5), signal)
    both = select_voxels(betas, "reliability", n_top=3, min_reliability=0.5)
    assert both.sum() == 3 and both[:N_SIGNAL].sum() == 3
    with pytest.raises(ValueError, match="empty"):
        select_voxels(betas, "reliability", min_reliability=1.5)
    with pytest.raises(ValueError, match="n_top"):
        select_voxels(betas, "reliability")


def test_select_voxels_by_mask_and_atlas(tmp_path):
    betas = _betas()
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[0] = 1  # voxels with i == 0: the first 12 of the C-ordered grid
    mask_path = tmp_path / "mask.nii.gz"
    nib.Nifti1Image(mask, AFFINE).to_filename(mask_path)
    np.testing.assert_array_equal(select_voxels(betas, "mask", mask_img=mask_path),
                                  betas.voxel_ijk[:, 0] == 0)

    atlas = np.zeros(SHAPE, dtype=np.int16)
    atlas[1] = 7  # the last 8 voxels of the betas
    atlas[0, :2] = 9  # 6 voxels
    atlas_img = nib.Nifti1Image(atlas, AFFINE)
    selected = select_voxels(betas, "atlas", atlas_img=atlas_img, atlas_labels=[9])
    np.testing.assert_array_equal(selected, (betas.voxel_ijk[:, 0] == 0) & (betas.voxel_ijk[:, 1] < 2))
    assert select_voxels(betas, "atlas", atlas_img=atlas_img, atlas_labels=[7, 9]).sum() == 14

    shifted = tmp_path / "shifted_mask.nii.gz"
    other_affine = AFFINE.copy()
    other_affine[0, 3] = 1.0
    nib.Nifti1Image(mask, other_affine).to_filename(shifted)
    with pytest.raises(ValueError, match="shifted_mask.nii.gz"):
        select_voxels(betas, "mask", mask_img=shifted)
    with pytest.raises(ValueError, match="empty"):
        select_voxels(betas, "atlas", atlas_img=atlas_img, atlas_labels=[3])
    with pytest.raises(ValueError, match="method"):
        select_voxels(betas, "roi")
