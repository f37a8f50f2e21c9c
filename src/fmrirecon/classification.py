"""Category decoding from single-trial (or single-block) betas, leaving whole runs out.

A sanity check of real recordings before reconstruction: can the betas tell the
categories apart at all? Each outer fold leaves one group (run) out; the classifier's
penalty and the number of voxels an ANOVA keeps are chosen by an inner
cross-validation over the remaining runs only, so the held-out run never influences
any choice.

The inner cross-validation scores each candidate by the classifier's own loss on the
held-out runs (multi-class hinge loss for the SVM, log loss for logistic regression),
not by accuracy. Accuracy over a few dozen inner items moves in steps of one item and
ties often: a single trial flipping (e.g. one volume realigned a twentieth of a voxel
differently by another CPU's BLAS kernel) then changes the chosen penalty and, through
it, the outer accuracy by several items. A continuous loss moves by a little instead.
Exact ties left over are broken by a stated rule (:func:`simplest_best`): the most
regularised candidate, then the fewest voxels.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import hinge_loss, log_loss, make_scorer
from sklearn.model_selection import GridSearchCV, LeaveOneGroupOut
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from .betas import Betas

__all__ = ["classify_categories", "simplest_best", "DEFAULT_CS"]

DEFAULT_CS = (1e-3, 1e-2, 1e-1)
#: Voxel counts kept by the in-fold ANOVA (None: all voxels).
DEFAULT_N_FEATURES = (50, 100, 200, None)


def _model(classifier: str, seed: int):
    if classifier == "logistic":
        clf = LogisticRegression(max_iter=5000, random_state=seed)
    elif classifier == "svm":
        clf = LinearSVC(max_iter=20000, random_state=seed)
    else:
        raise ValueError(f"classifier must be 'logistic' or 'svm', got {classifier!r}")
    # scaling and the ANOVA are fit inside each fold: held-out runs inform neither
    return make_pipeline(StandardScaler(), SelectKBest(f_classif, k="all"), clf)


def _inner_scorer(classifier: str, classes):
    # the classifier's own loss, continuous (see the module docstring); labels given so
    # that an inner fold missing a class is still scored against all of them
    if classifier == "logistic":
        return make_scorer(log_loss, greater_is_better=False, response_method="predict_proba",
                           labels=classes)
    return make_scorer(hinge_loss, greater_is_better=False, response_method="decision_function",
                       labels=classes)


def simplest_best(cv_results: dict) -> int:
    """Index of the candidate a nested search keeps (``refit`` of :class:`GridSearchCV`).

    The best mean inner score wins; candidates tied with it (within 1e-12 relative)
    go to the smallest ``C`` (the strongest penalty), then to the fewest voxels
    (``"all"`` counts as the most).

    Parameters
    ----------
    cv_results : dict
        ``GridSearchCV.cv_results_``: ``mean_test_score`` and ``params`` with one
        ``*__C`` and the ``selectkbest__k`` key.

    Returns
    -------
    int
        Index into ``cv_results["params"]``.
    """
    scores = np.asarray(cv_results["mean_test_score"], dtype=float)
    best = np.nanmax(scores)
    tied = np.flatnonzero(scores >= best - 1e-12 * max(1.0, abs(best)))

    def simplicity(i):
        params = cv_results["params"][i]
        C = next(v for key, v in params.items() if key.endswith("__C"))
        k = params["selectkbest__k"]
        return (C, np.inf if k == "all" else k)

    return int(min(tied, key=simplicity))


# Over 80 lines for its numpydoc docstring (43 lines): the code is 56.
def classify_categories(betas: Betas, labels, groups, *, classifier: str = "svm",
                        Cs=DEFAULT_CS, n_features=DEFAULT_N_FEATURES, columns=None, n_boot: int = 2000, seed: int = 0,
                        ) -> tuple[pd.DataFrame, dict]:
    """Leave-one-group-out classification of ``labels`` from the betas' rows.

    Parameters
    ----------
    betas : Betas
        One row per item (trial or block).
    labels : array-like, shape (n_rows,)
        Category of each row.
    groups : array-like, shape (n_rows,)
        Run (or session) of each row: the outer folds leave one group out, the inner
        cross-validation for ``C`` leaves one of the remaining groups out.
    classifier : {"svm", "logistic"}, default="svm"
        Standardised voxels, an ANOVA voxel selection (``SelectKBest(f_classif)``),
        then a linear SVM (one-vs-rest) or multinomial logistic regression, L2 penalty.
    Cs : sequence of float
        Inverse penalties searched by the inner cross-validation (scored by the
        classifier's loss; ties to :func:`simplest_best`).
    n_features : sequence of int or None
        Numbers of voxels the ANOVA keeps, searched jointly with ``Cs`` (None: all).
    columns : array of bool or int, optional
        Voxels (columns) to use; all by default.
    n_boot : int, default=2000
        Bootstrap resamples of the items for the accuracy's 95% interval.
    seed : int, default=0

    Returns
    -------
    per_item : DataFrame
        One row per item: ``row`` (index into ``betas``), ``group``, ``label``,
        ``predicted``, ``correct``, ``C`` and ``n_features`` (chosen in that fold; 0 =
        all voxels).
    summary : dict
        ``accuracy`` (``mean``, bootstrap ``ci_low``/``ci_high``, ``chance`` = 1 /
        number of classes), ``binomial`` (exact 95% Clopper-Pearson interval and
        one-sided p-value against chance), ``per_group`` accuracies, ``n_items``,
        ``n_groups``, ``classes``, ``classifier``.

    Raises
    ------
    ValueError
        Mismatched lengths, fewer than 3 groups or 2 classes, a class missing from a
        training fold.
    """
    X = np.asarray(betas.betas, dtype=np.float64)
    if columns is not None:
        X = X[:, np.asarray(columns)]
    labels = np.asarray(labels).astype(str)
    groups = np.asarray(groups)
    if not (len(labels) == len(groups) == len(X)):
        raise ValueError(f"{len(X)} beta rows, {len(labels)} labels and {len(groups)} groups")
    classes = np.unique(labels)
    unique_groups = np.unique(groups)
    if len(classes) < 2:
        raise ValueError(f"need at least 2 classes, got {list(classes)}")
    if len(unique_groups) < 3:
        raise ValueError(f"need at least 3 groups for nested leave-one-group-out, got {len(unique_groups)}")

    rows = []
    for train, test in LeaveOneGroupOut().split(X, labels, groups):
        missing = set(classes) - set(labels[train])
        if missing:
            raise ValueError(f"group {groups[test][0]!r} held out leaves no training item of {sorted(missing)}")
        step = "logisticregression" if classifier == "logistic" else "linearsvc"
        ks = sorted({"all" if k is None or k >= X.shape[1] else int(k) for k in n_features}, key=str)
        search = GridSearchCV(
            _model(classifier, seed), {f"{step}__C": list(Cs), "selectkbest__k": ks},
            cv=LeaveOneGroupOut(), scoring=_inner_scorer(classifier, classes), refit=simplest_best,
            n_jobs=1,
        )
        search.fit(X[train], labels[train], groups=groups[train])
        predicted = search.predict(X[test])
        k = search.best_params_["selectkbest__k"]
        rows.append(pd.DataFrame({"row": test, "group": groups[test], "label": labels[test],
                                  "predicted": predicted, "C": search.best_params_[f"{step}__C"],
                                  "n_features": 0 if k == "all" else k}))
    per_item = pd.concat(rows, ignore_index=True).sort_values("row", ignore_index=True)
    per_item["correct"] = per_item["label"] == per_item["predicted"]

    correct = per_item["correct"].to_numpy()
    n, k = len(correct), int(correct.sum())
    chance = 1.0 / len(classes)
    rng = np.random.default_rng(seed)
    boot = correct[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    test = binomtest(k, n, chance, alternative="greater")
    # two-sided exact interval (the one-sided test's own interval is open above)
    interval = binomtest(k, n, chance).proportion_ci(confidence_level=0.95, method="exact")
    summary = {
        "accuracy": {"mean": k / n, "ci_low": float(np.percentile(boot, 2.5)),
                     "ci_high": float(np.percentile(boot, 97.5)), "chance": chance},
        "binomial": {"ci_low": float(interval.low), "ci_high": float(interval.high),
                     "p_value": float(test.pvalue)},
        "per_group": {str(g): float(v) for g, v in per_item.groupby("group")["correct"].mean().items()},
        "n_items": n, "n_groups": len(unique_groups), "classes": [str(c) for c in classes],
        "classifier": classifier,
    }
    return per_item, summary
