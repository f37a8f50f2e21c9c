"""Per-image similarity of reconstructions to the images shown, and identification.

The metrics follow the natural-scenes reconstruction papers (Ozcelik & VanRullen 2023,
Takagi & Nishimoto 2023) so that numbers are comparable:

- :func:`pixcorr`: Pearson correlation of the flattened pixels of a reconstruction and
  the image that was shown;
- :func:`ssim`: structural similarity of the grayscale images with Gaussian weights;
- identification (:func:`identification_2way`, :func:`identification_nway`): whether a
  reconstruction is more similar to its own image than to other test images, either
  against every other image (exhaustive 2-way) or against random sets of ``n - 1``
  distractors (n-way), from a :func:`similarity_matrix`.

Images are float arrays ``(n, H, W, C)`` in [0, 1] with ``C`` = 1 or 3. Summaries,
baselines and the files of an evaluation are in :mod:`fmrirecon.evaluation`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity

# SSIM settings of the papers: Gaussian window of sigma 1.5 truncated at 3.5 sigma,
# i.e. an 11 x 11 window (skimage's own default for gaussian_weights=True).
_SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 3.5
_SSIM_WIN = 2 * int(_SSIM_TRUNCATE * _SSIM_SIGMA + 0.5) + 1


def _check_pair(recon: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    recon, true = np.asarray(recon, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if recon.shape != true.shape:
        raise ValueError(f"recon {recon.shape} and true {true.shape} differ in shape")
    if recon.ndim != 4 or recon.shape[-1] not in (1, 3):
        raise ValueError(f"images must be (n, H, W, C) with C = 1 or 3, got {recon.shape}")
    return recon, true


def _as_rng(rng) -> np.random.Generator:
    return np.random.default_rng(rng)


def _nonzero(norms: np.ndarray) -> np.ndarray:
    """Norms with zeros replaced by inf, so that constant items correlate 0."""
    return np.where(norms == 0, np.inf, norms)


def correlation_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of every row of ``a`` with every row of ``b``.

    Parameters
    ----------
    a : ndarray, shape (n, ...)
        Items to compare; trailing dimensions are flattened (pixels, features).
    b : ndarray, shape (m, ...)
        Items with the same number of elements per item as ``a``.

    Returns
    -------
    ndarray, shape (n, m)
        ``r[i, j]`` = correlation of ``a[i]`` with ``b[j]``; 0 where an item is
        constant: a flat reconstruction shows no relation to any image and scores at
        chance, rather than NaN, which the averages would silently drop.
    """
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"items have {a.shape[1]} and {b.shape[1]} elements")
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    a /= _nonzero(np.linalg.norm(a, axis=1, keepdims=True))
    b /= _nonzero(np.linalg.norm(b, axis=1, keepdims=True))
    # Rounding can push a perfect correlation a hair past 1.
    return np.clip(a @ b.T, -1.0, 1.0)


def pixcorr(recon: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Pixel correlation of each reconstruction with its true image.

    Parameters
    ----------
    recon, true : ndarray, shape (n, H, W, C)
        Reconstructions and the images that were shown, in [0, 1].

    Returns
    -------
    ndarray, shape (n,)
        Pearson r of the flattened pixels (all channels) of each pair; 0 where an
        image is constant (see :func:`correlation_matrix`).
    """
    recon, true = _check_pair(recon, true)
    n = len(recon)
    a = recon.reshape(n, -1) - recon.reshape(n, -1).mean(axis=1, keepdims=True)
    b = true.reshape(n, -1) - true.reshape(n, -1).mean(axis=1, keepdims=True)
    r = (a * b).sum(axis=1) / _nonzero(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return np.clip(r, -1.0, 1.0)


def _gray(images: np.ndarray) -> np.ndarray:
    if images.shape[-1] == 3:
        return rgb2gray(images)  # luminance weights of ITU-R 601, as the papers use
    return images[..., 0]


def ssim(recon: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Grayscale structural similarity of each reconstruction with its true image.

    RGB images are converted to gray with :func:`skimage.color.rgb2gray`, then compared
    with :func:`skimage.metrics.structural_similarity` using ``gaussian_weights=True``,
    ``sigma=1.5``, ``use_sample_covariance=False`` and ``data_range=1.0``.

    Parameters
    ----------
    recon, true : ndarray, shape (n, H, W, C)
        Reconstructions and the images that were shown, in [0, 1].

    Returns
    -------
    ndarray, shape (n,)
        SSIM of each pair (1 for identical images).

    Notes
    -----
    The standard window is 11 x 11. Images smaller than that (down to 3 x 3) use the
    largest odd window that fits, with the Gaussian truncated at the window's edge, so
    that small simulated images still get a value; images of 11 x 11 or more give
    exactly skimage's result with the settings above.
    """
    recon, true = _check_pair(recon, true)
    side = min(recon.shape[1:3])
    if side < 3:
        raise ValueError(f"SSIM needs images of at least 3 x 3 pixels, got {recon.shape[1:3]}")
    win = min(_SSIM_WIN, side if side % 2 else side - 1)
    # Truncate the Gaussian at the window radius so the filter fits the window.
    truncate = _SSIM_TRUNCATE if win == _SSIM_WIN else (win // 2) / _SSIM_SIGMA
    a, b = _gray(recon), _gray(true)
    return np.array([
        structural_similarity(
            x, y, win_size=win, gaussian_weights=True, sigma=_SSIM_SIGMA, truncate=truncate,
            use_sample_covariance=False, data_range=1.0,
        )
        for x, y in zip(a, b)
    ], dtype=np.float64)


def similarity_matrix(
    recon: np.ndarray,
    true: np.ndarray,
    metric: str | Callable[[np.ndarray, np.ndarray], np.ndarray] = "pixcorr",
) -> np.ndarray:
    """Similarity of every reconstruction to every true image.

    Parameters
    ----------
    recon : ndarray, shape (n, ...)
        Reconstructions, or any per-item features of them (e.g. DNN activations).
    true : ndarray, shape (m, ...)
        The true images, or the same features of them.
    metric : {"pixcorr", "correlation"} or callable, default "pixcorr"
        ``"pixcorr"`` (alias ``"correlation"``): Pearson correlation of the flattened
        items. A callable ``metric(recon, true)`` must return the ``(n, m)`` matrix itself.

    Returns
    -------
    ndarray, shape (n, m)
        ``S[i, j]`` = similarity of reconstruction ``i`` to true image ``j``.
    """
    if callable(metric):
        sim = np.asarray(metric(recon, true), dtype=np.float64)
    elif metric in ("pixcorr", "correlation"):
        sim = correlation_matrix(recon, true)
    else:
        raise ValueError(f"unknown metric {metric!r}: use 'pixcorr' or a callable")
    expected = (len(recon), len(true))
    if sim.shape != expected:
        raise ValueError(f"similarity matrix has shape {sim.shape}, expected {expected}")
    return sim


def _check_square(sim: np.ndarray) -> np.ndarray:
    sim = np.asarray(sim, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"similarity matrix must be square, got shape {sim.shape}")
    return sim


def identification_2way(sim: np.ndarray) -> np.ndarray:
    """Exhaustive 2-way identification accuracy of each reconstruction.

    Parameters
    ----------
    sim : ndarray, shape (n, n)
        ``sim[i, j]`` = similarity of reconstruction ``i`` to true image ``j``.

    Returns
    -------
    ndarray, shape (n,)
        For each ``i``, the fraction of the other images ``j != i`` with
        ``sim[i, i] > sim[i, j]``, ties counting half. Chance is 0.5. NaN when
        ``sim[i, i]`` is NaN or there is no other valid candidate; NaN candidates are
        left out.
    """
    sim = _check_square(sim)
    n = len(sim)
    diag = np.diag(sim)[:, None]
    others = ~np.eye(n, dtype=bool) & ~np.isnan(sim)
    score = np.where(sim < diag, 1.0, 0.0) + np.where(sim == diag, 0.5, 0.0)
    n_valid = others.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = (score * others).sum(axis=1) / n_valid
    acc[(n_valid == 0) | np.isnan(diag[:, 0])] = np.nan
    return acc


def identification_nway(
    sim: np.ndarray, n_way: int, n_draws: int = 1000, rng=None
) -> np.ndarray:
    """n-way identification accuracy of each reconstruction with random distractors.

    Parameters
    ----------
    sim : ndarray, shape (n, n)
        ``sim[i, j]`` = similarity of reconstruction ``i`` to true image ``j``.
    n_way : int
        Number of candidates per trial: the true image and ``n_way - 1`` distractors
        drawn without replacement from the other images.
    n_draws : int, default 1000
        Random draws of distractors per image.
    rng : None, int or numpy.random.Generator
        Seed or generator of the draws.

    Returns
    -------
    ndarray, shape (n,)
        For each image the fraction of draws in which its true image is the most
        similar candidate (a tie with ``k`` distractors counts ``1 / (k + 1)``, which is
        "ties count half" for 2-way). Chance is ``1 / n_way``. All NaN, without error,
        when ``n_way`` exceeds the number of images; NaN candidates are left out, as
        in :func:`identification_2way`.

    Notes
    -----
    A draw is decided by how many of its distractors beat or tie the true image, so
    instead of drawing index sets the counts are drawn directly from the multivariate
    hypergeometric distribution over (beat, tie, lose). This is the same random
    experiment at a cost independent of the number of images.
    """
    sim = _check_square(sim)
    if n_way < 2:
        raise ValueError(f"n_way must be at least 2, got {n_way}")
    n = len(sim)
    acc = np.full(n, np.nan)
    if n_way > n:
        return acc
    rng = _as_rng(rng)
    k = n_way - 1
    for i in range(n):
        row = np.delete(sim[i], i)
        row = row[~np.isnan(row)]
        if np.isnan(sim[i, i]) or len(row) < k:
            continue
        counts = [int((row > sim[i, i]).sum()), int((row == sim[i, i]).sum())]
        counts.append(len(row) - sum(counts))
        drawn = rng.multivariate_hypergeometric(counts, k, size=n_draws)
        acc[i] = np.mean((drawn[:, 0] == 0) / (1.0 + drawn[:, 1]))
    return acc

