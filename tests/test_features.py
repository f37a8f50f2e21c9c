"""Deep features: the extractor, HDF5 storage and locally trained weights."""

import json

import numpy as np
import pytest
import torch

from conftest import smooth_images
from fmrirecon.features import (FeatureExtractor, extract_features, feature_identification,
                                feature_similarity, read_feature_attrs, read_features, train_small_network,
                                write_features)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def extractor(one_torch_thread):
    return FeatureExtractor("smallconv", input_size=16)


def test_extractor_shapes_gray_and_rgb(extractor):
    gray = smooth_images(3, size=16)
    out = extract_features(gray, extractor)
    assert list(out) == extractor.layers == ["relu1", "relu2", "relu3", "relu4", "fc5"]
    shapes = extractor.layer_shapes()
    for name, values in out.items():
        assert values.shape == (3, int(np.prod(shapes[name])))
        assert values.dtype == np.float32
    # Gray is repeated to RGB inside: the same image as RGB gives the same features.
    rgb = extract_features(np.repeat(gray, 3, axis=-1), extractor)
    np.testing.assert_allclose(rgb["relu3"], out["relu3"], rtol=1e-5, atol=1e-6)
    # Images of another size are resized to the input size.
    big = extract_features(smooth_images(2, size=24), extractor)
    assert big["relu1"].shape[1] == out["relu1"].shape[1]


def test_extractor_is_seeded_frozen_and_differentiable(extractor):
    again = FeatureExtractor("smallconv", input_size=16)
    other = FeatureExtractor("smallconv", input_size=16, seed=1)
    x = torch.from_numpy(smooth_images(2, size=16)).permute(0, 3, 1, 2)
    a, b, c = extractor(x)["relu2"], again(x)["relu2"], other(x)["relu2"]
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert "random init (seed 0)" in extractor.provenance
    extractor.train()
    assert not extractor.training and not any(p.requires_grad for p in extractor.parameters())
    x.requires_grad_(True)
    extractor(x)["fc5"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_bad_layers_and_offline_weights_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="not nodes of smallconv"):
        FeatureExtractor("smallconv", layers=["conv9"])
    with pytest.raises(ValueError, match="not 'smallconv' nor a torchvision model"):
        FeatureExtractor("nonet")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        FeatureExtractor("smallconv", weights=str(tmp_path / "missing.pt"))


def test_torchvision_network_by_name():
    fe = FeatureExtractor("alexnet", layers=["features.1", "classifier.6"])
    out = extract_features(smooth_images(1, size=16), fe)
    assert out["features.1"].shape == (1, 64 * 55 * 55) and out["classifier.6"].shape == (1, 1000)
    assert fe.provenance.startswith("alexnet, random init")


def test_hdf5_roundtrip(tmp_path, extractor):
    feats = extract_features(smooth_images(4, size=16), extractor)
    path = tmp_path / "f.h5"
    write_features(path, feats, {"provenance": extractor.provenance, "stim_file": list("abcd"),
                                 "shapes": {"fc5": [10]}})
    back = read_features(path)
    assert list(back) == list(feats)
    for name in feats:
        np.testing.assert_array_equal(back[name], feats[name])
    assert list(read_features(path, ["fc5"])) == ["fc5"]
    attrs = read_feature_attrs(path)
    assert attrs["stim_file"] == list("abcd") and json.loads(attrs["shapes"]) == {"fc5": [10]}
    with pytest.raises(KeyError, match="no layers"):
        read_features(path, ["conv9"])


def test_train_small_network_and_load_checkpoint(tmp_path):
    # Two separable classes: bright-top vs bright-bottom (survive the flip augmentation).
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 0.3, (64, 16, 16, 3)).astype(np.float32)
    labels = np.array(["top", "bottom"] * 32)
    images[labels == "top", :8] += 0.6
    images[labels == "bottom", 8:] += 0.6
    out = tmp_path / "smallconv.pt"
    model, meta = train_small_network(images, labels, out, epochs=8, batch_size=16, lr=5e-3,
                                      width=8, val_fraction=0.25, source="halves")
    assert meta["val_accuracy"] >= 0.9
    assert "trained locally on halves" in meta["provenance"]
    fe = FeatureExtractor("smallconv", weights=str(out), input_size=16)
    assert fe.provenance == meta["provenance"]
    x = torch.from_numpy(images[:4]).permute(0, 3, 1, 2)
    with torch.no_grad():
        expected = model(fe.preprocess(x))
    torch.testing.assert_close(fe(x)["fc5"], expected)


def test_feature_identification(extractor):
    images = smooth_images(6, size=16, seed=2)
    ident = feature_identification(images, images, extractor)
    assert all(np.all(v == 1.0) for v in ident.values())


def test_feature_similarity_matches_a_direct_computation(extractor):
    recon = smooth_images(5, size=16, seed=7)
    true = smooth_images(4, size=16, seed=8)
    reference = smooth_images(30, size=16, seed=9)
    sim = feature_similarity(recon, true, extractor, reference=reference)
    # Reference: z-score each unit with the reference images, numpy's corrcoef per layer.
    a, b, r = (extract_features(x, extractor) for x in (recon, true, reference))
    expected = []
    for name in extractor.layers:
        mean, sd = r[name].mean(0), r[name].std(0)
        sd[sd == 0] = 1.0
        za, zb = (a[name] - mean) / sd, (b[name] - mean) / sd
        expected.append(np.corrcoef(za, zb)[:5, 5:])
    np.testing.assert_allclose(sim, np.mean(expected, 0), atol=1e-6)
    # Each image is most similar to itself.
    self_sim = feature_similarity(true, true, extractor, reference=reference)
    assert np.all(np.argmax(self_sim, axis=1) == np.arange(4))


def test_dir_and_selfsup_share_a_trained_network_and_its_accuracy(tmp_path):
    from fmrirecon.features import network_summary
    from fmrirecon.methods import input_files, network_training

    training = {"folder": "cifar", "epochs": 2}
    methods = {"dir": {"train_network": training},
               "sspairs": {"method": "selfsup", "cycles": False, "train_network": training},
               "pca": {"n_components": 5}}
    assert network_training(methods, "smallconv") == training
    # each method declares the files it needs
    where = {"features": tmp_path, "generator": tmp_path / "g.pt", "unpaired_sets": {},
             "unpaired_root": tmp_path}
    assert input_files("dir", methods["dir"], where) == {"weights": tmp_path / "smallconv_weights.pt"}
    assert input_files("sspairs", methods["sspairs"], where) == {
        "perceptual_weights": tmp_path / "smallconv_weights.pt"}
    assert input_files("pca", methods["pca"], where) == {}
    assert input_files("vae", {"method": "latent"}, where) == {"generator": tmp_path / "g.pt"}
    assert input_files("dirgen", {"method": "dir", "prior": "generator"}, where) == {
        "generator": tmp_path / "g.pt"}
    with pytest.raises(ValueError, match="different train_network"):
        network_training({**methods, "dir": {"train_network": {**training, "epochs": 3}}}, "smallconv")
    with pytest.raises(ValueError, match="no method trains"):
        network_training({"pca": {}}, "smallconv")

    # The held-out accuracy of the sidecar, as a metric with a Wilson interval.
    weights = tmp_path / "smallconv_weights.pt"
    assert network_summary(weights) == {}  # no sidecar: random or external weights
    (tmp_path / "smallconv_weights.pt.json").write_text(json.dumps(
        {"val_accuracy": 0.6, "n_val": 1000, "classes": list("abcdefghij")}))
    entry = network_summary(weights)
    assert entry["mean"] == 0.6 and entry["chance"] == pytest.approx(0.1)
    assert 0.56 < entry["ci_low"] < 0.6 < entry["ci_high"] < 0.64


def _labelled_folder(root, n: int):
    """An image folder of ``n`` random 16 px images, labels.tsv column ``cls`` (a, b)."""
    import pandas as pd
    from PIL import Image

    folder = root / "labelled"
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = [f"images/{i:02d}.png" for i in range(n)]
    for f in files:
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(folder / f)
    pd.DataFrame({"file": files, "cls": ["a", "b"] * (n // 2)}).to_csv(
        folder / "labels.tsv", sep="\t", index=False)
    return folder, files


def test_feature_network_leaves_the_study_images_out(tmp_path):
    import pandas as pd

    from fmrirecon.features import train_feature_network

    folder, files = _labelled_folder(tmp_path, 12)
    stimuli = tmp_path / "stimuli" / "stimuli.tsv"
    stimuli.parent.mkdir()
    pd.DataFrame({"stim_file": ["s1.png", "s2.png"], "source_file": files[:2]}).to_csv(
        stimuli, sep="\t", index=False)
    settings = {"column": "cls", "size": 16, "epochs": 1, "width": 4, "exclude_stimuli": True}
    meta = train_feature_network(folder, settings, 0, tmp_path / "net.pt",
                                 stimuli_dir=stimuli.parent)
    # 12 images minus the 2 shown, 10% of those held out for the accuracy
    assert meta["n_train"] + round(0.1 * 10) == 10
    assert "without the study's images" in meta["provenance"]
    pd.DataFrame({"stim_file": ["s1.png"]}).to_csv(stimuli, sep="\t", index=False)
    with pytest.raises(ValueError, match=f"{stimuli}: .*source_file"):
        train_feature_network(folder, settings, 0, tmp_path / "net2.pt",
                              stimuli_dir=stimuli.parent)


def test_simulated_brain_network_features(tmp_path):
    from fmrirecon.simulate import study_plan, write_stimuli
    from fmrirecon.simulate.higher import brain_features, brain_network_seed, read_brain_features

    folder, _ = _labelled_folder(tmp_path, 20)
    cfg = {"seed": 4, "image_size": 16, "n_train": 10, "n_train_repeated": 0, "n_test": 3}
    write_stimuli(cfg, tmp_path / "bids")
    higher = {"train_network": {"folder": str(folder), "column": "cls", "size": 16, "epochs": 1,
                                "width": 4}}
    meta = brain_features(tmp_path / "bids" / "stimuli", higher, 4, 16, 1, tmp_path / "brain.pt",
                          tmp_path / "brain.h5")
    assert meta["seed"] == brain_network_seed(4) != 4
    stimuli = study_plan(cfg)["stimuli"]
    features = read_brain_features(tmp_path / "brain.h5", stimuli, "relu4")
    # The rows are the stimuli, through the trained network (relu4 has 128 units).
    from fmrirecon.features import FeatureExtractor, extract_features
    from fmrirecon.images import load_images

    extractor = FeatureExtractor("smallconv", ["relu4"], str(tmp_path / "brain.pt"))
    images = load_images([tmp_path / "bids" / "stimuli" / s for s in stimuli], 16, 1)
    np.testing.assert_allclose(features, extract_features(images, extractor)["relu4"], atol=1e-6)
    assert features.shape == (13, 128) and features.std(axis=0).max() > 0
