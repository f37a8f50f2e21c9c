"""The reconstruction-method interface and the pixel-PCA baseline."""

import numpy as np
import pytest

from conftest import linear_voxels, smooth_images
from fmrirecon.evaluation import identification_2way, similarity_matrix
from fmrirecon.methods import METHODS, ReconstructionMethod, get_method


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
