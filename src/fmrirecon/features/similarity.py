"""Reconstructions compared with images by their deep features."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .io import extract_features
from .networks import FeatureExtractor


def feature_identification(recon: np.ndarray, true: np.ndarray, extractor: FeatureExtractor,
                           batch_size: int = 64) -> dict[str, np.ndarray]:
    """Exhaustive 2-way identification of reconstructions by the features of each layer.

    Parameters
    ----------
    recon, true : ndarray, shape (n, H, W, C)
        Reconstructions and the images that were shown, in [0, 1].
    extractor : FeatureExtractor

    Returns
    -------
    dict of str to ndarray, shape (n,)
        Per layer, the fraction of other images whose features correlate less with the
        reconstruction's than the true image's do (chance 0.5).
    """
    from ..evaluation import correlation_matrix, identification_2way

    a = extract_features(recon, extractor, batch_size)
    b = extract_features(true, extractor, batch_size)
    return OrderedDict((name, identification_2way(correlation_matrix(a[name], b[name])))
                       for name in extractor.layers)


def feature_similarity(recon: np.ndarray, true: np.ndarray, extractor: FeatureExtractor,
                       reference: np.ndarray | None = None, batch_size: int = 64) -> np.ndarray:
    """Similarity of every reconstruction to every true image by their deep features.

    Parameters
    ----------
    recon : ndarray, shape (n, H, W, C)
    true : ndarray, shape (m, H, W, C)
        Images in [0, 1].
    extractor : FeatureExtractor
    reference : ndarray, shape (k, H, W, C), optional
        Images (e.g. the training stimuli) whose feature mean and standard deviation
        z-score every unit first. Raw activations share a large mean pattern that
        makes every image correlate with every other; z-scoring removes it.

    Returns
    -------
    ndarray, shape (n, m)
        Per layer, the Pearson correlation of the (z-scored) features, averaged over the
        extractor's layers: the ``sim`` of :func:`fmrirecon.evaluation.identification_nway`.
    """
    from ..evaluation import correlation_matrix

    a = extract_features(recon, extractor, batch_size)
    b = extract_features(true, extractor, batch_size)
    ref = None if reference is None else extract_features(reference, extractor, batch_size)
    sims = []
    for name in extractor.layers:
        x, y = a[name], b[name]
        if ref is not None:
            mean, sd = ref[name].mean(0), ref[name].std(0)
            sd = np.where(sd > 0, sd, 1.0)
            x, y = (x - mean) / sd, (y - mean) / sd
        sims.append(correlation_matrix(x, y))
    return np.mean(sims, axis=0)
