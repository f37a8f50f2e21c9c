"""The reconstruction-method interface and the pixel-PCA baseline."""

import numpy as np
import pytest

from conftest import linear_voxels, smooth_images
from fmrirecon.evaluation import identification_2way, similarity_matrix
from fmrirecon.methods import METHODS, EvaluationData, ReconstructionMethod, get_method


def test_registry_names_every_method_class():
    for name in METHODS:
        cls = get_method(name)
        assert issubclass(cls, ReconstructionMethod) and cls.name == name
    with pytest.raises(ValueError, match="unknown reconstruction method 'nope'"):
        get_method("nope")


def test_pca_identifies_held_out_images_far_above_chance(tmp_path):
    images = smooth_images(260, size=16)
    voxels = linear_voxels(images, n_voxels=300, noise=1.0)
    method = get_method("pca")(n_components=30, seed=0).fit(voxels[:220], images[:220])
    method.save(tmp_path / "m.pkl")
    loaded = get_method("pca").load(tmp_path / "m.pkl")
    recon = loaded.reconstruct(voxels[220:])
    assert recon.shape == images[220:].shape and recon.min() >= 0 and recon.max() <= 1
    ident = identification_2way(similarity_matrix(recon, images[220:]))
    assert ident.mean() > 0.9  # chance 0.5
    np.testing.assert_array_equal(recon, method.reconstruct(voxels[220:]))


def test_pca_without_signal_stays_at_chance():
    images = smooth_images(260, size=16)
    noise = np.random.default_rng(5).standard_normal((260, 300)).astype(np.float32)
    method = get_method("pca")(n_components=30).fit(noise[:220], images[:220])
    ident = identification_2way(similarity_matrix(method.reconstruct(noise[220:]), images[220:]))
    assert 0.3 < ident.mean() < 0.7


def _evaluation_data(voxels, images, n_train):
    return EvaluationData(
        split="test", train_betas=voxels[:n_train], train_images=images[:n_train],
        train_stim_files=np.array([f"train_{i}" for i in range(n_train)]),
        test_betas=voxels[n_train:], test_images=images[n_train:],
        test_stim_files=np.array([f"test_{i}" for i in range(len(images) - n_train)]),
        stimuli=None, noise_ceiling=None, n_boot=300)


def test_pca_identification_in_coefficient_space():
    images = smooth_images(260, size=16)
    voxels = linear_voxels(images, n_voxels=300, noise=1.0)
    method = get_method("pca")(n_components=30, seed=0).fit(voxels[:220], images[:220])
    np.testing.assert_allclose(method.encode_targets(images[:5]),
                               method.pca_.transform(images[:5].reshape(5, -1)))
    metrics = method.extra_metrics(_evaluation_data(voxels, images, 220))
    assert set(metrics) == {"ident2_latent"}
    assert metrics["ident2_latent"]["mean"] > 0.9 and metrics["ident2_latent"]["chance"] == 0.5
    # Without signal in the voxels the decoded coefficients identify nothing.
    noise = np.random.default_rng(5).standard_normal((260, 300)).astype(np.float32)
    blind = get_method("pca")(n_components=30).fit(noise[:220], images[:220])
    ident = blind.extra_metrics(_evaluation_data(noise, images, 220))["ident2_latent"]
    assert ident["ci_low"] < 0.5 < ident["ci_high"]


def test_methods_without_transform_targets_add_no_target_identification():
    images = smooth_images(60, size=8)
    voxels = linear_voxels(images, n_voxels=50)
    method = get_method("ridge")().fit(voxels[:50], images[:50])
    assert method.encode_targets(images) is None
    assert method.target_identification(_evaluation_data(voxels, images, 50)) == {}
