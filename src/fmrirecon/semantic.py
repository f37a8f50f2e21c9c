"""Semantic read-outs of reconstructions and encoder quality (Gaziv et al. 2022).

- :func:`encoder_quality`: per-voxel correlation of predicted and measured test
  responses, set against the voxel noise ceiling that the GLM stage stores;
- :func:`deep_feature_metric`: a deep-feature-correlation similarity for
  :func:`fmrirecon.evaluation.similarity_matrix`, hence for n-way identification;
- :func:`class_prototypes` / :func:`prototypes_from_folder` and
  :func:`semantic_classification`: large-scale classification of test fMRI into classes
  never seen in training, by the similarity of the deep features of each reconstruction
  (or of decoded features) to class prototypes (the mean features of labelled images
  of each class). Top-k accuracy against chance ``k / n_classes``, with bootstrap CIs.

Features are either one array ``(n, n_units)`` or a dict ``{layer: (n, n_units)}`` as
returned by :func:`fmrirecon.features.extract_features`; with a dict, similarities are
averaged over layers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .evaluation import correlation_matrix, summarise


# ------------------------------------------------------------------ encoder quality

def _columnwise_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(0)
    b = b - b.mean(0)
    denom = np.sqrt((a ** 2).sum(0) * (b ** 2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * b).sum(0) / denom, np.nan)


def encoder_quality(predicted: np.ndarray, measured: np.ndarray,
                    noise_ceiling: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """How well an encoder predicts each voxel's test responses.

    Parameters
    ----------
    predicted, measured : ndarray, shape (n_stimuli, n_voxels)
        Predicted and measured (repetition-averaged) test responses.
    noise_ceiling : ndarray, shape (n_voxels,), optional
        NSD noise ceiling in percent of variance (``Betas.noise_ceiling``, computed for
        responses averaged over the test repeats).

    Returns
    -------
    r : ndarray, shape (n_voxels,)
        Pearson correlation across stimuli per voxel (NaN for constant voxels).
    summary : dict
        ``n_voxels``, ``mean_r``, ``median_r``; with a ceiling also ``ceiling_r`` (median
        of ``sqrt(nc / 100)``, the best achievable r), ``mean_r2_pct`` (mean variance
        explained, ``100 r^2`` signed), ``mean_ceiling_pct`` and
        ``median_fraction_of_ceiling`` (median over voxels with a ceiling above 0 of
        ``100 r^2 / nc``, signed like r).
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    measured = np.asarray(measured, dtype=np.float64)
    if predicted.shape != measured.shape or predicted.ndim != 2:
        raise ValueError(f"predicted {predicted.shape} and measured {measured.shape} must be "
                         f"the same (n_stimuli, n_voxels) shape")
    if len(predicted) < 3:
        raise ValueError(f"need at least 3 stimuli to correlate, got {len(predicted)}")
    r = _columnwise_corr(predicted, measured)
    summary = {"n_voxels": int(r.size), "mean_r": _nanstat(np.nanmean, r),
               "median_r": _nanstat(np.nanmedian, r)}
    if noise_ceiling is not None:
        nc = np.asarray(noise_ceiling, dtype=np.float64)
        if nc.shape != r.shape:
            raise ValueError(f"noise_ceiling has shape {nc.shape}, expected {r.shape}")
        r2_pct = 100 * np.sign(r) * r ** 2
        ok = (nc > 0) & ~np.isnan(r)
        summary.update({
            "ceiling_r": _nanstat(np.nanmedian, np.sqrt(np.clip(nc, 0, 100) / 100)),
            "mean_r2_pct": _nanstat(np.nanmean, r2_pct),
            "mean_ceiling_pct": _nanstat(np.nanmean, nc),
            "median_fraction_of_ceiling": _nanstat(np.nanmedian, r2_pct[ok] / nc[ok]),
        })
    return r, summary


def _nanstat(fn, values) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(fn(values)) if np.any(~np.isnan(values)) else math.nan


# ----------------------------------------------------------- deep-feature similarity

def _as_layers(features) -> dict[str, np.ndarray]:
    if isinstance(features, dict):
        if not features:
            raise ValueError("features: empty dict of layers")
        return {k: np.asarray(v).reshape(len(v), -1) for k, v in features.items()}
    features = np.asarray(features)
    return {"features": features.reshape(len(features), -1)}


def feature_correlation(a, b, layers: Sequence[str] | None = None) -> np.ndarray:
    """Correlation of every item of ``a`` with every item of ``b``, averaged over layers.

    Parameters
    ----------
    a, b : ndarray (n, units) or dict of layer -> ndarray
        Features of the two sets (same layers and units).
    layers : sequence of str, optional
        Layers to use (default: all of ``a``).

    Returns
    -------
    ndarray, shape (n, m)
    """
    a, b = _as_layers(a), _as_layers(b)
    names = list(layers) if layers is not None else list(a)
    missing = [k for k in names if k not in a or k not in b]
    if missing:
        raise ValueError(f"layers {missing} missing from the features (have {list(a)}, {list(b)})")
    return np.mean([correlation_matrix(a[k], b[k]) for k in names], axis=0)


def deep_feature_metric(extractor, layers: Sequence[str] | None = None,
                        batch_size: int = 64) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A similarity ``metric(recon, true) -> (n, m)`` of deep-feature correlation.

    For :func:`fmrirecon.evaluation.similarity_matrix`::

        S = similarity_matrix(recon, true, metric=deep_feature_metric(extractor))
        acc = identification_nway(S, 10, n_draws=1000, rng=0)

    Parameters
    ----------
    extractor : fmrirecon.features.FeatureExtractor
    layers : sequence of str, optional
        Layers averaged (default: all of the extractor's).
    batch_size : int
    """
    from .features import extract_features

    def metric(recon, true):
        return feature_correlation(extract_features(np.asarray(recon), extractor, batch_size),
                                   extract_features(np.asarray(true), extractor, batch_size),
                                   layers)

    return metric


# ------------------------------------------------------------------- prototypes

def class_prototypes(features, labels) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Mean features of each class.

    Parameters
    ----------
    features : ndarray (n, units) or dict of layer -> ndarray
    labels : array-like, shape (n,)

    Returns
    -------
    prototypes : dict of layer -> ndarray, shape (n_classes, units)
        (layer ``"features"`` for an array input).
    class_names : ndarray of str, shape (n_classes,), sorted
    """
    layers = _as_layers(features)
    labels = np.asarray(labels).astype(str)
    n = len(next(iter(layers.values())))
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} feature rows")
    class_names, codes = np.unique(labels, return_inverse=True)
    counts = np.bincount(codes, minlength=len(class_names))[:, None]
    protos = {}
    for name, f in layers.items():
        sums = np.zeros((len(class_names), f.shape[1]), dtype=np.float64)
        np.add.at(sums, codes, f)
        protos[name] = (sums / counts).astype(np.float32)
    return protos, class_names


def prototypes_from_folder(folder: str | Path, extractor, size: int, channels: int = 3,
                           label_column: str = "wnid", exclude: Sequence[str] = (),
                           max_per_class: int | None = None, seed: int = 0,
                           batch_size: int = 64) -> tuple[dict, np.ndarray, np.ndarray]:
    """Class prototypes from a labelled image folder (``images/`` + ``labels.tsv``).

    Parameters
    ----------
    folder : path
        E.g. ``tiny_imagenet_val`` (columns ``file, wnid, class_name``).
    extractor : fmrirecon.features.FeatureExtractor
    size, channels : int
        Images are read like the study's (:func:`fmrirecon.images.load_images`).
    label_column : str
        Column of ``labels.tsv`` naming the class.
    exclude : sequence of str
        Files (relative to ``folder``) to leave out, e.g. the test stimuli themselves
        (the ``source_file`` column of the simulated ``stimuli.tsv``).
    max_per_class : int, optional
        Use at most this many images of a class (drawn from ``seed``).
    seed : int
    batch_size : int

    Returns
    -------
    prototypes : dict of layer -> ndarray (n_classes, units)
    class_names : ndarray of str
    counts : ndarray of int, images per class
    """
    from .features import extract_features
    from .images import load_images

    folder = Path(folder)
    table_path = folder / "labels.tsv"
    if not table_path.is_file():
        raise ValueError(f"{table_path}: no labels table (need columns file and {label_column})")
    table = pd.read_csv(table_path, sep="\t", dtype=str)
    for col in ("file", label_column):
        if col not in table:
            raise ValueError(f"{table_path}: no column {col!r} (has {list(table.columns)})")
    table = table[~table["file"].isin(set(exclude))].sort_values("file", kind="stable")
    if max_per_class is not None:
        rng = np.random.default_rng([seed, 7])
        table = (table.assign(_key=rng.random(len(table))).sort_values("_key")
                 .groupby(label_column, sort=True).head(max_per_class)
                 .sort_values("file", kind="stable"))
    images = load_images([folder / f for f in table["file"]], size, channels)
    features = extract_features(images, extractor, batch_size)
    protos, names = class_prototypes(features, table[label_column].to_numpy())
    counts = table[label_column].value_counts().reindex(names).to_numpy()
    return protos, names, counts


def unseen_mask(test_labels, train_labels) -> np.ndarray:
    """True for test items whose class has no training item (never-seen classes)."""
    return ~np.isin(np.asarray(test_labels).astype(str), np.asarray(train_labels).astype(str))


# ------------------------------------------------------------ classification

def semantic_classification(features, true_labels, prototypes, class_names,
                            k: Sequence[int] = (1, 5), n_boot: int = 2000,
                            seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Classify items by the correlation of their features with class prototypes.

    Parameters
    ----------
    features : ndarray (n, units) or dict of layer -> ndarray
        Deep features of the reconstructions (or decoded features) of the test items.
    true_labels : array-like of str, shape (n,)
        Class of each item; every one must be in ``class_names``.
    prototypes : ndarray (n_classes, units) or dict of layer -> ndarray
        Same layers and units as ``features`` (see :func:`class_prototypes`).
    class_names : array-like of str, shape (n_classes,)
    k : sequence of int
        Top-k accuracies to report.
    n_boot : int
        Bootstrap resamples of the 95% CIs (over items).
    seed : int

    Returns
    -------
    per_item : DataFrame
        ``label``, ``predicted`` (top-1 class), ``rank`` (1 = best; ties take the mean
        rank) and ``top<k>`` (1 if the true class is among the ``k`` most similar; with
        ties, the probability that a random tie-break puts it there).
    summary : dict
        ``n_items``, ``n_classes`` and ``top<k>: {mean, ci_low, ci_high, chance}`` with
        chance ``k / n_classes``.
    """
    class_names = np.asarray(class_names).astype(str)
    true_labels = np.asarray(true_labels).astype(str)
    feats, protos = _as_layers(features), _as_layers(prototypes)
    if set(feats) != set(protos):
        raise ValueError(f"features have layers {list(feats)} but prototypes {list(protos)}")
    if len(next(iter(protos.values()))) != len(class_names):
        raise ValueError(f"{len(next(iter(protos.values())))} prototypes for "
                         f"{len(class_names)} class names")
    if len(true_labels) != len(next(iter(feats.values()))):
        raise ValueError(f"{len(true_labels)} labels for {len(next(iter(feats.values())))} items")
    index = {c: i for i, c in enumerate(class_names)}
    missing = sorted(set(true_labels) - set(index))
    if missing:
        raise ValueError(f"true labels without a prototype: {missing[:10]}"
                         + (" ..." if len(missing) > 10 else ""))
    ks = sorted({int(v) for v in k})
    if not ks or ks[0] < 1:
        raise ValueError(f"k must be positive integers, got {k}")
    sim = feature_correlation(feats, protos)
    sim = np.nan_to_num(sim, nan=-np.inf)  # a constant reconstruction matches nothing
    true_idx = np.array([index[c] for c in true_labels], dtype=int)
    own = sim[np.arange(len(sim)), true_idx][:, None]
    higher = (sim > own).sum(1)
    ties = (sim == own).sum(1) - 1  # other classes as similar as the true one
    per_item = pd.DataFrame({
        "label": true_labels,
        "predicted": class_names[np.argmax(sim, axis=1)] if len(sim) else [],
        "rank": higher + 1 + ties / 2,
    })
    n_classes = len(class_names)
    summary = {"n_items": int(len(true_labels)), "n_classes": int(n_classes)}
    for kk in ks:
        hit = np.clip((kk - higher) / (ties + 1.0), 0.0, 1.0)
        per_item[f"top{kk}"] = hit
        summary[f"top{kk}"] = summarise(hit, min(1.0, kk / n_classes), n_boot,
                                        np.random.default_rng([seed, kk]))
    return per_item, summary
