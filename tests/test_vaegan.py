"""The VAE-GAN generator: round trip quality against PCA, and exact checkpoint resume."""

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import shared_data, smooth_images
from fmrirecon.generative import (encode, decode, generator_config, load_encoder, load_generator,
                                  train_vaegan, training_image_paths)
from fmrirecon.generative import vaegan
from fmrirecon.images import load_images
from fmrirecon.simulate.stimuli import read_folder, save_png


def _ssim(recon, true):
    from skimage.metrics import structural_similarity

    return np.mean([structural_similarity(r[..., 0], t[..., 0], gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False, data_range=1)
                    for r, t in zip(recon, true)])


def _write_images(folder, images):
    (folder / "images").mkdir(parents=True)
    paths = []
    for i, img in enumerate(images):
        paths.append(folder / "images" / f"img{i:03d}.png")
        save_png(paths[-1], img)
    return paths


@pytest.mark.slow  # 40 s: trains a VAE-GAN on 2,000 CelebA faces
@pytest.mark.shared_data
def test_round_trip_beats_pca_at_equal_dimension(tmp_path):
    """Encode->decode of held-out faces is closer (SSIM) than PCA with as many components."""
    from sklearn.decomposition import PCA

    folder = shared_data("images/faces_celeba")
    files = [folder / f for f in read_folder(folder)["file"]]
    train, test = files[:-100], files[-100:]  # 3900 training faces
    size, dim = 16, 8
    # The VAE part only (no GAN term): the GAN trades pixel fidelity for sharpness.
    out = train_vaegan(train, tmp_path / "g.pt", image_size=size, channels=1, latent_dim=dim, epochs=30,
                       batch_size=64, lr=2e-3, seed=0, device="cpu", base_channels=16,
                       adv_weight=0.0, feature_weight=0.0, curves_path=tmp_path / "curves.tsv")
    x_train, x_test = load_images(train, size, 1), load_images(test, size, 1)
    round_trip = decode(load_generator(out), encode(load_encoder(out), x_test))
    pca = PCA(dim, random_state=0).fit(x_train.reshape(len(x_train), -1))
    pca_rt = pca.inverse_transform(pca.transform(x_test.reshape(len(x_test), -1)))
    pca_rt = np.clip(pca_rt, 0, 1).reshape(x_test.shape)
    ssim_vae, ssim_pca = _ssim(round_trip, x_test), _ssim(pca_rt, x_test)
    print(f"round-trip SSIM: VAE-GAN {ssim_vae:.3f}, PCA {ssim_pca:.3f}")
    assert ssim_vae > ssim_pca
    curves = pd.read_csv(tmp_path / "curves.tsv", sep="\t")
    assert list(curves["epoch"]) == list(range(1, 31))
    assert curves["pixel"].iloc[-1] < curves["pixel"].iloc[0]


def _tiny_run(paths, out, epochs, **kw):
    return train_vaegan(paths, out, image_size=8, channels=1, latent_dim=4, epochs=epochs,
                        batch_size=16, lr=1e-3, seed=3, device="cpu", base_channels=8, **kw)


def test_resume_after_interruption_gives_the_uninterrupted_weights(tmp_path, monkeypatch):
    paths = _write_images(tmp_path / "imgs", smooth_images(40, size=8))
    reference = torch.load(_tiny_run(paths, tmp_path / "a" / "g.pt", 4), weights_only=True)

    # Interrupt the third epoch (after the epoch-2 checkpoint), then rerun.
    run_epoch, calls = vaegan._run_epoch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return run_epoch(*args, **kwargs)

    monkeypatch.setattr(vaegan, "_run_epoch", interrupted)
    out = tmp_path / "b" / "g.pt"
    with pytest.raises(KeyboardInterrupt):
        _tiny_run(paths, out, 4, curves_path=tmp_path / "b" / "curves.tsv")
    assert not out.exists() and len(pd.read_csv(tmp_path / "b" / "curves.tsv", sep="\t")) == 2
    monkeypatch.setattr(vaegan, "_run_epoch", run_epoch)
    resumed = torch.load(_tiny_run(paths, out, 4, curves_path=tmp_path / "b" / "curves.tsv"),
                         weights_only=True)
    for net in ("encoder", "decoder", "discriminator"):
        for key, value in reference[net].items():
            assert torch.equal(value, resumed[net][key]), f"{net}.{key} differs after resume"
    assert len(pd.read_csv(tmp_path / "b" / "curves.tsv", sep="\t")) == 4
    # The generator file carries the curves; resumed epochs log the same losses.
    def losses(run):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in run["history"]]

    assert len(resumed["history"]) == 4 and losses(resumed) == losses(reference)

    # A checkpoint of other settings (here the seed) is not continued: training starts over.
    other = train_vaegan(paths, tmp_path / "b" / "g.pt", image_size=8, channels=1, latent_dim=4,
                         epochs=1, batch_size=16, lr=1e-3, seed=4, device="cpu", base_channels=8)
    assert torch.load(other, weights_only=True)["epochs"] == 1


def test_generator_file_interface_and_errors(tmp_path):
    paths = _write_images(tmp_path / "imgs", smooth_images(20, size=8))
    out = _tiny_run(paths, tmp_path / "g.pt", 1)
    assert generator_config(out) == dict(image_size=8, channels=1, latent_dim=4, base_channels=8)
    images = load_generator(out)(torch.randn(3, 4))
    assert images.shape == (3, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    mu, logvar = load_encoder(out)(images)
    assert mu.shape == logvar.shape == (3, 4)
    bad = tmp_path / "bad.pt"
    torch.save({"weights": 1}, bad)
    with pytest.raises(ValueError, match="bad.pt: not an fmrirecon VAE-GAN file"):
        load_generator(bad)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_generator(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="image_size must be"):
        train_vaegan(paths, tmp_path / "x.pt", image_size=12, channels=1, latent_dim=4, epochs=1,
                     batch_size=8, lr=1e-3, seed=0, device="cpu")


def test_training_images_keep_test_sources_out(tmp_path):
    folder = tmp_path / "faces"
    _write_images(folder, smooth_images(6, size=8))
    stimuli = tmp_path / "stimuli"
    stimuli.mkdir()
    for name in ("train_0001.png", "test_0001.png"):
        save_png(stimuli / name, smooth_images(1, size=8)[0])
    pd.DataFrame({"stim_file": ["train_0001.png", "test_0001.png"], "family": "faces",
                  "split": ["train", "test"],
                  "source_file": ["images/img000.png", "images/img001.png"]}).to_csv(
        stimuli / "stimuli.tsv", sep="\t", index=False)
    paths = training_image_paths(stimuli, [folder])
    names = sorted(p.relative_to(tmp_path).as_posix() for p in paths)
    assert names == ["faces/images/img002.png", "faces/images/img003.png", "faces/images/img004.png",
                     "faces/images/img005.png", "stimuli/train_0001.png"]
