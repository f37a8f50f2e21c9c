"""Image-level metrics of reconstructions: pixel correlation, SSIM and identification.

The metrics follow the natural-scenes reconstruction papers (Ozcelik & VanRullen 2023,
Takagi & Nishimoto 2023) so that numbers are comparable:

- ``pixcorr``: Pearson correlation of the flattened pixels of a reconstruction and the
  image that was shown;
- ``ssim``: structural similarity of the grayscale images with Gaussian weights;
- identification: whether a reconstruction is more similar to its own image than to
  other test images, either against every other image (exhaustive 2-way) or against
  random sets of ``n - 1`` distractors (n-way).

The per-image metrics are computed in :mod:`fmrirecon.image_metrics` (re-exported here).
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

import hashlib
import json
import math
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

# the metrics live in image_metrics; imported here for evaluate() and re-exported, so
# that fmrirecon.evaluation stays the one import of every metric
from .image_metrics import (_as_rng, _check_pair, correlation_matrix, identification_2way,
                            identification_nway, pixcorr, similarity_matrix, ssim)

#: Per-image metrics, in the column order of the ``_metrics.tsv`` file.
METRICS = ("pixcorr", "ssim", "ident2")

#: Chance level of the identification metrics; PixCorr and SSIM take theirs from the
#: ``shuffled`` baseline (``None`` here).
CHANCE = {"pixcorr": None, "ssim": None, "ident2": 0.5}

#: Baselines scored like a method, in display order (see the module docstring).
BASELINES = ("mean_image", "retrieval", "shuffled")

#: Partners per image of the shuffled SSIM baseline (PixCorr uses every other image).
N_SHUFFLES = 20


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


# Over 80 lines for its numpydoc docstring (40 lines): the code is one 57-line pass.
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
                         "n_train": None if train_images is None else len(train_images),
                         "in_training": (None if train_images is None else
                                         seen_in_training(true, stim_files, train_images, train_stim_files))}
    return per_image, summary


def seen_in_training(true: np.ndarray, stim_files: Sequence[str], train_images: np.ndarray,
                     train_stim_files: Sequence[str] | None = None) -> int:
    """How many test images were also training images: same stimulus file, or the same
    pixels at the evaluated resolution (datasets that name one image twice).

    Such a test split measures held-out trials of seen images, not new images, and the
    retrieval baseline can then be perfect; the report says so.
    """
    def digest(image):
        return hashlib.sha1(np.ascontiguousarray(np.round(image, 6)).tobytes()).hexdigest()

    names = set(map(str, train_stim_files)) if train_stim_files is not None else set()
    pixels = {digest(image) for image in np.asarray(train_images, dtype=np.float64)}
    return int(sum(str(name) in names or digest(image) in pixels
                   for name, image in zip(stim_files, np.asarray(true, dtype=np.float64))))


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
