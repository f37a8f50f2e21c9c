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
# encoder_guard off: these tests exercise the cycles themselves, whatever the encoder
TINY = dict(width=4, batch_size=16, progress=False, perceptual_weight=0.0, encoder_guard=False)


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


def test_backbone_encoder_recovers_voxels_tuned_to_a_deep_layer(tmp_path, data):
    """Voxels reading a deep layer of a network: an encoder reading that (frozen)
    network recovers them, and better than one learning its features from the pairs."""
    from fmrirecon.features import FeatureExtractor, extract_features

    images = data[0]
    deep = extract_features(images, FeatureExtractor("smallconv", ["relu4"], seed=0))["relu4"]
    deep = (deep - deep.mean(0)) / (deep.std(0) + 1e-6)
    rng = np.random.default_rng(1)
    clean = deep @ rng.normal(0, 1, (deep.shape[1], 30)) / np.sqrt(deep.shape[1])
    noisy = (clean + rng.normal(0, 0.5, clean.shape)).astype(np.float32)
    train, test = slice(0, 200), slice(200, 260)
    r = {}
    for backbone in (None, "perceptual"):
        model = SelfSupervisedReconstruction(
            seed=0, encoder_epochs=30, decoder_epochs=0, encoder_backbone=backbone,
            encoder_layers=["relu4"], **TINY).fit(noisy[train], images[train])
        pred = model.predict_betas(images[test])
        r[backbone] = np.median([np.corrcoef(pred[:, v], clean[test][:, v])[0, 1]
                                 for v in range(clean.shape[1])])
    # (a ridge regression on the true layer alone reaches 0.89 here)
    assert r["perceptual"] > 0.8 and r["perceptual"] > r[None] + 0.2, r
    # The frozen network travels with the saved model.
    model.save(tmp_path / "model.pkl")
    again = SelfSupervisedReconstruction.load(tmp_path / "model.pkl")
    np.testing.assert_allclose(again.predict_betas(images[test]), pred, atol=1e-5)
    expected = "encoder_backbone: null, 'auto' or one of pixel, gabor, perceptual, got 'vgg'"
    with pytest.raises(ValueError, match=expected):
        SelfSupervisedReconstruction(encoder_backbone="vgg", encoder_epochs=1, decoder_epochs=0,
                                     **TINY).fit(noisy[train], images[train])


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


def test_a_model_saved_before_a_setting_existed_loads_with_its_default(tmp_path, data):
    images, _, noisy = data
    model = SelfSupervisedReconstruction(seed=0, encoder_epochs=1, decoder_epochs=1, **TINY)
    model.fit(noisy[:32], images[:32])
    del model.settings["identification_layers"]  # as pickled by an earlier version
    model.save(tmp_path / "old.pkl")
    loaded = SelfSupervisedReconstruction.load(tmp_path / "old.pkl")
    assert loaded.settings["identification_layers"] == ["relu3", "relu4", "fc5"]
    np.testing.assert_array_equal(loaded.reconstruct(noisy[200:204]), model.reconstruct(noisy[200:204]))


def test_resume_from_checkpoint_reproduces_an_uninterrupted_run(tmp_path, data, monkeypatch, caplog):
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

    # a checkpoint of other settings (or data) cannot be resumed: the fit starts over
    other = SelfSupervisedReconstruction(checkpoint_dir=str(tmp_path / "b"), **{**kw, "lr_decoder": 5e-4})
    with caplog.at_level("WARNING", logger="fmrirecon.methods.selfsup"):
        other.fit(*args, **extra)
    assert "other settings or data; starting over" in caplog.text
    assert len(other.history_) == len(full.history_)
    assert not np.array_equal(other.reconstruct(noisy[200:]), full.reconstruct(noisy[200:]))


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
    with pytest.raises(ValueError, match="unknown key .epochz."):
        SelfSupervisedReconstruction(epochz=3)
    with pytest.raises(ValueError, match="methods.selfsup.width"):
        SelfSupervisedReconstruction(width=0)
    model = SelfSupervisedReconstruction(encoder_epochs=1, decoder_epochs=0, **TINY)
    with pytest.raises(ValueError, match=r"images must be \(n, S, S, C\)"):
        model.fit(noisy[:10, :], smooth_images(10, size=10)[:, :, :8])
    with pytest.raises(ValueError, match="unpaired_folder"):
        SelfSupervisedReconstruction(unpaired_folder="/nonexistent/folder", encoder_epochs=1,
                                     decoder_epochs=1, **TINY).fit(noisy[:10], images[:10])


def _evaluation_data(images, betas, n_train, stimuli=None, noise_ceiling=None):
    from fmrirecon.methods import EvaluationData

    names = np.array([f"im{i:03d}.png" for i in range(len(images))])
    return EvaluationData(
        split="test", train_betas=betas[:n_train], train_images=images[:n_train],
        train_stim_files=names[:n_train], test_betas=betas[n_train:],
        test_images=images[n_train:], test_stim_files=names[n_train:], stimuli=stimuli,
        noise_ceiling=noise_ceiling, seed=0, n_boot=200)


def test_extra_metrics_encoder_quality_against_the_noise_ceiling(data):
    images, clean, noisy = data
    # The test responses are the clean ones plus noise of SD 0.7: a ceiling of
    # 100 / (1 + 0.49) percent of their variance.
    rng = np.random.default_rng(5)
    measured = clean.copy()
    measured[200:] += 0.7 * rng.standard_normal(measured[200:].shape)
    ceiling = np.full(clean.shape[1], 100 / 1.49)
    metrics = {}
    for epochs in (0, 15):
        model = SelfSupervisedReconstruction(seed=0, encoder_epochs=epochs, decoder_epochs=0,
                                             **TINY).fit(noisy[:200], images[:200])
        metrics[epochs] = model.extra_metrics(
            _evaluation_data(images, np.vstack([noisy[:200], measured[200:]]), 200,
                             noise_ceiling=ceiling))
    trained, untrained = metrics[15], metrics[0]
    r = trained["encoder_r"]
    assert r["chance"] == 0.0 and 0.3 < r["ci_low"] <= r["mean"] <= r["ci_high"], r
    assert trained["encoder_ceiling_r"]["mean"] == pytest.approx(np.sqrt(1 / 1.49))
    assert r["mean"] < trained["encoder_ceiling_r"]["mean"] + 0.05  # no better than possible
    frac = trained["encoder_fraction_of_ceiling"]
    assert 0.2 < frac["mean"] < 1.1 and frac["ci_low"] <= frac["mean"] <= frac["ci_high"]
    assert untrained["encoder_r"]["mean"] < r["ci_low"]
    assert "semantic_top1" not in trained  # no semantic_folder


def _class_images(n_per_class, classes, size, seed):
    """Images whose class is a bright blob at a class-specific place."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    out, labels = [], []
    for c in range(classes):
        cy, cx = 0.25 + 0.5 * (c // 3), 0.2 + 0.3 * (c % 3)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.01)
        for _ in range(n_per_class):
            img = 0.2 + 0.6 * blob + 0.05 * rng.standard_normal((size, size))
            out.append(np.clip(img, 0, 1)[..., None])
            labels.append(f"n{c:02d}")
    return np.array(out, dtype=np.float32), np.array(labels)


def test_extra_metrics_semantic_classification_with_folder_prototypes(tmp_path):
    from fmrirecon.simulate.stimuli import save_png

    images, labels = _class_images(20, 6, SIZE, seed=0)
    folder = tmp_path / "labelled"
    (folder / "images").mkdir(parents=True)
    files = [f"images/{i:04d}.png" for i in range(len(images))]
    for f, img in zip(files, images):
        save_png(folder / f, img)
    pd.DataFrame({"file": files, "wnid": labels}).to_csv(folder / "labels.tsv", sep="\t",
                                                          index=False)
    # The study shows 10 images of each class 0-3 in training and 4 of each class in test:
    # classes 4 and 5 are never seen in training.
    pick = np.r_[[np.arange(c * 20, c * 20 + 10) for c in range(4)]].ravel()
    test = np.r_[[np.arange(c * 20 + 10, c * 20 + 14) for c in range(6)]].ravel()
    shown = np.r_[pick, test]
    study = images[shown]
    betas = linear_voxels(study, n_voxels=40, noise=0.3)
    names = np.array([f"im{i:03d}.png" for i in range(len(shown))])
    stimuli = pd.DataFrame({"stim_file": names, "source_file": np.array(files)[shown],
                            "wnid": labels[shown]})
    model = SelfSupervisedReconstruction(
        seed=0, encoder_epochs=10, decoder_epochs=30, cycles=False,
        semantic_folder=str(folder), semantic_layers=["relu1", "relu2"],
        semantic_k=[1, 2], **TINY).fit(betas[:len(pick)], study[:len(pick)])
    extra = model.extra_metrics(_evaluation_data(study, betas, len(pick), stimuli=stimuli))
    for prefix in ("semantic", "semantic_unseen", "semantic_decoded", "semantic_decoded_unseen",
                   "semantic_stimulus"):
        for k in (1, 2):
            entry = extra[f"{prefix}_top{k}"]
            assert entry["chance"] == pytest.approx(k / 6)
            assert entry["ci_low"] <= entry["mean"] <= entry["ci_high"]
    # Prototypes leave out the study's images, yet classify the shown images ...
    assert extra["semantic_stimulus_top1"]["ci_low"] > 0.5
    # ... and the reconstructions, and the features decoded from the betas, better than chance.
    assert extra["semantic_top1"]["mean"] > 2 / 6
    assert extra["semantic_decoded_top1"]["mean"] > 2 / 6


def test_encoder_keeps_the_epoch_of_lowest_heldout_loss(data):
    images, _, noisy = data
    model = SelfSupervisedReconstruction(seed=0, encoder_epochs=8, decoder_epochs=0,
                                         encoder_val_fraction=0.2, **TINY)
    model.fit(noisy[:100], images[:100])
    hist = model.history_[model.history_.phase == "encoder"]
    assert hist["heldout"].notna().all()
    assert model.encoder_epoch_ == int(hist.loc[hist["heldout"].idxmin(), "epoch"])
    # The kept weights are those of that epoch: their held-out loss is the minimum.
    val = model._encoder_split(images[:100])[1].numpy()
    z = torch.from_numpy(model._standardise(noisy[:100][val]))
    x = torch.from_numpy(images[:100][val].transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        loss = voxel_loss(model.encoder_(x), z, torch.from_numpy(model.voxel_weights_),
                          model.settings["cosine_weight"])
    assert float(loss) == pytest.approx(hist["heldout"].min(), rel=1e-5)
    with pytest.raises(ValueError, match="encoder_val_fraction"):
        SelfSupervisedReconstruction(encoder_val_fraction=1.0, encoder_epochs=1,
                                     decoder_epochs=0, **TINY).fit(noisy[:20], images[:20])


def test_residual_cycle_noise_is_the_encoders_heldout_residual_sd(data):
    images, clean, noisy = data
    fits = {}
    for name, betas in (("noisy", noisy), ("clean", clean)):
        model = SelfSupervisedReconstruction(seed=0, encoder_epochs=6, decoder_epochs=1,
                                             encoder_val_fraction=0.2, cycle_noise="residual",
                                             **TINY)
        fits[name] = model.fit(betas[:120], images[:120], unpaired_images=images[200:])
    model = fits["noisy"]
    val = model._encoder_split(images[:120])[1].numpy()
    z = model._standardise(noisy[:120][val])
    x = torch.from_numpy(images[:120][val].transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        residual = z - model.encoder_(x).numpy()
    np.testing.assert_allclose(model.cycle_noise_sd_.numpy(), residual.std(0), rtol=1e-4)
    # noisier betas, noisier encoded images: the residual tracks the measurement noise
    assert model.cycle_noise_sd_.mean() > fits["clean"].cycle_noise_sd_.mean()
    with pytest.raises(ValueError, match="cycle_noise: a number >= 0 or 'residual'"):
        SelfSupervisedReconstruction(cycle_noise="loud", encoder_epochs=1, decoder_epochs=0,
                                     **TINY).fit(noisy[:20], images[:20])


def test_ablation_metrics_are_paired_differences_of_the_two_decoders(data):
    from fmrirecon.evaluation import pixcorr

    images, _, noisy = data
    model = SelfSupervisedReconstruction(seed=3, encoder_epochs=3, decoder_epochs=3,
                                         ablation=True, **TINY)
    model.fit(noisy[:100], images[:100], unpaired_betas=noisy[200:],
              unpaired_images=images[100:200])
    extra = model.extra_metrics(_evaluation_data(images, noisy, 200))
    cyc = pixcorr(model.reconstruct(noisy[200:], variant="cycles"), images[200:])
    pairs = pixcorr(model.reconstruct(noisy[200:], variant="pairs"), images[200:])
    entry = extra["cycles_gain_pixcorr"]
    assert entry["mean"] == pytest.approx(np.mean(cyc - pairs), abs=1e-6)
    assert entry["chance"] == 0.0 and entry["ci_low"] <= entry["mean"] <= entry["ci_high"]
    assert {"cycles_gain_nway2", "cycles_gain_nway5", "cycles_gain_nway10"} <= set(extra)
    # By deep features too, with the same distractor draws for both decoders.
    from fmrirecon.evaluation import identification_nway

    ev = _evaluation_data(images, noisy, 200)
    acc = {v: identification_nway(model.feature_similarity(model.reconstruct(noisy[200:], variant=v), ev),
                                  5, n_draws=1000, rng=np.random.default_rng([ev.seed, 29, 5]))
           for v in ("cycles", "pairs")}
    assert extra["cycles_gain_featnway5"]["mean"] == pytest.approx(
        np.mean(acc["cycles"] - acc["pairs"]), abs=1e-9)
    assert extra["featnway5"]["chance"] == pytest.approx(0.2)
    assert extra["featnway5"]["mean"] == pytest.approx(acc["cycles"].mean(), abs=1e-9)
    # A model with one decoder has nothing to compare.
    single = SelfSupervisedReconstruction(seed=3, encoder_epochs=1, decoder_epochs=1, **TINY)
    single.fit(noisy[:40], images[:40])
    assert not any(k.startswith("cycles_gain") for k in single.extra_metrics(
        _evaluation_data(images, noisy, 200)))


def test_unpaired_folder_leaves_the_study_stimuli_out(tmp_path):
    from fmrirecon.stimuli import stimulus_sources
    from fmrirecon.methods.selfsup import load_unpaired_images
    from fmrirecon.simulate.stimuli import save_png

    folder = tmp_path / "natural"
    (folder / "images").mkdir(parents=True)
    images = smooth_images(5, size=SIZE)
    files = [f"images/{i}.png" for i in range(5)]
    for f, image in zip(files, images):
        save_png(folder / f, image)
    # the study showed images 0 and 3 of this folder, and one of another folder
    table = pd.DataFrame({"stim_file": ["a.png", "b.png", "c.png", "d.png"],
                          "family": ["natural", "natural", "other", "shape"],
                          "source_file": [files[0], files[3], files[1], np.nan]})
    sources = stimulus_sources(table)
    assert sources == {("natural", files[0]), ("natural", files[3]), ("other", files[1])}
    kept = load_unpaired_images(folder, SIZE, 1, None, 0, exclude=sources)
    np.testing.assert_allclose(kept, images[[1, 2, 4]], atol=1 / 255 + 1e-6)
    assert stimulus_sources(table.drop(columns="source_file")) == set()


def test_images_of_a_side_not_divisible_by_4_are_resized_in_and_out(data):
    images = smooth_images(60, size=10)
    betas = linear_voxels(images, n_voxels=20, noise=0.3)
    model = SelfSupervisedReconstruction(encoder_epochs=1, decoder_epochs=1, **TINY).fit(
        betas[:50], images[:50])
    assert model.work_size_ == 12
    assert model.reconstruct(betas[50:]).shape == (10, 10, 10, 1)
    assert model.predict_betas(images[50:]).shape == (10, 20)


@pytest.mark.slow
@pytest.mark.parametrize("truth", ["pixel", "gabor"])
def test_auto_backbone_is_the_feature_model_the_voxels_follow(truth):
    """Voxels driven by pixels, or by Gabor energy (early visual cortex), get the encoder
    backbone of their kind by held-out R2, not the untrained network's layers."""
    from fmrirecon.methods.backbones import GaborBackbone

    images = smooth_images(240, size=16, seed=4)
    rng = np.random.default_rng(2)
    if truth == "pixel":
        feats = images.reshape(len(images), -1)
    else:
        x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
        with torch.no_grad():
            feats = GaborBackbone(16, 1)(x)["gabor"].flatten(1).numpy()
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-8)
    # sparse read-outs: each voxel pools a few features of the true model
    weights = rng.normal(size=(feats.shape[1], 30)) * (rng.random((feats.shape[1], 30)) < 0.05)
    clean = feats @ weights
    betas = (clean / clean.std(0) + 0.5 * rng.standard_normal(clean.shape)).astype(np.float32)
    model = SelfSupervisedReconstruction(seed=0, encoder_backbone="auto", decoder_epochs=0,
                                         **TINY).fit(betas, images)
    scores = {name: q["r2"] for name, q in model.encoder_backbone_scores_.items()}
    assert model.encoder_backbone_ == truth, scores
    assert model.encoder_quality_["ci_low"] > 0


def test_a_checkpoint_of_the_former_format_starts_the_fit_over(tmp_path, data, caplog):
    images, _, noisy = data
    settings = dict(encoder_epochs=1, decoder_epochs=1, checkpoint_dir=str(tmp_path), **TINY)
    first = SelfSupervisedReconstruction(seed=0, **settings).fit(noisy[:60], images[:60])
    path = tmp_path / CHECKPOINT_NAME
    state = torch.load(path, weights_only=False)
    state.pop("rng")  # as written before torchkit: gen, torch_rng, numpy_rng, python_rng
    torch.save(state, path)
    with caplog.at_level("WARNING"):
        again = SelfSupervisedReconstruction(seed=0, **settings).fit(noisy[:60], images[:60])
    assert "starting over" in caplog.text
    np.testing.assert_array_equal(again.reconstruct(noisy[60:80]), first.reconstruct(noisy[60:80]))
