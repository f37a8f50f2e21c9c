"""The latent reconstruction method and attribute classification from decoded latents."""

import numpy as np
import pandas as pd
import pytest

from conftest import linear_voxels, smooth_images
from fmrirecon.attributes import attribute_accuracy, binary_columns
from fmrirecon.evaluation import identification_2way, similarity_matrix
from fmrirecon.generative import train_vaegan
from fmrirecon.methods import EvaluationData, get_method
from fmrirecon.simulate.stimuli import save_png


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    """A small generator trained on smooth 16 px images."""
    folder = tmp_path_factory.mktemp("gen")
    paths = []
    for i, img in enumerate(smooth_images(400, size=16, seed=11)):
        paths.append(folder / f"img{i:03d}.png")
        save_png(paths[-1], img)
    return train_vaegan(paths, folder / "generator.pt", image_size=16, channels=1, latent_dim=16,
                        epochs=15, batch_size=32, lr=2e-3, seed=0, device="cpu", base_channels=16)


def test_latent_method_identifies_held_out_images(generator, tmp_path):
    images = smooth_images(260, size=16)
    voxels = linear_voxels(images, n_voxels=300, noise=1.0)
    cls = get_method("latent")
    method = cls(generator=str(generator), n_folds=3, device="cpu", seed=0).fit(voxels[:220], images[:220])
    decoded = method.decode(voxels[220:])
    assert decoded.shape == (40, 16)
    recon = method.reconstruct(voxels[220:])
    assert recon.shape == images[220:].shape and recon.min() >= 0 and recon.max() <= 1
    ident = identification_2way(similarity_matrix(recon, images[220:]))
    print(f"latent 2-way identification: {ident.mean():.3f}")
    assert ident.mean() > 0.8  # chance 0.5
    data = EvaluationData(
        split="test", train_betas=voxels[:220], train_images=images[:220],
        train_stim_files=np.array([f"train_{i}" for i in range(220)]), test_betas=voxels[220:],
        test_images=images[220:], test_stim_files=np.array([f"test_{i}" for i in range(40)]),
        stimuli=None, noise_ceiling=None, n_boot=300)
    metrics = method.extra_metrics(data)
    print(f"latent 2-way identification in latent space: {metrics['ident2_latent']['mean']:.3f}")
    assert metrics["ident2_latent"]["mean"] > 0.8 and metrics["ident2_latent"]["chance"] == 0.5
    method.save(tmp_path / "m.pkl")
    generator_moved = generator.with_name("moved.pt")
    generator.rename(generator_moved)  # the saved model carries its own generator weights
    try:
        loaded = cls.load(tmp_path / "m.pkl")
        np.testing.assert_allclose(loaded.reconstruct(voxels[220:]), recon, atol=1e-6)
        np.testing.assert_allclose(loaded.encode_targets(images[:5]), method.train_latents_[:5], atol=1e-5)
        assert loaded.extra_metrics(data) == metrics
    finally:
        generator_moved.rename(generator)


def test_latent_method_resizes_smaller_images_and_rejects_larger_ones(generator):
    images = smooth_images(30, size=10)
    model = get_method("latent")(generator=str(generator), device="cpu").fit(
        np.random.default_rng(0).standard_normal((30, 5)).astype(np.float32), images)
    assert model.reconstruct(np.zeros((2, 5), np.float32)).shape == (2, 10, 10, 1)
    with pytest.raises(ValueError, match=r"generator\.pt: generator draws 16 px images"):
        get_method("latent")(generator=str(generator), device="cpu").fit(
            np.zeros((30, 5), np.float32), smooth_images(30, size=32))
    with pytest.raises(ValueError, match="no generator file"):
        get_method("latent")(device="cpu").fit(np.zeros((30, 5), np.float32), images)


def test_attribute_accuracy_on_decoded_latents():
    rng = np.random.default_rng(0)
    w = rng.standard_normal(10)
    train = rng.standard_normal((300, 10))
    test_true = rng.standard_normal((60, 10))
    test_decoded = test_true + 0.3 * rng.standard_normal(test_true.shape)
    def label(z):
        return (z @ w > 0).astype(int)
    result = attribute_accuracy(train, label(train), test_decoded, label(test_true), n_boot=500)
    assert result["accuracy"] > 0.8 and result["ci_low"] <= result["accuracy"] <= result["ci_high"]
    assert 0.5 <= result["chance"] < 0.8 and result["n_test"] == 60
    noise = attribute_accuracy(train, label(train), rng.standard_normal((60, 10)), label(test_true),
                               n_boot=500)
    assert noise["ci_low"] < 0.65


def test_binary_columns_are_the_0_1_attributes():
    assert binary_columns(pd.DataFrame({"a": [0, 1, 1], "b": [0, 2, 1], "c": ["x", "y", "x"]})) == ["a"]
