"""Deep image reconstruction: feature inversion, feature decoders, the method."""

import numpy as np
import pytest
import torch

from conftest import linear_voxels, smooth_images
from fmrirecon.evaluation import correlation_matrix, identification_2way, pixcorr
from fmrirecon.features import FeatureExtractor, extract_features
from fmrirecon.methods import EvaluationData, get_method
from fmrirecon.methods.dir import (DeepImageReconstruction, GeneratorPrior, PixelPrior,
                                   VoxelSelectionRidge, decoded_feature_accuracy,
                                   invert_features)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def extractor(one_torch_thread):
    return FeatureExtractor("smallconv", input_size=16)


@pytest.fixture(scope="module")
def data():
    images = smooth_images(100, size=16, seed=0)
    voxels = linear_voxels(images, n_voxels=150, noise=0.5)
    return images, voxels


def test_inverting_true_features_recovers_the_image(extractor):
    images = smooth_images(4, size=16, seed=3)
    feats = extract_features(images, extractor)
    recon = invert_features(feats, extractor, images.shape[1:], iterations=60, progress=False)
    r = pixcorr(recon, images)
    assert r.min() > 0.8, r
    assert recon.shape == images.shape and recon.min() >= 0 and recon.max() <= 1


def test_inversion_from_deep_layers_only_and_unit_subsets(extractor):
    images = smooth_images(3, size=16, seed=4)
    feats = extract_features(images, extractor)
    units = {"relu2": np.arange(0, feats["relu2"].shape[1], 2)}  # every other unit
    targets = {"relu2": feats["relu2"][:, units["relu2"]], "relu3": feats["relu3"]}
    recon = invert_features(targets, extractor, images.shape[1:], units=units, iterations=60,
                            tv_weight=0.01, jitter=1, progress=False)
    assert pixcorr(recon, images).mean() > 0.6


def test_generator_prior_optimises_latents(extractor):
    # A fixed "generator" of smooth images whose range contains the targets.
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    basis = gaussian_filter(rng.standard_normal((8, 16, 16)), (0, 2, 2)).reshape(8, -1)
    basis = torch.from_numpy((basis / basis.std()).astype(np.float32))

    class Smooth(torch.nn.Module):
        latent_dim = 8

        def forward(self, z):
            return torch.sigmoid(z @ basis).view(-1, 1, 16, 16)

    gen = Smooth()
    z_true = torch.from_numpy(0.5 * rng.standard_normal((3, 8)).astype(np.float32))
    images = gen(z_true).permute(0, 2, 3, 1).numpy()
    feats = extract_features(images, extractor)
    recon = invert_features(feats, extractor, images.shape[1:], GeneratorPrior(gen, lr=0.1, weight=0.0),
                            iterations=60, progress=False)
    assert pixcorr(recon, images).min() > 0.9
    # Starting latents are where the search begins: with no step, the image they draw.
    start = invert_features(feats, extractor, images.shape[1:], GeneratorPrior(gen, init=z_true.numpy()),
                            iterations=0, progress=False)
    np.testing.assert_allclose(start, images, atol=1e-6)
    with pytest.raises(ValueError, match="latent_init"):
        invert_features(feats, extractor, images.shape[1:], GeneratorPrior(gen, init=np.zeros((3, 7))),
                        iterations=0, progress=False)


def test_voxel_selection_ridge_recovers_sparse_weights():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 60)).astype(np.float32)
    W = np.zeros((60, 5), np.float32)
    for j in range(5):
        W[rng.choice(60, 3, replace=False), j] = 1.0
    Y = X @ W + 0.1 * rng.standard_normal((120, 5)).astype(np.float32)
    model = VoxelSelectionRidge(n_voxels=5, alphas=[0.1, 10, 1000]).fit(X[:100], Y[:100])
    assert model.alpha_ < 1000
    for j in range(5):
        assert set(np.flatnonzero(W[:, j])) <= set(model.index_[j])
    pred = model.predict(X[100:])
    r = [np.corrcoef(pred[:, j], Y[100:, j])[0, 1] for j in range(5)]
    assert min(r) > 0.9
    # Kernel form (k > n) gives the same weights as the primal form.
    small = VoxelSelectionRidge(n_voxels=40, alphas=5.0).fit(X[:30], Y[:30])
    Xs = (X[:30] - small.x_mean_) / small.x_scale_
    sel = Xs[:, small.index_[0]]
    w = np.linalg.solve(sel.T @ sel + 5.0 * np.eye(40), sel.T @ (Y[:30, 0] - Y[:30, 0].mean()))
    np.testing.assert_allclose(small.coef_[0], w, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("n_voxels", [None, 40])
def test_decoded_features_beat_chance(data, n_voxels):
    images, voxels = data
    model = DeepImageReconstruction(input_size=16, n_voxels=n_voxels, max_units=300,
                                    iterations=40, device="cpu", seed=0)
    model.fit(voxels[:80], images[:80])
    table = model.feature_accuracy(voxels[80:], images[80:])
    assert list(table["layer"]) == model.extractor.layers
    assert (table["profile_r"] > 0.3).all() and (table["pattern_r"] > 0.3).all(), table
    # fc5 has 10 units only: identification from it is the weakest.
    assert (table["ident2"] > 0.7).all() and table["ident2"].mean() > 0.85, table
    decoded = model.decode(voxels[80:])
    assert decoded.shape == (20, sum(len(v) for v in model.feature_std_.values()))
    # the same numbers reach the report as the method's own metrics, with CIs
    extra = model.extra_metrics(EvaluationData(
        split="test", train_betas=voxels[:80], train_images=images[:80],
        train_stim_files=np.arange(80).astype(str), test_betas=voxels[80:],
        test_images=images[80:], test_stim_files=np.arange(20).astype(str), stimuli=None,
        noise_ceiling=None, seed=0, n_boot=200))
    for row in table.itertuples():
        entry = extra[f"featident2_{row.layer}"]
        assert entry["mean"] == pytest.approx(row.ident2) and entry["chance"] == 0.5
        assert entry["ci_low"] <= entry["mean"] <= entry["ci_high"]
        assert extra[f"featpattern_{row.layer}"]["mean"] == pytest.approx(row.pattern_r)


def test_method_reconstructs_saves_and_loads(tmp_path, data):
    images, voxels = data
    model = get_method("dir")(seed=0, input_size=16, max_units=500, iterations=60, device="cpu")
    model.fit(voxels[:80], images[:80])
    recon = model.reconstruct(voxels[80:])
    assert recon.shape == (20, 16, 16, 1) and recon.dtype == np.float32
    ident = identification_2way(correlation_matrix(recon, images[80:]))
    assert ident.mean() > 0.8
    path = tmp_path / "dir.pkl"
    model.save(path)
    loaded = get_method("dir").load(path)
    np.testing.assert_allclose(loaded.decode(voxels[80:83]), model.decode(voxels[80:83]), rtol=1e-6)
    # Deterministic from the seed: the reloaded model draws the same images from the
    # same batch (another batch size may sum in another order: float32 rounding only)
    np.testing.assert_allclose(loaded.reconstruct(voxels[80:]), recon, atol=1e-5)


def test_bad_settings_fail_clearly():
    with pytest.raises(ValueError, match="methods.dir.prior"):
        DeepImageReconstruction(prior="gan")
    with pytest.raises(ValueError, match="methods.dir.generator"):
        DeepImageReconstruction(prior="generator")


def test_decoded_feature_accuracy_table():
    rng = np.random.default_rng(0)
    true = {"a": rng.standard_normal((10, 30))}
    perfect = decoded_feature_accuracy(true, true)
    assert perfect.loc[0, "profile_r"] == pytest.approx(1) and perfect.loc[0, "ident2"] == 1
    noise = decoded_feature_accuracy({"a": rng.standard_normal((10, 30))}, true)
    assert abs(noise.loc[0, "pattern_r"]) < 0.3


def _untrained_generator(path):
    """An untrained VAE-GAN file in the latent method's format: the plumbing, not quality."""
    from fmrirecon.generative.vaegan import FORMAT, build_networks

    encoder, decoder, _ = build_networks(16, 1, 8, base_channels=8)
    torch.save({"format": FORMAT, "encoder": encoder.state_dict(), "decoder": decoder.state_dict(),
                "config": {"image_size": 16, "channels": 1, "latent_dim": 8, "base_channels": 8}},
               path)
    return path


def test_generator_prior_from_a_generator_file(tmp_path, data):
    path = _untrained_generator(tmp_path / "generator.pt")
    images, voxels = data
    model = DeepImageReconstruction(input_size=16, max_units=100, iterations=5, device="cpu",
                                    prior="generator", generator=str(path))
    model.fit(voxels[:40], images[:40])
    recon = model.reconstruct(voxels[80:84])
    assert recon.shape == (4, 16, 16, 1) and 0 <= recon.min() and recon.max() <= 1
    model.save(tmp_path / "dir.pkl")
    assert DeepImageReconstruction.load(tmp_path / "dir.pkl")._generator is None


def test_generator_search_can_start_from_the_pixel_reconstruction(tmp_path, data, monkeypatch):
    from fmrirecon.generative import decode, encode, load_encoder

    path = _untrained_generator(tmp_path / "generator.pt")
    images, voxels = data
    with pytest.raises(ValueError, match="latent_init"):
        DeepImageReconstruction(latent_init="mean")
    model = DeepImageReconstruction(input_size=16, max_units=100, iterations=5, device="cpu",
                                    prior="generator", generator=str(path), latent_init="pixel")
    model.fit(voxels[:40], images[:40])
    targets = model.decode_layers(voxels[80:84])
    # With no step the generator draws the encoder's latent of the pixel reconstruction.
    model.iterations, model._inversion_cache = 0, {}
    start = model.invert(targets, progress=False)
    expected = decode(model.load_generator(), encode(load_encoder(path), model.invert(targets, prior="pixel")))
    np.testing.assert_allclose(start, expected, atol=1e-5)
    # The pixel inversion runs once whether it is the start or the comparison.
    import fmrirecon.methods.dir.inversion as dir_module

    calls = []
    real = dir_module.invert_features
    monkeypatch.setattr(dir_module, "invert_features",
                        lambda *a, **k: calls.append(isinstance(a[3], PixelPrior)) or real(*a, **k))
    model._inversion_cache = {}
    model.reconstruct(voxels[80:84])
    model.reconstruct(voxels[80:84], prior="pixel")
    model.reconstruct(voxels[80:84])
    assert calls == [True, False]


def _evaluation_data(voxels, images, families, n_train, seed=0):
    import pandas as pd

    names = np.array([f"im{i:03d}.png" for i in range(len(images))])
    stimuli = pd.DataFrame({"stim_file": names, "family": families})
    return EvaluationData(
        split="test", train_betas=voxels[:n_train], train_images=images[:n_train],
        train_stim_files=names[:n_train], test_betas=voxels[n_train:],
        test_images=images[n_train:], test_stim_files=names[n_train:], stimuli=stimuli,
        noise_ceiling=None, seed=seed, n_boot=200)


def test_extra_metrics_identify_reconstructions_and_generalise_across_families(data):
    images, _ = data
    families = np.array(["smooth", "inverted"] * 50)
    images = np.where(families[:, None, None, None] == "inverted", 1 - images, images)
    voxels = linear_voxels(images, n_voxels=150, noise=0.5)  # responses to the images shown
    model = DeepImageReconstruction(input_size=16, max_units=300, iterations=40, device="cpu",
                                    layers=["relu1", "relu3"], seed=0,
                                    generalisation={"train": "smooth"})
    model.fit(voxels[:70], images[:70])
    recon = model.reconstruct(voxels[70:])
    extra = model.extra_metrics(_evaluation_data(voxels, images, families, 70))

    # Reconstructions are identified by their deep features, with CIs and chance.
    entry = extra["reconfeat_ident2"]
    assert entry["chance"] == 0.5 and entry["ci_low"] > 0.6, entry
    assert {"reconfeat_ident2_relu1", "reconfeat_ident2_relu3"} <= set(extra)
    # The metrics scored the reconstructions the workflow saved (the cached ones).
    np.testing.assert_array_equal(model.reconstruct(voxels[70:]), recon)

    for source in ("smooth", "all"):
        for family in ("smooth", "inverted"):
            for score, chance in (("pixcorr", 0.0), ("ident2_pixel", 0.5), ("ident2_feature", 0.5)):
                e = extra[f"gen_{source}_to_{family}_{score}"]
                assert e["chance"] == chance and e["ci_low"] <= e["mean"] <= e["ci_high"]
    # Within the training family, the narrow decoder identifies images well above chance.
    assert extra["gen_smooth_to_smooth_ident2_pixel"]["ci_low"] > 0.6
    # It never saw an inverted image: its pixel correlation there is lower than that of
    # the decoder trained on both families.
    assert (extra["gen_smooth_to_inverted_pixcorr"]["mean"]
            < extra["gen_all_to_inverted_pixcorr"]["mean"])


def test_reconstructions_of_mismatched_betas_are_not_identified(data):
    images, voxels = data
    model = DeepImageReconstruction(input_size=16, max_units=300, iterations=40, device="cpu",
                                    layers=["relu1", "relu3"], seed=0)
    model.fit(voxels[:70], images[:70])
    shuffled = voxels[70:][np.random.default_rng(1).permutation(30)]
    families = np.array(["a"] * 100)
    extra = model.extra_metrics(_evaluation_data(np.vstack([voxels[:70], shuffled]), images,
                                                 families, 70))
    entry = extra["reconfeat_ident2"]
    assert entry["ci_low"] < 0.5 < entry["ci_high"] or abs(entry["mean"] - 0.5) < 0.1, entry


def test_generalisation_setting_is_checked():
    with pytest.raises(ValueError, match="methods.dir.generalisation"):
        DeepImageReconstruction(generalisation={"from": "natural"})
    model = DeepImageReconstruction(generalisation="natural")
    assert model.generalisation == {"train": "natural", "test": None}
    assert model.settings()["generalisation"] == {"train": "natural", "test": None}


def test_prior_comparison_is_the_paired_difference_of_both_priors(tmp_path, data):
    path = _untrained_generator(tmp_path / "generator.pt")
    images, voxels = data
    with pytest.raises(ValueError, match="compare_priors"):
        DeepImageReconstruction(compare_priors=True)
    model = DeepImageReconstruction(input_size=16, max_units=200, iterations=30, device="cpu",
                                    layers=["relu1", "relu3"], prior="generator",
                                    generator=str(path), compare_priors=True, seed=0)
    model.fit(voxels[:70], images[:70])
    extra = model.extra_metrics(_evaluation_data(voxels, images, np.array(["a"] * 100), 70))
    gen = model.reconstruct(voxels[70:])
    pix = model.reconstruct(voxels[70:], prior="pixel")
    # An untrained generator draws near-constant images: the pixel prior wins clearly.
    expected = np.mean(pixcorr(gen, images[70:]) - pixcorr(pix, images[70:]))
    entry = extra["prior_gain_pixcorr"]
    assert entry["mean"] == pytest.approx(expected, abs=1e-5) and entry["chance"] == 0.0
    assert entry["ci_high"] < 0
    assert {"prior_gain_ident2_pixel", "prior_gain_ident2_feature"} <= set(extra)
