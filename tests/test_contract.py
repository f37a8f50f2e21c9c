"""The contract every registered reconstruction method keeps (as nilearn's
check_estimator does for its estimators): constructed from its defaults, it fits tiny
data, reconstructs images in [0, 1], survives a save/load round trip unchanged, and
rejects an unknown setting by name with its closest match."""

import numpy as np
import pytest

from conftest import linear_voxels, smooth_images
from fmrirecon.methods import METHODS, SettingsError, check_method, get_method

SIZE = 8

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    """A generator file trained for one epoch on tiny images (the latent method's input)."""
    from fmrirecon.generative import train_vaegan
    from fmrirecon.simulate.stimuli import save_png

    folder = tmp_path_factory.mktemp("gen")
    paths = []
    for i, img in enumerate(smooth_images(32, size=SIZE, seed=3)):
        paths.append(folder / f"img{i:02d}.png")
        save_png(paths[-1], img)
    return train_vaegan(paths, folder / "generator.pt", image_size=SIZE, channels=1, latent_dim=4,
                        epochs=1, batch_size=16, lr=1e-3, seed=0, device="cpu", base_channels=4)


def _fast_settings(name, generator):
    """Settings that only make a method fast (or give it a file it needs)."""
    return {
        "latent": {"generator": str(generator), "device": "cpu"},
        "dir": {"iterations": 3, "max_units": 40, "device": "cpu"},
        "selfsup": {"width": 4, "encoder_epochs": 1, "decoder_epochs": 1, "batch_size": 16,
                    "progress": False, "perceptual_weight": 0.0, "device": "cpu"},
    }.get(name, {})


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_contract(name, generator, tmp_path):
    cls = get_method(name)
    defaults = cls.setting_defaults()
    assert defaults, f"{name} declares no settings"
    cls(seed=0)  # constructible from its defaults alone
    images = smooth_images(48, size=SIZE)
    betas = linear_voxels(images, n_voxels=30, noise=0.5)
    groups = np.repeat(np.arange(6), 8)
    model = cls(seed=0, **_fast_settings(name, generator)).fit(betas[:40], images[:40], groups=groups[:40])
    recon = model.reconstruct(betas[40:])
    assert recon.shape == images[40:].shape and recon.dtype == np.float32
    assert np.isfinite(recon).all() and recon.min() >= 0 and recon.max() <= 1
    assert np.asarray(model.decode(betas[40:])).shape[0] == 8
    model.save(tmp_path / "model.pkl")
    loaded = cls.load(tmp_path / "model.pkl")
    np.testing.assert_allclose(loaded.reconstruct(betas[40:]), recon, atol=1e-6)
    history = loaded.training_history()
    assert history is None or "epoch" in history


@pytest.mark.parametrize("name", sorted(METHODS))
def test_unknown_setting_is_rejected_with_its_close_match(name):
    cls = get_method(name)
    key = sorted(cls.setting_defaults())[0]
    typo = key[:-1] + ("z" if key[-1] != "z" else "y")
    with pytest.raises(SettingsError) as err:
        cls(seed=0, **{typo: 1})
    message = str(err.value)
    assert "\n" not in message and repr(typo) in message and f"did you mean {key!r}" in message
    # the workflow's check before any job, naming the config entry
    with pytest.raises(SettingsError, match=rf"config\['methods'\]\['alias'\]: unknown key '{typo}'"):
        check_method("alias", {"method": name, typo: 1})
    check_method("alias", {"method": name, key: cls.setting_defaults()[key]})


def test_generator_settings_are_named_as_such_in_a_latent_entry():
    with pytest.raises(SettingsError, match="'epochs' trains the generator.*generator section"):
        check_method("vae", {"method": "latent", "epochs": 3})
