"""Attribute classification from decoded latents (VanRullen & Reddy 2019, gender decoding).

A linear classifier of a binary image attribute (e.g. ``male``) is trained on the TRUE
latents of the training images and applied to the latents DECODED from the brain for
the test images. Its accuracy tells whether the decoded latents carry the attribute.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .evaluation import bootstrap_ci

#: Columns of a stimulus table that are never attributes.
NON_ATTRIBUTES = ("stim_file", "split", "family", "source_file", "file")


def binary_columns(table: pd.DataFrame) -> list[str]:
    """Columns of ``table`` whose non-missing values are exactly 0 and 1."""
    found = []
    for column in table.columns:
        if column in NON_ATTRIBUTES:
            continue
        values = pd.to_numeric(table[column], errors="coerce")
        if values.notna().sum() == table[column].notna().sum() and set(values.dropna().unique()) == {0, 1}:
            found.append(column)
    return found


def attribute_accuracy(train_latents, train_labels, test_latents, test_labels, *,
                       n_boot: int = 2000, seed: int = 0, C: float = 1.0) -> dict:
    """Accuracy of a logistic classifier trained on true latents, tested on decoded ones.

    Parameters
    ----------
    train_latents : ndarray, shape (n_train, latent_dim)
        Encoder means of the training images.
    train_labels : array-like of {0, 1}, shape (n_train,)
    test_latents : ndarray, shape (n_test, latent_dim)
        Latents decoded from the brain for the test images.
    test_labels : array-like of {0, 1}, shape (n_test,)
    n_boot : int
        Bootstrap resamples (over test images) of the confidence interval.
    seed : int
    C : float
        Inverse L2 penalty of the (standardised) logistic regression.

    Returns
    -------
    dict
        ``accuracy``, ``ci_low``, ``ci_high`` (95% percentile bootstrap), ``chance``
        (rate of the test set's majority class), ``train_accuracy`` (on the true
        training latents), ``n_train``, ``n_test``.
    """
    train_latents, test_latents = np.asarray(train_latents), np.asarray(test_latents)
    y_train = np.asarray(train_labels).astype(int)
    y_test = np.asarray(test_labels).astype(int)
    if len(train_latents) != len(y_train) or len(test_latents) != len(y_test):
        raise ValueError("attribute_accuracy: latents and labels differ in length")
    if len(np.unique(y_train)) < 2:
        raise ValueError("attribute_accuracy: the training labels have a single class")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    model.fit(train_latents, y_train)
    correct = (model.predict(test_latents) == y_test).astype(float)
    low, high = bootstrap_ci(correct, n_boot=n_boot, rng=np.random.default_rng([seed, 17]))
    chance = max(np.mean(y_test), 1 - np.mean(y_test)) if len(y_test) else np.nan
    return {"accuracy": float(correct.mean()) if len(correct) else np.nan, "ci_low": low,
            "ci_high": high, "chance": float(chance),
            "train_accuracy": float(model.score(train_latents, y_train)),
            "n_train": int(len(y_train)), "n_test": int(len(y_test))}
