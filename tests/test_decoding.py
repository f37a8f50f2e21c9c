import numpy as np
import pytest
from sklearn.linear_model import Ridge

from fmrirecon.decoding import DEFAULT_ALPHAS, RidgeDecoder, cv_splits, ridge_cv


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
        # float64 solve, float32 storage of the weights: agreement to ~1e-6 relative
        scale = np.abs(ref.coef_).max()
        np.testing.assert_allclose(decoder.coef_[:, t], ref.coef_, atol=1e-6 * scale)
        pred = ref.predict(Xs)
        np.testing.assert_allclose(decoder.predict(X)[:, t], pred, atol=1e-6 * np.abs(pred).max())


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


def test_few_runs_leave_one_run_out_never_shuffled_folds():
    groups = np.repeat(np.arange(3), 10)  # fewer runs than the 5 folds asked for
    folds = cv_splits(30, 5, groups)
    assert len(folds) == 3
    assert sorted(tuple(sorted(set(groups[test]))) for _, test in folds) == [(0,), (1,), (2,)]


def test_one_run_cannot_be_cross_validated():
    with pytest.raises(ValueError, match="at least 2 runs; all 30 come from one"):
        cv_splits(30, 5, np.full(30, "train_1"))
    with pytest.raises(ValueError, match="at least 2 runs"):
        RidgeDecoder().fit(np.zeros((30, 4)), np.zeros((30, 2)), groups=np.ones(30))


def test_mismatched_rows_are_an_error():
    with pytest.raises(ValueError, match="trials"):
        RidgeDecoder().fit(np.zeros((10, 3)), np.zeros((9, 2)))


@pytest.mark.parametrize("shape", [(120, 300), (300, 50)])  # kernel and primal form
def test_same_estimator_as_himalaya(shape):
    """ridge_cv is himalaya's KernelRidgeCV / RidgeCV (local alpha, R2, same folds):
    same alpha per target, weights equal to 1e-8 (both float64)."""
    from himalaya.backend import set_backend
    from himalaya.kernel_ridge import KernelRidgeCV
    from himalaya.ridge import RidgeCV
    from himalaya.scoring import r2_score

    rng = np.random.default_rng(4)
    n, p = shape
    X = rng.standard_normal((n, p))
    # targets from well predicted to pure noise, so the chosen alphas span the grid
    Y = X @ (rng.standard_normal((p, 12)) * np.logspace(-3, 0, 12)) + rng.standard_normal((n, 12))
    X = (X - X.mean(0)) / X.std(0)
    Y = Y - Y.mean(0)
    cv = cv_splits(n, 5, groups=np.repeat(np.arange(10), n // 10))
    coef, alphas, scores = ridge_cv(X, Y, DEFAULT_ALPHAS, cv)
    set_backend("numpy")
    params = dict(alphas=DEFAULT_ALPHAS, cv=cv, solver_params=dict(local_alpha=True, score_func=r2_score))
    if n < p:
        ref = KernelRidgeCV(kernel="linear", **params).fit(X, Y)
        ref_coef = X.T @ ref.dual_coef_
    else:
        ref = RidgeCV(**params).fit(X, Y)
        ref_coef = ref.coef_
    np.testing.assert_allclose(alphas, ref.best_alphas_, rtol=1e-12)
    assert len(np.unique(alphas)) > 3
    np.testing.assert_allclose(coef, ref_coef, rtol=0, atol=1e-8 * np.abs(ref_coef).max())
    np.testing.assert_allclose(scores, np.ravel(ref.cv_scores_), atol=1e-8)


def test_folds_must_partition():
    X, Y = _data(40, 10, 2)
    folds = [(np.arange(20, 40), np.arange(20)), (np.arange(10, 40), np.arange(10))]
    with pytest.raises(ValueError, match="partition"):
        ridge_cv(X, Y, [1.0, 10.0], folds)
