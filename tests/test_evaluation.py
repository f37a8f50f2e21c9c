"""Reconstruction metrics: correlations, SSIM, identification, bootstrap, file round trip."""

import json
import math
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity

from conftest import smooth_images
from fmrirecon.evaluation import (
    bootstrap_ci,
    correlation_matrix,
    evaluate,
    identification_2way,
    identification_nway,
    identification_summary,
    mean_image_baseline,
    nearest_training_image,
    pixcorr,
    read_metrics,
    read_summary,
    shuffled_scores,
    similarity_matrix,
    ssim,
    write_evaluation,
)


def noisy(images, sd, seed=1):
    rng = np.random.default_rng(seed)
    return np.clip(images + sd * rng.standard_normal(images.shape), 0, 1)


# --- pixel correlation ----------------------------------------------------------------


def test_pixcorr_self_and_negative():
    images = smooth_images(4, size=10)
    np.testing.assert_allclose(pixcorr(images, images), 1.0, atol=1e-12)
    np.testing.assert_allclose(pixcorr(1 - images, images), -1.0, atol=1e-12)


def test_pixcorr_matches_corrcoef_rgb():
    rng = np.random.default_rng(0)
    a, b = rng.random((5, 8, 8, 3)), rng.random((5, 8, 8, 3))
    expected = [np.corrcoef(x.ravel(), y.ravel())[0, 1] for x, y in zip(a, b)]
    np.testing.assert_allclose(pixcorr(a, b), expected, atol=1e-12)


def test_pixcorr_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        pixcorr(np.zeros((2, 8, 8, 1)), np.zeros((2, 8, 9, 1)))


def test_similarity_matrix_pixcorr_and_callable():
    rng = np.random.default_rng(0)
    a, b = rng.random((6, 8, 8, 1)), rng.random((6, 8, 8, 1))
    sim = similarity_matrix(a, b)
    full = np.corrcoef(a.reshape(6, -1), b.reshape(6, -1))[:6, 6:]
    np.testing.assert_allclose(sim, full, atol=1e-12)
    np.testing.assert_allclose(np.diag(sim), pixcorr(a, b), atol=1e-12)
    # A callable gets the arrays as given: deep features of another shape work.
    fa, fb = rng.random((6, 20)), rng.random((6, 20))
    np.testing.assert_allclose(similarity_matrix(fa, fb, metric=correlation_matrix),
                               np.corrcoef(fa, fb)[:6, 6:], atol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        similarity_matrix(fa, fb, metric=lambda x, y: np.zeros((6, 5)))
    with pytest.raises(ValueError, match="unknown metric"):
        similarity_matrix(fa, fb, metric="cosine")


# --- SSIM -----------------------------------------------------------------------------


def test_ssim_matches_skimage_gray_and_rgb():
    rng = np.random.default_rng(0)
    true = rng.random((3, 32, 32, 3))
    recon = noisy(true, 0.2)
    settings = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                    data_range=1.0)
    expected = [structural_similarity(rgb2gray(r), rgb2gray(t), **settings)
                for r, t in zip(recon, true)]
    np.testing.assert_allclose(ssim(recon, true), expected, rtol=1e-12)
    gray_t, gray_r = true[..., :1], recon[..., :1]
    expected = [structural_similarity(r[..., 0], t[..., 0], **settings)
                for r, t in zip(gray_r, gray_t)]
    np.testing.assert_allclose(ssim(gray_r, gray_t), expected, rtol=1e-12)


@pytest.mark.parametrize("size", [10, 32])
def test_ssim_identical_is_one_and_falls_with_noise(size):
    true = smooth_images(3, size=size)
    np.testing.assert_allclose(ssim(true, true), 1.0, atol=1e-9)
    values = [ssim(noisy(true, sd), true) for sd in (0.02, 0.1, 0.3)]
    assert np.all(values[0] > values[1]) and np.all(values[1] > values[2])


def test_ssim_too_small():
    with pytest.raises(ValueError, match="3 x 3"):
        ssim(np.zeros((1, 2, 2, 1)), np.zeros((1, 2, 2, 1)))


# --- identification -------------------------------------------------------------------


def test_identification_perfect_reconstructions():
    true = smooth_images(30, size=12)
    sim = similarity_matrix(noisy(true, 0.01), true)
    np.testing.assert_array_equal(identification_2way(sim), 1.0)
    for n_way in (2, 5, 10):
        np.testing.assert_array_equal(identification_nway(sim, n_way, n_draws=200, rng=0), 1.0)


def test_identification_random_at_chance():
    # For unrelated images each row's rank of S[i, i] is uniform, so mean ident2 has
    # SD ~ sqrt(1 / (12 n)) = 0.029 and mean 5-way ~ 0.027 for n = 100; allow ~4 SD.
    rng = np.random.default_rng(3)
    n = 100
    sim = similarity_matrix(rng.random((n, 8, 8, 1)), rng.random((n, 8, 8, 1)))
    assert abs(identification_2way(sim).mean() - 0.5) < 0.12
    for n_way, tol in ((5, 0.1), (10, 0.08)):
        acc = identification_nway(sim, n_way, n_draws=300, rng=1)
        assert abs(acc.mean() - 1 / n_way) < tol


def test_identification_ties_count_half():
    sim = np.array([[1.0, 1.0, 0.0],
                    [0.0, 1.0, 2.0],
                    [0.5, 0.5, 0.5]])
    np.testing.assert_allclose(identification_2way(sim), [0.75, 0.5, 0.5])
    # Row 2 ties with every distractor: 1/2 for 2-way, 1/3 for 3-way, in every draw.
    assert identification_nway(sim, 2, n_draws=50, rng=0)[2] == 0.5
    assert identification_nway(sim, 3, n_draws=50, rng=0)[2] == pytest.approx(1 / 3)
    # Row 0 wins one 2-way draw in two and ties the other: 0.75 in expectation.
    assert identification_nway(sim, 2, n_draws=20000, rng=0)[0] == pytest.approx(0.75, abs=0.02)


def test_identification_nway_matches_exact_probability():
    # Without ties, image i wins iff all n_way - 1 distractors come from the images it
    # beats: probability C(lower, k) / C(n - 1, k). Check it against brute force too.
    rng = np.random.default_rng(5)
    n, n_way = 8, 4
    sim = rng.standard_normal((n, n))
    lower = (sim < np.diag(sim)[:, None]).sum(axis=1)
    exact = np.array([math.comb(int(k), n_way - 1) / math.comb(n - 1, n_way - 1) for k in lower])
    brute = np.array([
        np.mean([sim[i, i] > sim[i, list(d)].max()
                 for d in combinations([j for j in range(n) if j != i], n_way - 1)])
        for i in range(n)
    ])
    np.testing.assert_allclose(brute, exact)
    acc = identification_nway(sim, n_way, n_draws=20000, rng=0)
    np.testing.assert_allclose(acc, exact, atol=0.015)


def test_identification_nway_more_than_images_is_nan():
    sim = np.eye(4)
    acc = identification_nway(sim, 5, rng=0)
    assert acc.shape == (4,) and np.isnan(acc).all()
    with pytest.raises(ValueError, match="at least 2"):
        identification_nway(sim, 1)


def test_identification_nway_deterministic():
    sim = np.random.default_rng(0).standard_normal((20, 20))
    a = identification_nway(sim, 5, n_draws=100, rng=7)
    np.testing.assert_array_equal(a, identification_nway(sim, 5, n_draws=100, rng=7))
    assert not np.array_equal(a, identification_nway(sim, 5, n_draws=100, rng=8))


# --- bootstrap ------------------------------------------------------------------------


def test_bootstrap_ci_contains_mean_and_shrinks():
    rng = np.random.default_rng(0)
    small, large = rng.normal(0.3, 1, 20), rng.normal(0.3, 1, 2000)
    lo_s, hi_s = bootstrap_ci(small, rng=0)
    lo_l, hi_l = bootstrap_ci(large, rng=0)
    assert lo_s < small.mean() < hi_s
    assert lo_l < large.mean() < hi_l
    # Width scales as 1 / sqrt(n): 10 times narrower for 100 times more items.
    assert (hi_l - lo_l) < 0.2 * (hi_s - lo_s)
    assert (hi_l - lo_l) == pytest.approx(2 * 1.96 / np.sqrt(2000), rel=0.15)


def test_bootstrap_ci_deterministic_and_drops_nan():
    values = np.random.default_rng(1).random(50)
    assert bootstrap_ci(values, rng=3) == bootstrap_ci(values, rng=3)
    assert bootstrap_ci(values, rng=3) != bootstrap_ci(values, rng=4)
    with_nan = np.concatenate([values, [np.nan, np.nan]])
    assert bootstrap_ci(with_nan, rng=3) == bootstrap_ci(values, rng=3)
    assert all(math.isnan(v) for v in bootstrap_ci([np.nan], rng=0))


# --- evaluate and files ---------------------------------------------------------------


def _same(got, want, where=""):
    # summary entries equal, NaN == NaN, nested baselines too
    assert got.keys() == want.keys(), where
    for key, value in want.items():
        if isinstance(value, dict):
            _same(got[key], value, f"{where}.{key}")
        elif value is None:
            assert got[key] is None, f"{where}.{key}"
        elif math.isnan(value):
            assert math.isnan(got[key]), f"{where}.{key}"
        else:
            assert got[key] == value, f"{where}.{key}"  # JSON keeps full float precision


def test_evaluate_write_read_round_trip(tmp_path):
    true = smooth_images(12, size=10)
    recon = noisy(true, 0.1)
    stims = [f"img{i:02d}.png" for i in range(12)]
    per_image, summary = evaluate(recon, true, stims, n_way=(2, 5, 20), n_boot=500, seed=0)

    assert list(per_image.columns) == ["stim_file", "pixcorr", "ssim", "ident2", "nway2", "nway5",
                                       "nway20", "pixcorr_shuffled", "ssim_shuffled"]
    assert per_image["stim_file"].tolist() == stims
    np.testing.assert_allclose(per_image["pixcorr"], pixcorr(recon, true))
    assert set(summary) == {"pixcorr", "ssim", "ident2", "nway", "images"}
    assert summary["images"] == {"n": 12, "height": 10, "width": 10, "channels": 1, "n_train": None,
                                  "in_training": None}
    assert set(summary["nway"]) == {"2", "5", "20"}
    entries = [summary[m] for m in ("pixcorr", "ssim", "ident2")] + list(summary["nway"].values())
    for entry in entries:
        assert set(entry) == {"mean", "ci_low", "ci_high", "chance", "baselines"}
    # chance of PixCorr and SSIM: the reconstructions against the wrong images
    for metric in ("pixcorr", "ssim"):
        assert summary[metric]["chance"] == summary[metric]["baselines"]["shuffled"]["mean"]
        assert summary[metric]["chance"] == pytest.approx(per_image[f"{metric}_shuffled"].mean())
    assert summary["ident2"]["chance"] == 0.5 and summary["nway"]["5"]["chance"] == 0.2
    assert summary["pixcorr"]["mean"] == pytest.approx(per_image["pixcorr"].mean())
    assert summary["nway"]["5"]["mean"] == pytest.approx(per_image["nway5"].mean())
    pix = summary["pixcorr"]
    assert pix["ci_low"] < pix["mean"] < pix["ci_high"]
    assert math.isnan(summary["nway"]["20"]["mean"])  # 20 > 12 images

    tsv, js = tmp_path / "eval" / "m.tsv", tmp_path / "eval" / "s.json"
    write_evaluation(per_image, summary, tsv, js)
    raw = json.loads(js.read_text())  # strict JSON: NaN written as null
    assert raw["nway"]["20"]["mean"] is None
    back = read_summary(js)
    assert back.keys() == summary.keys() and back["nway"].keys() == summary["nway"].keys()
    assert back["images"] == summary["images"]
    for metric in ("pixcorr", "ssim", "ident2"):
        _same(back[metric], summary[metric], metric)
    for n in summary["nway"]:
        _same(back["nway"][n], summary["nway"][n], n)
    pd.testing.assert_frame_equal(read_metrics(tsv), per_image)
    assert tsv.read_text().splitlines()[0].startswith("stim_file\tpixcorr\tssim\tident2\tnway2")


# --- baselines ------------------------------------------------------------------------


def test_baselines_agree_with_direct_computation():
    true = smooth_images(10, size=12)
    train = smooth_images(25, size=12, seed=7)
    recon = noisy(true, 0.2)
    stims, train_stims = [f"t{i}" for i in range(10)], [f"a{i}" for i in range(25)]
    per_image, summary = evaluate(recon, true, stims, n_way=(2, 5), n_boot=300, seed=1,
                                  train_images=train, train_stim_files=train_stims)
    # mean image: the mean training image against each shown image
    mean = train.astype(np.float64).mean(axis=0).ravel()
    direct = [np.corrcoef(mean, t.ravel())[0, 1] for t in true]
    np.testing.assert_allclose(per_image["pixcorr_mean_image"], direct, atol=1e-10)
    np.testing.assert_allclose(mean_image_baseline(train, 3)[2], train.mean(axis=0), rtol=1e-6)
    # retrieval: the training image with the highest pixel correlation to each reconstruction
    nearest = [np.argmax([np.corrcoef(r.ravel(), a.ravel())[0, 1] for a in train]) for r in recon]
    assert per_image["retrieved"].tolist() == [train_stims[k] for k in nearest]
    np.testing.assert_allclose(per_image["pixcorr_retrieval"],
                               [np.corrcoef(train[k].ravel(), t.ravel())[0, 1] for k, t in zip(nearest, true)],
                               atol=1e-10)
    np.testing.assert_allclose(per_image["ssim_retrieval"], ssim(train[nearest], true))
    # shuffled: each reconstruction against every other image
    shuffled = [np.mean([np.corrcoef(recon[i].ravel(), true[j].ravel())[0, 1]
                         for j in range(10) if j != i]) for i in range(10)]
    np.testing.assert_allclose(per_image["pixcorr_shuffled"], shuffled, atol=1e-10)
    entry = summary["pixcorr"]["baselines"]
    assert set(entry) == {"mean_image", "retrieval", "shuffled"}
    assert entry["mean_image"]["mean"] == pytest.approx(np.mean(direct))
    assert set(summary["ident2"]["baselines"]) == {"mean_image", "retrieval"}


def test_recall_of_training_images_shows_in_the_retrieval_baseline():
    # Test images that were also training images (Miyawaki's public split): returning
    # the nearest training image is perfect, a warning the report must carry.
    train = smooth_images(15, size=10, seed=3)
    true = train[:6]
    recon = noisy(true, 0.3)
    per_image, summary = evaluate(recon, true, list("abcdef"), n_way=(2,), n_boot=200,
                                  train_images=train, train_stim_files=list("abcdefghijklmno"))
    assert per_image["retrieved"].tolist() == list("abcdef")
    assert summary["pixcorr"]["baselines"]["retrieval"]["mean"] == pytest.approx(1.0)
    assert summary["pixcorr"]["baselines"]["retrieval"]["mean"] > summary["pixcorr"]["mean"]


def test_unrelated_reconstructions_score_at_their_shuffled_chance():
    # Images sharing a layout correlate well above 0: a method drawing that layout for
    # every image scores "well above 0" yet at chance.
    rng = np.random.default_rng(2)
    layout = smooth_images(1, size=12, seed=9)[0]
    true = np.clip(layout + 0.15 * rng.standard_normal((40, 12, 12, 1)), 0, 1)
    recon = np.clip(layout + 0.15 * rng.standard_normal((40, 12, 12, 1)), 0, 1)
    _, summary = evaluate(recon, true, [str(i) for i in range(40)], n_way=(2,), n_boot=500)
    pix = summary["pixcorr"]
    assert pix["ci_low"] > 0.2  # far from the old "chance 0"
    shuffled = pix["baselines"]["shuffled"]
    assert shuffled["ci_low"] < pix["mean"] < shuffled["ci_high"]
    assert pix["chance"] == pytest.approx(pix["mean"], abs=0.05)


def test_shuffled_ssim_draws_other_images_only():
    true = smooth_images(5, size=10)
    # with every other image as partner it is exact
    exact = [np.mean([ssim(true[i:i + 1], true[j:j + 1])[0] for j in range(5) if j != i]) for i in range(5)]
    np.testing.assert_allclose(shuffled_scores(true, true, "ssim", n_partners=10, rng=0), exact)
    # never the image itself: identical pairs would score 1
    assert (shuffled_scores(true, true, "ssim", n_partners=1, rng=0) < 0.999).all()
    with pytest.raises(ValueError, match="unknown metric"):
        shuffled_scores(true, true, "lpips")


def test_nearest_training_image_checks_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        nearest_training_image(smooth_images(2, size=8), smooth_images(3, size=10))


def test_evaluate_deterministic_and_streams_independent():
    true = smooth_images(10, size=10)
    recon = noisy(true, 0.3)
    stims = [str(i) for i in range(10)]
    _, a = evaluate(recon, true, stims, n_way=(2, 5), n_boot=300, seed=4)
    _, b = evaluate(recon, true, stims, n_way=(2, 5), n_boot=300, seed=4)
    assert a == b
    # Adding an n-way size leaves the other quantities unchanged.
    _, c = evaluate(recon, true, stims, n_way=(2, 5, 10), n_boot=300, seed=4)
    assert c["pixcorr"] == a["pixcorr"] and c["nway"]["5"] == a["nway"]["5"]


def test_evaluate_checks_stim_files():
    images = smooth_images(3, size=10)
    with pytest.raises(ValueError, match="stim_files"):
        evaluate(images, images, ["a", "b"])


def test_flat_reconstruction_scores_at_chance_not_dropped():
    rng = np.random.default_rng(0)
    true = rng.random((6, 12, 12, 1))
    recon = true.copy()
    recon[0] = 0.5  # a method that drew nothing for image 0
    assert pixcorr(recon, true)[0] == 0
    ident = identification_2way(similarity_matrix(recon, true))
    assert ident[0] == 0.5 and np.isfinite(ident).all()


# --- identification in a model's own space --------------------------------------------


def test_identification_summary_of_decoded_vectors():
    rng = np.random.default_rng(3)
    true = rng.standard_normal((20, 32))
    good = identification_summary(true + 0.5 * rng.standard_normal(true.shape), true, n_boot=500)
    assert good["chance"] == 0.5 and good["mean"] > 0.95
    assert good["ci_low"] <= good["mean"] <= good["ci_high"]
    # It is exhaustive 2-way identification on the correlation matrix, nothing else.
    decoded = true + 3.0 * rng.standard_normal(true.shape)
    expected = identification_2way(correlation_matrix(decoded, true)).mean()
    assert identification_summary(decoded, true, n_boot=10)["mean"] == pytest.approx(expected)
    unrelated = identification_summary(rng.standard_normal(true.shape), true, n_boot=500)
    assert unrelated["ci_low"] < 0.5 < unrelated["ci_high"]
    assert identification_summary(decoded, true, seed=1) == identification_summary(decoded, true, seed=1)
    with pytest.raises(ValueError, match="3 decoded items for 20 true ones"):
        identification_summary(decoded[:3], true)


def test_test_images_that_were_training_images_are_counted_by_name_or_pixels():
    from fmrirecon.evaluation import seen_in_training

    images = smooth_images(6, 8, seed=4)
    train, test = images[:4], images[2:]  # test 0, 1 are training images 2, 3
    names = ["a.png", "b.png", "c.png", "d.png"]
    assert seen_in_training(test, ["c.png", "x.png", "e.png", "f.png"], train, names) == 2  # one by name
    assert seen_in_training(test, ["y.png", "x.png", "e.png", "f.png"], train, names) == 2  # by pixels
    assert seen_in_training(images[4:], ["e.png", "f.png"], train, names) == 0
    _, summary = evaluate(test, test, ["c.png", "d.png", "e.png", "f.png"], n_way=(2,), n_boot=20,
                          train_images=train, train_stim_files=names)
    assert summary["images"]["in_training"] == 2
