"""Training settings chosen on held-out training pairs, and the guards against harm."""

import numpy as np
import pytest

from conftest import linear_voxels, smooth_images
from fmrirecon.evaluation import bootstrap_ci, pixcorr
from fmrirecon.methods import get_method
from fmrirecon.validation import (average_by_image, fit_validated, holdout_split, image_ids,
                                  validation_folds, validation_metrics, validation_settings)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SELFSUP = dict(width=4, batch_size=16, progress=False, perceptual_weight=0.0, encoder_epochs=0,
               decoder_epochs=4, encoder_backbone="pixel", device="cpu", fmri_cycle_weight=1.0)


def test_holdout_leaves_whole_runs_or_whole_images_out():
    images = np.repeat(smooth_images(20, size=8), 3, axis=0)  # every image shown 3 times
    runs = np.tile(np.arange(6), 10)
    fit, held, unit = holdout_split(images, runs, fraction=0.2, seed=0)
    assert unit == "runs" and len(set(runs[held])) == 1 and not set(runs[held]) & set(runs[fit])
    ids = image_ids(images)
    assert not set(ids[held]) & set(ids[fit])  # no held-out image is fitted on
    fit, held, unit = holdout_split(images, np.zeros(60), fraction=0.2, seed=0)
    assert unit == "images" and len(set(ids[held])) == 4 and not set(ids[held]) & set(ids[fit])
    avg, unique = average_by_image(np.arange(60, dtype=np.float32)[:, None], images)
    assert len(unique) == 20 and avg[0, 0] == pytest.approx(1.0)  # trials 0, 1, 2


def test_without_runs_every_distinct_image_is_held_out_once():
    images = np.repeat(smooth_images(20, size=8), 3, axis=0)
    folds, unit = validation_folds(images, np.zeros(60))
    ids = image_ids(images)
    assert unit == "images" and len(folds) == 5
    held = np.concatenate([h for _, h in folds])
    assert sorted(held) == list(range(60))  # every trial once, with its repetitions
    for fit, h in folds:
        assert not set(ids[fit]) & set(ids[h])
    folds, unit = validation_folds(images, np.tile(np.arange(6), 10))
    assert unit == "runs" and len(folds) == 1


def test_validation_settings_are_checked():
    assert validation_settings(False)["enabled"] is False
    with pytest.raises(ValueError, match=r"unknown key 'fractoin' \(did you mean 'fraction'\?\)"):
        validation_settings({"fractoin": 0.3})
    with pytest.raises(ValueError, match="metric"):
        validation_settings({"metric": "ssim"})


def test_pca_components_are_chosen_on_held_out_training_pairs():
    images = smooth_images(200, size=12)
    voxels = linear_voxels(images, n_voxels=200, noise=1.0)
    runs = np.repeat(np.arange(5), 40)
    model = fit_validated(get_method("pca"), {"n_components": 50}, 0, voxels, images, runs)
    record = model.validation_
    assert record["held_out"] == "runs" and record["search"] == {"n_components": [5, 10, 20, 50]}
    scores = {e["settings"]["n_components"]: e["pixcorr"] for e in record["entries"]}
    best = max(scores, key=scores.get)
    assert model.n_components == best and record["chosen"]["settings"] == {"n_components": best}
    metrics = validation_metrics(record, n_boot=200)
    assert metrics["val_pixcorr"]["mean"] == pytest.approx(scores[best])
    assert metrics["val_fallback"]["mean"] == 0


def test_a_method_below_the_pca_baseline_on_validation_pairs_falls_back_to_it():
    images = smooth_images(200, size=12)
    voxels = linear_voxels(images, n_voxels=200, noise=1.0)
    runs = np.repeat(np.arange(5), 40)

    from fmrirecon.methods.ridge import PixelRidgeReconstruction

    class Blurred(PixelRidgeReconstruction):
        """Pixel ridge that draws a constant grey image: worse than any decoder."""

        def reconstruct(self, betas):
            return np.full((len(betas), *self.image_shape_), 0.5, np.float32)

    model = fit_validated(Blurred, {}, 0, voxels, images, runs)
    assert type(model).__name__ == "PCAReconstruction"
    assert model.validation_["fallback"] == "baseline pca"
    assert any("pca baseline" in note for note in model.validation_["notes"])
    assert validation_metrics(model.validation_, n_boot=200)["val_fallback"]["mean"] == 1


def _selfsup_data(signal: bool):
    images = smooth_images(300, size=12, seed=2)
    if signal:
        betas = linear_voxels(images, n_voxels=60, noise=0.5)
    else:
        betas = np.random.default_rng(4).standard_normal((300, 60)).astype(np.float32)
    return images, betas


@pytest.mark.parametrize("signal", [False, True])
def test_selfsup_cycles_switch_off_without_stimulus_information(signal):
    images, betas = _selfsup_data(signal)
    train, test, unpaired = slice(0, 180), slice(180, 220), slice(220, 300)
    model = get_method("selfsup")(seed=0, ablation=True, **SELFSUP).fit(
        betas[train], images[train], unpaired_betas=betas[test], unpaired_images=images[unpaired])
    quality = model.encoder_quality_
    if not signal:
        # the encoder predicts nothing: no cycles, and nothing lost against pairs only
        assert quality["ci_low"] <= 0 and model.cycles_on_ is False
        assert any("cycles turned off" in note for note in model.guards_)
        diff = pixcorr(model.reconstruct(betas[test]), images[test]) - \
            pixcorr(model.reconstruct(betas[test], variant="pairs"), images[test])
        low, _ = bootstrap_ci(diff, n_boot=1000, rng=np.random.default_rng(0))
        assert low >= -0.01
    else:
        assert quality["ci_low"] > 0.3 and model.cycles_on_ is True and not model.guards_
        assert not np.allclose(model.reconstruct(betas[test]),
                               model.reconstruct(betas[test], variant="pairs"))


def test_selfsup_validation_keeps_pairs_only_when_cycles_do_not_help():
    images, betas = _selfsup_data(False)
    runs = np.repeat(np.arange(5), 60)
    model = fit_validated(get_method("selfsup"), {**SELFSUP, "validation": {"baseline": None}}, 0,
                          betas, images, runs, unpaired_betas=betas[:20],
                          unpaired_images=smooth_images(60, size=12, seed=9))
    record = model.validation_
    roles = [e["role"] for e in record["entries"]]
    assert roles == ["candidate", "ablation"]
    # identical decoders (cycles off in the validation fit): the ablation is used
    assert record["fallback"] == "ablation" and model.settings["cycles"] is False
    assert any("cycles turned off" in note for note in record["validation_fit_notes"])


def _entry(role, pixcorr, ident2):
    per = {"pixcorr": np.asarray(pixcorr, float), "ident2": np.asarray(ident2, float)}
    return {"overrides": {}, "role": role, "per_image": per,
            "scores": {k: float(np.mean(v)) for k, v in per.items()}}


def test_a_guard_replaces_the_method_unless_it_identifies_clearly_better():
    from fmrirecon.validation import _choose

    rng = np.random.default_rng(0)
    pca = _entry("baseline pca", rng.uniform(0.3, 0.5, 60), rng.uniform(0.6, 0.7, 60))
    # lower PixCorr, clearly better 2-way identification (every image): kept
    sharper = _entry("candidate", pca["per_image"]["pixcorr"] - 0.1, pca["per_image"]["ident2"] + 0.1)
    chosen, notes = _choose([sharper, pca], "pixcorr")
    assert chosen is sharper and "it is kept" in notes[0]
    # lower PixCorr, identification within noise of the baseline's: replaced
    noisy = _entry("candidate", pca["per_image"]["pixcorr"] - 0.1,
                   pca["per_image"]["ident2"] + rng.normal(0, 0.2, 60))
    chosen, notes = _choose([noisy, pca], "pixcorr")
    assert chosen is pca and "pca baseline" in notes[0]
    # better PixCorr: no guard acts
    better = _entry("candidate", pca["per_image"]["pixcorr"] + 0.05, pca["per_image"]["ident2"])
    assert _choose([better, pca], "pixcorr") == (better, [])
