import numpy as np
import pytest
from sklearn.linear_model import Ridge

from fmrirecon.decoding import RidgeDecoder, cv_splits


def _data(n=200, p=60, k=4, noise=1.0, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)).astype(np.float32)
    W = rng.standard_normal((p, k))
    Y = X @ W + noise * rng.standard_normal((n, k))
    return X, Y


@pytest.mark.parametrize("shape", [(200, 60), (80, 400)])  # primal and kernel form
def test_matches_sklearn_ridge_at_the_chosen_alpha(shape):
    X, Y = _data(*shape)
    decoder = RidgeDecoder(alphas=np.logspace(-1, 4, 11)).fit(X, Y)
    Xs = (X - X.mean(0)) / X.std(0)
    for t in range(Y.shape[1]):
        ref = Ridge(alpha=decoder.best_alphas_[t]).fit(Xs, Y[:, t])
        # float32 solve: agreement to ~1e-3 of the weights' scale
        scale = np.abs(ref.coef_).max()
        np.testing.assert_allclose(decoder.coef_[:, t], ref.coef_, atol=1e-3 * scale)
        pred = ref.predict(Xs)
        np.testing.assert_allclose(decoder.predict(X)[:, t], pred, atol=1e-3 * np.abs(pred).max())


def test_alpha_per_target_follows_noise():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((150, 40)).astype(np.float32)
    clean = X @ rng.standard_normal(40)
    Y = np.stack([clean + 0.1 * rng.standard_normal(150), rng.standard_normal(150)], 1)
    decoder = RidgeDecoder().fit(X, Y)
    # a well-predicted target gets a small penalty, pure noise the largest one
    assert decoder.best_alphas_[0] < decoder.best_alphas_[1]
    assert decoder.cv_scores_[0] > 0.9 > 0.1 > decoder.cv_scores_[1]


def test_generalises_to_held_out_trials():
    X, Y = _data(300, 100, 3, noise=2.0, seed=2)
    decoder = RidgeDecoder().fit(X[:200], Y[:200])
    pred = decoder.predict(X[200:])
    r = [np.corrcoef(pred[:, t], Y[200:, t])[0, 1] for t in range(3)]
    assert min(r) > 0.8


def test_grouped_folds_keep_groups_whole():
    groups = np.repeat(np.arange(6), 10)
    for train, test in cv_splits(60, 3, groups):
        assert not set(groups[train]) & set(groups[test])


def test_mismatched_rows_are_an_error():
    with pytest.raises(ValueError, match="trials"):
        RidgeDecoder().fit(np.zeros((10, 3)), np.zeros((9, 2)))
