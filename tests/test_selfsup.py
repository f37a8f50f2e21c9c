"""Self-supervised encoder-decoder reconstruction: encoder, cycles, checkpoints, I/O."""

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import linear_voxels, smooth_images
from fmrirecon.methods import get_method
from fmrirecon.methods.selfsup import (CHECKPOINT_NAME, HISTORY_NAME, ImageLoss,
                                       SelfSupervisedReconstruction, build_decoder, snr_weights,
                                       voxel_loss)

SIZE = 16
TINY = dict(width=4, batch_size=16, progress=False, perceptual_weight=0.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    images = smooth_images(260, size=SIZE)
    clean = linear_voxels(images, n_voxels=40, noise=0.0)
    noisy = linear_voxels(images, n_voxels=40, noise=0.7)
    return images, clean, noisy


def test_encoder_recovers_ground_truth_better_than_the_mean(data):
    images, clean, noisy = data
    train, test = slice(0, 200), slice(200, 260)
    model = SelfSupervisedReconstruction(seed=0, encoder_epochs=15, decoder_epochs=0,
                                         **TINY).fit(noisy[train], images[train])
    pred = model.predict_betas(images[test])
    mse_model = np.mean((pred - clean[test]) ** 2)
    mse_mean = np.mean((noisy[train].mean(0) - clean[test]) ** 2)
    assert mse_model < 0.6 * mse_mean
    r = [np.corrcoef(pred[:, v], clean[test][:, v])[0, 1] for v in range(clean.shape[1])]
    assert np.median(r) > 0.5


def _fixed_batch_step(loss_fn, params, steps=1):
    """Loss on a fixed batch before and after ``steps`` optimizer steps on that loss."""
    opt = torch.optim.Adam(params, lr=1e-3)
    before = loss_fn().item()
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    return before, loss_fn().item()


def test_one_step_of_each_cycle_reduces_its_own_loss(data):
    from fmrirecon.features import FeatureExtractor

    images, _, noisy = data
    model = SelfSupervisedReconstruction(seed=0, encoder_epochs=2, decoder_epochs=0,
                                         **TINY).fit(noisy[:100], images[:100])
    encoder = model.encoder_.eval().requires_grad_(False)
    weights = torch.from_numpy(model.voxel_weights_)
    extractor = FeatureExtractor("smallconv", layers=["relu1", "relu2"], seed=0)
    image_loss = ImageLoss(extractor, pixel=1.0, perceptual=0.5, tv=0.05)
    xu = torch.from_numpy(images[150:166].transpose(0, 3, 1, 2).copy())
    zu = torch.from_numpy(model._standardise(noisy[200:216]))

    torch.manual_seed(0)
    decoder = build_decoder(SIZE, 1, noisy.shape[1], 4)
    before, after = _fixed_batch_step(lambda: image_loss(decoder(encoder(xu)), xu),
                                      decoder.parameters())
    assert after < before  # image cycle: x -> E -> D -> x

    torch.manual_seed(0)
    decoder = build_decoder(SIZE, 1, noisy.shape[1], 4)
    before, after = _fixed_batch_step(lambda: voxel_loss(encoder(decoder(zu)), zu, weights),
                                      decoder.parameters())
    assert after < before  # fMRI cycle: r -> D -> E -> r


def test_ablation_trains_both_decoders_and_roundtrips(tmp_path, data):
    images, _, noisy = data
    model = get_method("selfsup")(seed=3, encoder_epochs=2, decoder_epochs=2, ablation=True,
                                  **TINY)
    model.fit(noisy[:64], images[:64], unpaired_betas=noisy[200:], unpaired_images=images[64:128])
    assert model.variants == ["cycles", "pairs"]
    cyc, pairs = model.reconstruct(noisy[200:]), model.reconstruct(noisy[200:], variant="pairs")
    assert cyc.shape == (60, SIZE, SIZE, 1) and cyc.min() >= 0 and cyc.max() <= 1
    assert not np.allclose(cyc, pairs)
    assert model.decode(noisy[200:]).shape[0] == 60
    hist = model.history_
    assert {"image_cycle", "fmri_cycle", "pairs", "loss"} <= set(hist.columns)
    assert len(hist[(hist.phase == "decoder") & (hist.variant == "pairs")]) == 2
    assert hist.loc[hist.variant == "pairs", "image_cycle"].isna().all()
    model.write_history(tmp_path / "h.tsv")
    assert len(pd.read_csv(tmp_path / "h.tsv", sep="\t")) == len(hist)

    model.save(tmp_path / "m.pkl")
    loaded = get_method("selfsup").load(tmp_path / "m.pkl")
    np.testing.assert_array_equal(loaded.reconstruct(noisy[200:]), cyc)
    with pytest.raises(ValueError, match="40 voxels"):
        loaded.reconstruct(noisy[200:, :5])


def test_pairs_only_model_has_no_cycle_decoder(data):
    images, _, noisy = data
    model = SelfSupervisedReconstruction(seed=0, encoder_epochs=1, decoder_epochs=1,
                                         cycles=False, **TINY)
    model.fit(noisy[:32], images[:32], unpaired_betas=noisy[200:])
    assert model.variants == ["pairs"]
    assert set(model.history_.variant) == {"pairs"}
    with pytest.raises(ValueError, match="no 'cycles' decoder"):
        model.reconstruct(noisy[:2], variant="cycles")


def test_resume_from_checkpoint_reproduces_an_uninterrupted_run(tmp_path, data, monkeypatch):
    images, _, noisy = data
    kw = dict(seed=1, encoder_epochs=3, decoder_epochs=4, checkpoint_every=2,
              **{**TINY, "perceptual_weight": 0.5, "perceptual_layers": ["relu1"]})
    args = (noisy[:48], images[:48])
    extra = dict(unpaired_betas=noisy[200:], unpaired_images=images[100:148])
    full = SelfSupervisedReconstruction(checkpoint_dir=str(tmp_path / "a"), **kw).fit(*args, **extra)

    calls = {"n": 0}
    original = SelfSupervisedReconstruction._decoder_epoch

    def crash_on_third(self, *a):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # killed after the checkpoint of decoder epoch 2
        return original(self, *a)

    monkeypatch.setattr(SelfSupervisedReconstruction, "_decoder_epoch", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        SelfSupervisedReconstruction(checkpoint_dir=str(tmp_path / "b"), **kw).fit(*args, **extra)
    assert (tmp_path / "b" / CHECKPOINT_NAME).exists()
    monkeypatch.setattr(SelfSupervisedReconstruction, "_decoder_epoch", original)
    torch.manual_seed(123)  # a resumed run must not depend on the global random state
    resumed = SelfSupervisedReconstruction(checkpoint_dir=str(tmp_path / "b"), **kw).fit(*args, **extra)

    np.testing.assert_array_equal(resumed.reconstruct(noisy[200:]), full.reconstruct(noisy[200:]))
    pd.testing.assert_frame_equal(resumed.history_, full.history_)
    assert len(pd.read_csv(tmp_path / "b" / HISTORY_NAME, sep="\t")) == 3 + 4

    other = SelfSupervisedReconstruction(checkpoint_dir=str(tmp_path / "b"), **{**kw, "lr_decoder": 5e-4})
    with pytest.raises(ValueError, match="checkpoint of other settings"):
        other.fit(*args, **extra)


def test_snr_weights_favour_reliable_voxels():
    rng = np.random.default_rng(0)
    images = smooth_images(30, size=8)
    images = np.concatenate([images, images])  # every image shown twice
    signal = rng.standard_normal((30, 2))[np.r_[0:30, 0:30]]
    betas = np.c_[signal[:, 0] + 0.2 * rng.standard_normal(60), rng.standard_normal(60)]
    w = snr_weights(betas, images)
    assert w[0] > 5 * w[1] and w.mean() == pytest.approx(1.0)
    np.testing.assert_array_equal(snr_weights(betas[:30], images[:30]), [1.0, 1.0])


def test_bad_settings_and_inputs_name_the_parameter(data):
    images, _, noisy = data
    with pytest.raises(ValueError, match="unknown parameter.*epochz"):
        SelfSupervisedReconstruction(epochz=3)
    with pytest.raises(ValueError, match="methods.selfsup.width"):
        SelfSupervisedReconstruction(width=0)
    model = SelfSupervisedReconstruction(encoder_epochs=1, decoder_epochs=0, **TINY)
    with pytest.raises(ValueError, match="divisible by 4"):
        model.fit(noisy[:10, :], smooth_images(10, size=10))
    with pytest.raises(ValueError, match="unpaired_folder"):
        SelfSupervisedReconstruction(unpaired_folder="/nonexistent/folder", encoder_epochs=1,
                                     decoder_epochs=1, **TINY).fit(noisy[:10], images[:10])
