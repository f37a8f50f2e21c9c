"""The field's metric table: papers' resolutions, layers and distances; "no weights" honesty.

No pretrained weights exist offline: the network code paths run on locally initialised
weights saved where the standard tools cache them ($TORCH_HOME/hub/checkpoints, a CLIP
archive at a config path), and their values are checked against a direct computation
the way the papers' evaluation code does it.
"""

import numpy as np
import pytest
import torch
import torchvision
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.transforms import functional as TF

from conftest import smooth_images
from fmrirecon.perceptual_metrics import (FIELD_METRICS, NETWORKS, PIXEL_SIZE, default_weights_path,
                                          field_metrics, resize, weights_status)


def colour_images(n, size=16, seed=0):
    return np.concatenate([smooth_images(n, size, seed + k) for k in range(3)], axis=-1)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch cache (and home) of our own: nothing cached, nothing downloaded."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    return tmp_path / "torch" / "hub" / "checkpoints"


def save_random(arch, path, seed=0, prefix=""):
    torch.manual_seed(seed)
    model = torchvision.models.get_model(arch, weights=None)
    state = {prefix + k: v for k, v in model.state_dict().items()}
    torch.save(state, path)
    return model


def test_default_paths_are_the_standard_caches(torch_home, tmp_path):
    assert default_weights_path("alexnet") == torch_home / "alexnet-owt-7be5be79.pth"
    assert default_weights_path("swav") == torch_home / "swav_800ep_pretrain.pth.tar"
    assert default_weights_path("clip") == tmp_path / "home" / ".cache" / "clip" / "ViT-L-14.pt"
    # the file names are those of torchvision's weights API
    for name, weights in (("alexnet", "AlexNet_Weights.IMAGENET1K_V1"),
                          ("inception", "Inception_V3_Weights.IMAGENET1K_V1"),
                          ("efficientnet", "EfficientNet_B1_Weights.IMAGENET1K_V2")):
        url = torchvision.models.get_weight(weights).url
        assert NETWORKS[name]["file"] == url.rsplit("/", 1)[1]
    with pytest.raises(ValueError, match="vgg"):
        weights_status({"vgg": "x.pth"})


def test_without_weights_only_pixel_metrics_and_no_values_made_up(torch_home):
    true = colour_images(6)
    recon = np.clip(true + 0.1, 0, 1)
    per_image, summary = field_metrics({"pca": recon}, true, list("abcdef"), n_boot=100)
    assert set(summary["methods"]["pca"]) == {"pixcorr", "ssim"}
    assert not any(s["found"] for s in summary["networks"].values())
    assert set(per_image["metric"]) == {"pixcorr", "ssim"}


def test_pixcorr_and_ssim_at_the_papers_resolution(torch_home):
    true = colour_images(5, size=12)
    recon = np.clip(true + 0.2 * np.random.default_rng(0).standard_normal(true.shape), 0, 1)
    train = colour_images(9, size=12, seed=4)
    per_image, summary = field_metrics({"m": recon}, true, list("abcde"), train_images=train, n_boot=100)
    # as the papers: torchvision Resize(425) of the tensors, RGB pixels flattened
    big = lambda x: TF.resize(torch.as_tensor(x, dtype=torch.float32).permute(0, 3, 1, 2), 425,  # noqa: E731
                              antialias=True).flatten(1).numpy()
    expected = [np.corrcoef(a, b)[0, 1] for a, b in zip(big(recon), big(true))]
    pix = per_image[per_image["metric"] == "pixcorr"]
    np.testing.assert_allclose(pix["value"], expected, atol=1e-6)
    assert resize(true, PIXEL_SIZE).shape == (5, 425, 425, 3)
    assert set(summary["methods"]["m"]["pixcorr"]["baselines"]) == {"mean_image", "retrieval", "shuffled"}
    assert summary["methods"]["m"]["ssim"]["chance"] == summary["methods"]["m"]["ssim"]["baselines"]["shuffled"]["mean"]


def _mindeye_two_way(recon, true, model, size, layer):
    # MindEye's two_way_identification: r = corrcoef(reals, preds); a prediction wins
    # against every real image less correlated with it than its own
    prep = lambda x: TF.normalize(TF.resize(torch.as_tensor(x, dtype=torch.float32).permute(0, 3, 1, 2),  # noqa: E731
                                            size, antialias=True), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    with torch.no_grad():
        preds = model(prep(recon))[layer].flatten(1).numpy()
        reals = model(prep(true))[layer].flatten(1).numpy()
    r = np.corrcoef(reals, preds)[: len(true), len(true):]
    success = r < np.diag(r)
    return success.sum(0) / (len(true) - 1)


@pytest.mark.slow
def test_alexnet_identification_agrees_with_the_papers_code(torch_home):
    model = save_random("alexnet", torch_home / "alexnet-owt-7be5be79.pth", seed=1)
    true = colour_images(8, size=16)
    rng = np.random.default_rng(1)
    recon = np.clip(true + 0.3 * rng.standard_normal(true.shape), 0, 1)
    per_image, summary = field_metrics({"m": recon, "self": true}, true, list("abcdefgh"), n_boot=200)
    extractor = create_feature_extractor(model.eval(), return_nodes=["features.4", "features.11"])
    for key, layer in (("alexnet2", "features.4"), ("alexnet5", "features.11")):
        got = per_image[(per_image["metric"] == key) & (per_image["method"] == "m")]["value"]
        np.testing.assert_allclose(got, _mindeye_two_way(recon, true, extractor, 256, layer), atol=1e-12)
        # the images themselves are identified perfectly
        assert summary["methods"]["self"][key]["mean"] == 1.0
        assert summary["methods"]["m"][key]["chance"] == 0.5
    assert summary["networks"]["alexnet"]["found"] and "provenance" in summary["networks"]["alexnet"]
    assert "inception" not in summary["methods"]["m"]  # no weights: no value


@pytest.mark.slow
def test_swav_checkpoint_with_its_head_and_distance_metric(torch_home):
    path = torch_home / "swav_800ep_pretrain.pth.tar"
    model = save_random("resnet50", path, seed=2, prefix="module.")
    state = torch.load(path)
    del state["module.fc.weight"], state["module.fc.bias"]
    state["module.projection_head.0.weight"] = torch.zeros(4, 4)
    torch.save(state, path)
    true = colour_images(4, size=16)
    recon = np.clip(true[::-1] + 0.05, 0, 1)
    per_image, summary = field_metrics({"m": recon, "self": true}, true, list("abcd"), n_boot=100)
    entry = summary["methods"]["self"]["swav"]
    assert entry["mean"] == pytest.approx(0.0, abs=1e-6)  # distance of an image to itself
    # reference: 1 - r of the avgpool features (Brain-Diffuser: scipy correlation distance)
    extractor = create_feature_extractor(model.eval(), return_nodes=["avgpool"])
    prep = lambda x: TF.normalize(TF.resize(torch.as_tensor(x.copy(), dtype=torch.float32).permute(0, 3, 1, 2),  # noqa: E731
                                            224, antialias=True), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    with torch.no_grad():
        a = extractor(prep(recon))["avgpool"].flatten(1).numpy()
        b = extractor(prep(true))["avgpool"].flatten(1).numpy()
    from scipy.spatial.distance import correlation
    got = per_image[(per_image["metric"] == "swav") & (per_image["method"] == "m")]["value"]
    np.testing.assert_allclose(got, [correlation(x, y) for x, y in zip(a, b)], atol=1e-6)
    # a file of another network is refused, said, and leaves the column empty
    torch.save({"conv.weight": torch.zeros(1)}, path)
    _, summary = field_metrics({"m": recon}, true, list("abcd"), n_boot=100)
    assert "not a SwAV ResNet-50 checkpoint" in summary["networks"]["swav"]["error"]
    assert "swav" not in summary["methods"]["m"]


class _TinyClip(torch.nn.Module):
    """A scripted stand-in with CLIP's interface (encode_image) and, like OpenAI's
    GPU-traced archive, a cast of its input to the GPU in half precision."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Conv2d(3, 8, 14, stride=14)

    def forward(self, x):
        return self.encode_image(x)

    @torch.jit.export
    def encode_image(self, x):
        x = x.to(device=torch.device("cuda"), dtype=torch.float16)
        return self.proj(x.float()).flatten(1)


def test_clip_reads_a_torchscript_archive_at_a_config_path(torch_home, tmp_path):
    # the archive's GPU and float16 constants are patched to the CPU and float32 before
    # its first call (as the clip package does), else it fails here without a GPU
    torch.manual_seed(0)
    path = tmp_path / "my_clip.pt"
    torch.jit.script(_TinyClip()).save(str(path))
    true = colour_images(5, size=16)
    _, summary = field_metrics({"self": true}, true, list("abcde"), networks={"clip": str(path)}, n_boot=100)
    assert summary["networks"]["clip"]["path"] == str(path)
    assert summary["methods"]["self"]["clip"]["mean"] == 1.0
    assert FIELD_METRICS["clip"]["size"] == 224


@pytest.mark.slow
def test_inception_and_efficientnet_run_at_their_resolutions(torch_home):
    save_random("inception_v3", torch_home / "inception_v3_google-0cc3c7bd.pth", seed=3)
    save_random("efficientnet_b1", torch_home / "efficientnet_b1-c27df63c.pth", seed=3)
    true = colour_images(4, size=16)
    _, summary = field_metrics({"self": true}, true, list("abcd"), n_boot=100)
    assert summary["methods"]["self"]["inception"]["mean"] == 1.0
    assert summary["methods"]["self"]["effnet"]["mean"] == pytest.approx(0.0, abs=1e-6)


def test_without_weights_torch_is_not_even_imported(tmp_path):
    # a run without network weights (the demo) spends no time loading torch
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from fmrirecon.perceptual_metrics import field_metrics\n"
            "x = np.random.default_rng(0).random((4, 8, 8, 1))\n"
            "field_metrics({'m': x}, x, list('abcd'), n_boot=50)\n"
            "print('torch' in sys.modules)\n")
    env = {**__import__("os").environ, "TORCH_HOME": str(tmp_path), "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
