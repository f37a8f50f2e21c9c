"""Image-level metrics of reconstructions: pixel correlation, SSIM and identification.

The metrics follow the natural-scenes reconstruction papers (Ozcelik & VanRullen 2023,
Takagi & Nishimoto 2023) so that numbers are comparable:

- ``pixcorr``: Pearson correlation of the flattened pixels of a reconstruction and the
  image that was shown;
- ``ssim``: structural similarity of the grayscale images with Gaussian weights;
- identification: whether a reconstruction is more similar to its own image than to
  other test images, either against every other image (exhaustive 2-way) or against
  random sets of ``n - 1`` distractors (n-way).

Summaries are means over images with percentile-bootstrap confidence intervals.
Images are float arrays ``(n, H, W, C)`` in [0, 1] with ``C`` = 1 or 3.

Every metric is also computed for three baselines (:data:`BASELINES`), so that a number
is read against what no brain data, or no new image, would give:

- ``mean_image``: the mean training image shown for every test image (what a decoder
  that learnt nothing predicts);
- ``retrieval``: for each reconstruction, the training image nearest to it by pixel
  correlation (a method that can only recall training images; with test images that
  also appear in training it shows how much is recall);
- ``shuffled``: the reconstructions paired with the wrong test images (for each image
  the mean over the other images). This is the empirical chance level of PixCorr and
  SSIM, which is not 0: images share their mean luminance layout.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity

#: Per-image metrics, in the column order of the ``_metrics.tsv`` file.
METRICS = ("pixcorr", "ssim", "ident2")

#: Chance level of the identification metrics; PixCorr and SSIM take theirs from the
#: ``shuffled`` baseline (``None`` here).
CHANCE = {"pixcorr": None, "ssim": None, "ident2": 0.5}

#: Baselines scored like a method, in display order (see the module docstring).
BASELINES = ("mean_image", "retrieval", "shuffled")

#: Partners per image of the shuffled SSIM baseline (PixCorr uses every other image).
N_SHUFFLES = 20

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


def mean_image_baseline(train_images: np.ndarray, n: int) -> np.ndarray:
    """The mean training image, repeated for ``n`` test images.

    Parameters
    ----------
    train_images : ndarray, shape (m, H, W, C)
        The images of the training trials (one per distinct image or per trial).
    n : int
        Number of test images.

    Returns
    -------
    ndarray, shape (n, H, W, C)
    """
    train_images = np.asarray(train_images, dtype=np.float64)
    if train_images.ndim != 4 or len(train_images) == 0:
        raise ValueError(f"train_images must be a non-empty (m, H, W, C) array, got {train_images.shape}")
    return np.repeat(train_images.mean(axis=0, keepdims=True), n, axis=0)


def nearest_training_image(recon: np.ndarray, train_images: np.ndarray) -> np.ndarray:
    """Index of the training image most correlated (pixels) with each reconstruction.

    Parameters
    ----------
    recon : ndarray, shape (n, H, W, C)
    train_images : ndarray, shape (m, H, W, C)

    Returns
    -------
    ndarray of int, shape (n,)
        Ties go to the first training image.
    """
    if np.shape(recon)[1:] != np.shape(train_images)[1:]:
        raise ValueError(f"reconstructions {np.shape(recon)[1:]} and training images "
                         f"{np.shape(train_images)[1:]} differ in shape")
    return np.argmax(correlation_matrix(recon, train_images), axis=1)


def shuffled_scores(
    recon: np.ndarray, true: np.ndarray, metric: str, n_partners: int = N_SHUFFLES, rng=None
) -> np.ndarray:
    """Each reconstruction scored against the wrong images: the empirical chance level.

    Parameters
    ----------
    recon, true : ndarray, shape (n, H, W, C)
    metric : {"pixcorr", "ssim"}
        ``pixcorr`` averages over every other image (exact); ``ssim`` over
        ``n_partners`` other images drawn without replacement (all when fewer).
    n_partners : int
        Partners per image for SSIM.
    rng : None, int or numpy.random.Generator

    Returns
    -------
    ndarray, shape (n,)
        Mean score of reconstruction ``i`` against images ``j != i``; NaN with one image.
    """
    recon, true = _check_pair(recon, true)
    n = len(recon)
    if n < 2:
        return np.full(n, np.nan)
    if metric == "pixcorr":
        sim = correlation_matrix(recon, true)
        return (sim.sum(axis=1) - np.diag(sim)) / (n - 1)
    if metric != "ssim":
        raise ValueError(f"unknown metric {metric!r}: use 'pixcorr' or 'ssim'")
    rng = _as_rng(rng)
    k = min(n_partners, n - 1)
    out = np.empty(n)
    for i in range(n):
        partners = rng.choice(np.delete(np.arange(n), i), size=k, replace=False)
        out[i] = ssim(np.repeat(recon[i:i + 1], k, axis=0), true[partners]).mean()
    return out


def bootstrap_ci(
    values: Sequence[float], n_boot: int = 2000, ci: float = 0.95, rng=None
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean over items.

    Parameters
    ----------
    values : array-like, shape (n,)
        One value per item (image); NaNs are dropped.
    n_boot : int, default 2000
        Bootstrap resamples.
    ci : float, default 0.95
        Coverage of the interval.
    rng : None, int or numpy.random.Generator
        Seed or generator of the resampling.

    Returns
    -------
    (low, high) : tuple of float
        Interval bounds; NaN when no value is left.
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return math.nan, math.nan
    rng = _as_rng(rng)
    means = np.empty(n_boot)
    # Chunks keep memory bounded for many items.
    chunk = max(1, 2_000_000 // len(values))
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, len(values), size=(stop - start, len(values)))
        means[start:stop] = values[idx].mean(axis=1)
    alpha = (1 - ci) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def _child_rng(seed: int, name: str) -> np.random.Generator:
    # One stream per named quantity: a summary does not change when n_way changes.
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def summarise(values, chance, n_boot: int, rng) -> dict:
    """One metric entry of a ``_summary.json``: the mean of per-item ``values`` (NaNs
    dropped), its 95% percentile-bootstrap interval (:func:`bootstrap_ci` with ``rng``)
    and ``chance``."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(np.nanmean(values)) if np.any(~np.isnan(values)) else math.nan
    low, high = bootstrap_ci(values, n_boot=n_boot, rng=rng)
    return {"mean": mean, "ci_low": low, "ci_high": high, "chance": chance}


def _interval(values, n_boot: int, rng) -> dict:
    # a baseline's entry: the mean and its interval (its chance is the metric's)
    entry = summarise(values, None, n_boot, rng)
    del entry["chance"]
    return entry


def identification_summary(
    decoded: np.ndarray,
    true: np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
    name: str = "ident2_target",
) -> dict:
    """Exhaustive 2-way identification of decoded vectors among true ones, summarised.

    The pairwise test of VanRullen & Reddy (2019) in a model's own space: each decoded
    vector (e.g. a latent decoded from the brain) is compared, by Pearson correlation,
    with the true vector of its own image and with that of every other test image.

    Parameters
    ----------
    decoded : ndarray, shape (n, ...)
        Decoded items (latents, PCA coefficients, features); trailing dimensions are
        flattened.
    true : ndarray, shape (n, ...)
        The true items of the same images, in the same order.
    n_boot : int, default 2000
        Bootstrap resamples (over images) of the confidence interval.
    seed : int, default 0
        Seed of the bootstrap; ``name`` selects its stream, as in :func:`evaluate`.
    name : str
        Name of the quantity (seeds its own bootstrap stream).

    Returns
    -------
    dict
        ``mean``, ``ci_low``, ``ci_high`` (95% percentile bootstrap over images) and
        ``chance`` (0.5), the format of a ``_summary.json`` entry.
    """
    decoded, true = np.asarray(decoded), np.asarray(true)
    if len(decoded) != len(true):
        raise ValueError(f"{len(decoded)} decoded items for {len(true)} true ones")
    acc = identification_2way(similarity_matrix(decoded, true, "correlation"))
    return summarise(acc, CHANCE["ident2"], n_boot, _child_rng(seed, name))


def _image_scores(recon, true, n_way, n_draws, seed, prefix="") -> dict[str, np.ndarray]:
    # per-image pixcorr, ssim, ident2 and nway<n> of one set of images
    sim = similarity_matrix(recon, true, "pixcorr")
    scores = {"pixcorr": pixcorr(recon, true), "ssim": ssim(recon, true),
              "ident2": identification_2way(sim)}
    for n in n_way:
        scores[f"nway{n}"] = identification_nway(
            sim, n, n_draws=n_draws, rng=_child_rng(seed, f"{prefix}nway{n}"))
    return scores


def evaluate(
    recon: np.ndarray,
    true: np.ndarray,
    stim_files: Sequence[str],
    n_way: Sequence[int] = (2, 5, 10),
    n_boot: int = 2000,
    seed: int = 0,
    n_draws: int = 1000,
    train_images: np.ndarray | None = None,
    train_stim_files: Sequence[str] | None = None,
    n_shuffles: int = N_SHUFFLES,
) -> tuple[pd.DataFrame, dict]:
    """All metrics of one set of reconstructions, with their baselines.

    Parameters
    ----------
    recon, true : ndarray, shape (n, H, W, C)
        Reconstructions and the images that were shown, in [0, 1].
    stim_files : sequence of str, length n
        Stimulus file of each image (``stim_file`` of the recon file).
    n_way : sequence of int, default (2, 5, 10)
        Sizes of the candidate sets of n-way identification.
    n_boot : int, default 2000
        Bootstrap resamples of the confidence intervals.
    seed : int, default 0
        Seed of the identification draws, the shuffled partners and the bootstrap.
    n_draws : int, default 1000
        Random draws of distractors per image in n-way identification.
    train_images : ndarray, shape (m, H, W, C), optional
        The training images (one per distinct image): with them, the ``mean_image``
        and ``retrieval`` baselines are scored too.
    train_stim_files : sequence of str, length m, optional
        Their stimulus files (the ``retrieved`` column).
    n_shuffles : int
        Wrong partners per image of the shuffled SSIM baseline.

    Returns
    -------
    per_image : DataFrame
        One row per image (the ``_metrics.tsv`` file): ``stim_file``, ``pixcorr``,
        ``ssim``, ``ident2``, ``nway<n>`` for each n, then with training images
        ``retrieved`` (the retrieval baseline's image) and ``<metric>_<baseline>``
        for ``mean_image`` and ``retrieval`` and every metric, and
        ``pixcorr_shuffled``, ``ssim_shuffled``.
    summary : dict
        ``{metric: {"mean", "ci_low", "ci_high", "chance", "baselines": {name:
        {"mean", "ci_low", "ci_high"}}}}`` for ``pixcorr``, ``ssim``, ``ident2``, plus
        ``"nway": {"<n>": {...}}`` (the ``_summary.json`` file). Intervals are 95%
        percentile bootstraps over images; NaN where undefined (e.g. ``n`` larger than
        the number of images). The chance of PixCorr and SSIM is the shuffled
        baseline's mean; of identification, ``0.5`` and ``1 / n``.
    """
    recon, true = _check_pair(recon, true)
    stim_files = [str(s) for s in stim_files]
    if len(stim_files) != len(recon):
        raise ValueError(f"{len(stim_files)} stim_files for {len(recon)} images")
    n_way = sorted({int(n) for n in n_way})
    columns = {"stim_file": stim_files, **_image_scores(recon, true, n_way, n_draws, seed)}
    baselines: dict[str, dict[str, np.ndarray]] = {}
    if train_images is not None:
        train_images = np.asarray(train_images, dtype=np.float64)
        if train_stim_files is not None and len(train_stim_files) != len(train_images):
            raise ValueError(f"{len(train_stim_files)} train_stim_files for {len(train_images)} training images")
        nearest = nearest_training_image(recon, train_images)
        columns["retrieved"] = (np.asarray(train_stim_files, dtype=str)[nearest]
                                if train_stim_files is not None else nearest)
        baselines["mean_image"] = _image_scores(
            mean_image_baseline(train_images, len(recon)), true, n_way, n_draws, seed, "mean_image")
        baselines["retrieval"] = _image_scores(
            train_images[nearest], true, n_way, n_draws, seed, "retrieval")
    baselines["shuffled"] = {
        "pixcorr": shuffled_scores(recon, true, "pixcorr"),
        "ssim": shuffled_scores(recon, true, "ssim", n_shuffles, _child_rng(seed, "shuffled_ssim")),
    }
    for name in BASELINES:
        for metric, values in baselines.get(name, {}).items():
            columns[f"{metric}_{name}"] = values
    per_image = pd.DataFrame(columns)

    def entry(metric: str, chance) -> dict:
        stream = metric if metric in METRICS else f"boot{metric.removeprefix('nway')}"
        out = summarise(per_image[metric].to_numpy(), chance, n_boot, _child_rng(seed, stream))
        out["baselines"] = {
            name: _interval(values[metric], n_boot, _child_rng(seed, f"{metric}_{name}"))
            for name, values in baselines.items() if metric in values
        }
        if chance is None and "shuffled" in out["baselines"]:
            out["chance"] = out["baselines"]["shuffled"]["mean"]
        return out

    summary = {name: entry(name, CHANCE[name]) for name in METRICS}
    summary["nway"] = {str(n): entry(f"nway{n}", 1.0 / n) for n in n_way}
    # what was scored: the resolution goes into every header of the report
    summary["images"] = {"n": len(recon), "height": recon.shape[1], "width": recon.shape[2],
                         "channels": recon.shape[3],
                         "n_train": None if train_images is None else len(train_images)}
    return per_image, summary


def _nan_to_none(obj):
    if isinstance(obj, (np.floating, np.integer)):
        obj = obj.item()
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def write_evaluation(
    per_image: pd.DataFrame, summary: dict, tsv_path: str | Path, json_path: str | Path
) -> None:
    """Write the per-image metrics (TSV) and the summary (JSON).

    Missing values are written as ``n/a`` in the TSV (the BIDS convention) and ``null``
    in the JSON (strict JSON has no NaN).
    """
    for path in (tsv_path, json_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    per_image.to_csv(tsv_path, sep="\t", index=False, na_rep="n/a")
    Path(json_path).write_text(json.dumps(_nan_to_none(summary), indent=2) + "\n")


def read_metrics(path: str | Path) -> pd.DataFrame:
    """Read a per-image ``_metrics.tsv`` file written by :func:`write_evaluation`."""
    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False,
                       dtype={"stim_file": str})


def read_summary(path: str | Path) -> dict:
    """Read a ``_summary.json`` file; missing means and bounds come back as NaN.

    ``chance`` stays ``None`` where a metric has no chance level; ``baselines`` entries
    are restored the same way.
    """
    summary = json.loads(Path(path).read_text())

    def restore(entry: dict) -> dict:
        out = {k: (math.nan if v is None and k != "chance" else v) for k, v in entry.items()
               if k != "baselines"}
        if "baselines" in entry:
            out["baselines"] = {name: restore(b) for name, b in entry["baselines"].items()}
        return out

    out = {k: (restore(v) if k != "images" else v) for k, v in summary.items() if k != "nway"}
    out["nway"] = {n: restore(v) for n, v in summary.get("nway", {}).items()}
    return out
