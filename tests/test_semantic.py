"""Encoder quality vs noise ceiling, deep-feature similarity and semantic classification."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import smooth_images
from fmrirecon.evaluation import identification_2way, similarity_matrix
from fmrirecon.semantic import (class_prototypes, deep_feature_metric, encoder_quality,
                                feature_correlation, prototypes_from_folder,
                                semantic_classification, unseen_mask)


def test_encoder_quality_per_voxel_r_and_ceiling_summary():
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((60, 5))
    measured = signal + 0.5 * rng.standard_normal((60, 5))
    predicted = signal.copy()
    predicted[:, 4] = rng.standard_normal(60)  # one voxel the encoder misses
    r, summary = encoder_quality(predicted, measured, noise_ceiling=np.full(5, 80.0))
    assert r.shape == (5,)
    assert np.all(r[:4] > 0.8) and abs(r[4]) < 0.4
    assert summary["n_voxels"] == 5 and summary["median_r"] == pytest.approx(np.median(r))
    assert summary["ceiling_r"] == pytest.approx(np.sqrt(0.8))
    # A perfect model of the signal explains about the ceiling's share of variance.
    assert 0.8 < summary["median_fraction_of_ceiling"] < 1.2
    with pytest.raises(ValueError, match="same"):
        encoder_quality(predicted[:, :3], measured)
    with pytest.raises(ValueError, match="noise_ceiling"):
        encoder_quality(predicted, measured, noise_ceiling=np.ones(3))


def test_class_prototypes_are_class_means_for_arrays_and_layer_dicts():
    feats = np.array([[0.0, 2], [2, 0], [10, 10], [5, 5]])
    protos, names = class_prototypes(feats, ["b", "b", "a", "c"])
    assert list(names) == ["a", "b", "c"]
    np.testing.assert_allclose(protos["features"], [[10, 10], [1, 1], [5, 5]])
    protos, _ = class_prototypes({"l1": feats, "l2": feats * 2}, ["b", "b", "a", "c"])
    np.testing.assert_allclose(protos["l2"][1], [2, 2])


def _clustered(n_classes=50, per_class=4, dim=64, noise=0.8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, dim))
    labels = np.repeat([f"c{i:03d}" for i in range(n_classes)], per_class)
    codes = np.repeat(np.arange(n_classes), per_class)
    return centres, centres[codes] + noise * rng.standard_normal((len(codes), dim)), labels


def test_semantic_classification_above_chance_with_signal_and_at_chance_without():
    centres, feats, labels = _clustered()
    names = np.array([f"c{i:03d}" for i in range(50)])
    per_item, summary = semantic_classification(feats, labels, centres, names, k=(1, 5),
                                                n_boot=500, seed=0)
    assert summary["n_classes"] == 50 and summary["n_items"] == 200
    assert summary["top1"]["chance"] == pytest.approx(0.02)
    assert summary["top5"]["chance"] == pytest.approx(0.1)
    assert summary["top1"]["ci_low"] > 0.5 and summary["top5"]["mean"] >= summary["top1"]["mean"]
    assert set(per_item.columns) == {"label", "predicted", "rank", "top1", "top5"}
    assert (per_item["rank"] >= 1).all()

    noise = np.random.default_rng(1).standard_normal(feats.shape)
    _, chance = semantic_classification(noise, labels, centres, names, n_boot=500)
    assert chance["top5"]["ci_low"] < 0.1 < chance["top5"]["ci_high"] + 0.05
    assert chance["top1"]["mean"] < 0.08


def test_semantic_classification_ties_and_bad_input():
    protos = np.array([[1.0, 2, 3], [1, 2, 3], [3, 2, 1]])  # classes a and b identical
    feats = np.array([[1.0, 2, 3.5]])
    per_item, summary = semantic_classification(feats, ["a"], protos, ["a", "b", "c"],
                                                k=(1, 2), n_boot=100)
    assert per_item["top1"][0] == 0.5 and per_item["top2"][0] == 1.0
    assert per_item["rank"][0] == 1.5
    with pytest.raises(ValueError, match="without a prototype"):
        semantic_classification(feats, ["z"], protos, ["a", "b", "c"])
    with pytest.raises(ValueError, match="layers"):
        semantic_classification({"x": feats}, ["a"], {"y": protos}, ["a", "b", "c"])


def test_unseen_mask():
    np.testing.assert_array_equal(unseen_mask(["a", "b", "c"], ["b", "d"]), [True, False, True])


def test_deep_feature_metric_identifies_images_by_their_own_features():
    from fmrirecon.features import FeatureExtractor

    extractor = FeatureExtractor("smallconv", layers=["relu2", "relu3"], seed=0)
    images = smooth_images(12, size=16)
    sim = similarity_matrix(images, images, metric=deep_feature_metric(extractor))
    assert sim.shape == (12, 12)
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-5)
    assert identification_2way(sim).mean() == 1.0
    noisy = np.clip(images + 0.05 * np.random.default_rng(0).standard_normal(images.shape), 0, 1)
    assert identification_2way(similarity_matrix(noisy, images, deep_feature_metric(extractor))).mean() > 0.9
    a = {"l": np.eye(3)}
    np.testing.assert_allclose(feature_correlation(a, a), np.corrcoef(np.eye(3)))


def test_prototypes_from_folder_excludes_files_and_caps_classes(tmp_path):
    from fmrirecon.features import FeatureExtractor

    (tmp_path / "images").mkdir()
    rows = []
    rng = np.random.default_rng(0)
    for cls, level in (("dark", 40), ("light", 200)):
        for i in range(4):
            arr = np.clip(level + 20 * rng.standard_normal((20, 20)), 0, 255).astype(np.uint8)
            name = f"images/{cls}_{i}.png"
            Image.fromarray(arr).save(tmp_path / name)
            rows.append({"file": name, "wnid": cls})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.tsv", sep="\t", index=False)
    extractor = FeatureExtractor("smallconv", layers=["relu3"], seed=0)
    protos, names, counts = prototypes_from_folder(
        tmp_path, extractor, size=16, channels=1, exclude=["images/dark_0.png"], max_per_class=3)
    assert list(names) == ["dark", "light"] and list(counts) == [3, 3]
    assert protos["relu3"].shape[0] == 2
    with pytest.raises(ValueError, match="no column 'class_index'"):
        prototypes_from_folder(tmp_path, extractor, 16, 1, label_column="class_index")
