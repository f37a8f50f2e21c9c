"""Category decoding leaving runs out: reference agreement, selection rule, robustness."""

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import LeaveOneGroupOut, cross_val_predict

from fmrirecon.betas import Betas
from fmrirecon.classification import _model, classify_categories, simplest_best


def category_betas(n_runs=6, n_classes=4, per_class=3, n_voxels=80, signal=0.6, seed=0):
    """Betas whose first 20 voxels carry a class pattern plus noise; labels; runs."""
    rng = np.random.default_rng(seed)
    patterns = rng.standard_normal((n_classes, n_voxels))
    patterns[:, 20:] = 0
    labels = np.tile(np.repeat(np.arange(n_classes), per_class), n_runs)
    runs = np.repeat(np.arange(n_runs), n_classes * per_class)
    X = signal * patterns[labels] + rng.standard_normal((len(labels), n_voxels))
    trials = pd.DataFrame({"trial": np.arange(len(labels)), "task": "t", "run": runs, "onset": 0.0,
                           "duration": 1.0, "stim_file": [f"c{c}.png" for c in labels],
                           "split": "train", "repetition": 1})
    betas = Betas(betas=X.astype(np.float32), trials=trials,
                  voxel_ijk=np.stack([np.arange(n_voxels), np.zeros(n_voxels, int), np.zeros(n_voxels, int)], 1),
                  affine=np.eye(4), shape=(n_voxels, 1, 1))
    return betas, np.array([f"c{c}" for c in labels]), runs


def test_one_candidate_equals_sklearn_leave_one_run_out():
    """With one candidate nothing is chosen: predictions are sklearn's own."""
    betas, labels, runs = category_betas()
    per_item, summary = classify_categories(betas, labels, runs, Cs=(0.1,), n_features=(None,), n_boot=100)
    reference = cross_val_predict(_model("svm", 0).set_params(linearsvc__C=0.1), betas.betas.astype(np.float64), labels,
                                  groups=runs, cv=LeaveOneGroupOut())
    np.testing.assert_array_equal(per_item["predicted"].to_numpy(), reference)
    assert summary["accuracy"]["mean"] == pytest.approx((reference == labels).mean())


@pytest.mark.parametrize("classifier", ["svm", "logistic"])
def test_informative_voxels_classify_far_above_chance(classifier):
    betas, labels, runs = category_betas()
    _, summary = classify_categories(betas, labels, runs, classifier=classifier, n_boot=200)
    assert summary["binomial"]["ci_low"] > 2 * summary["accuracy"]["chance"], summary


def test_noise_voxels_stay_at_chance():
    betas, labels, runs = category_betas(signal=0.0)
    _, summary = classify_categories(betas, labels, runs, n_boot=200)
    assert summary["binomial"]["p_value"] > 0.01, summary


def test_ties_go_to_the_strongest_penalty_then_the_fewest_voxels():
    params = [{"linearsvc__C": C, "selectkbest__k": k} for C in (0.1, 0.01) for k in ("all", 50, 100)]
    results = {"params": params, "mean_test_score": np.array([-0.5, -0.5, -0.7, -0.5, -0.5, -0.5])}
    assert params[simplest_best(results)] == {"linearsvc__C": 0.01, "selectkbest__k": 50}
    results["mean_test_score"] = np.array([-0.5, -0.4, -0.7, -0.5, -0.6, -0.5])
    assert params[simplest_best(results)] == {"linearsvc__C": 0.1, "selectkbest__k": 50}


@pytest.mark.slow
def test_one_trial_changed_rarely_changes_a_choice():
    """The selection does not hinge on one trial: the inner search scores a continuous
    loss, so changing one trial's betas by 5% (another CPU's rounding, amplified by a
    realignment, did that to the Haxby data) rarely changes the chosen penalty or voxel
    count in any fold. Scored by inner accuracy, 15 of these 30 changes did."""
    rng = np.random.default_rng(5)
    changed = 0
    for signal, seed in [(0.35, 1), (0.3, 2), (0.4, 3)]:
        betas, labels, runs = category_betas(signal=signal, seed=seed)
        first, _ = classify_categories(betas, labels, runs, n_boot=100)
        for row in rng.choice(len(labels), 10, replace=False):
            perturbed = betas.take(np.ones(len(labels), bool))
            perturbed.betas = perturbed.betas.copy()
            perturbed.betas[row] *= (1 + 0.05 * rng.standard_normal(betas.betas.shape[1])).astype(np.float32)
            second, _ = classify_categories(perturbed, labels, runs, n_boot=100)
            changed += not first[["C", "n_features"]].equals(second[["C", "n_features"]])
    assert changed <= 4, f"{changed} of 30 one-trial changes changed a choice (measured 2)"
