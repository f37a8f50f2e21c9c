"""Training settings chosen on held-out *training* pairs, and guards against harm.

No setting is ever chosen on the test split. Before the final fit, every method is
fitted on part of the training pairs and scored on the rest (about 20% of the runs held
out whole; in a study of fewer than 3 runs, its distinct images dealt into 5 folds, each
held out once with its repetitions), for each candidate of a small declared
search (:attr:`ReconstructionMethod.VALIDATION_SEARCH`, or the entry's
``validation.search``). The best candidate is then refitted on every training pair,
under two guards:

- **own ablation**: a method with an ablation (selfsup without its cycles, dir's
  generator prior against its pixel prior; :meth:`ReconstructionMethod.ablation`)
  keeps its full model only if it beats the ablation on the validation pairs;
- **baseline**: no method is kept below the pixel-PCA baseline fitted on the same
  pairs; below it, the PCA baseline is what the entry fits and draws with.

"Beats" is on the choice's score, or, when the guard's model scores as well there, a
clearly better 2-way identification (paired 95% bootstrap interval above 0; see
:func:`_choose`): a method may trade pixel correlation for identifiability, never lose
both.

Each step is logged, and the record (:func:`fit_validated`'s ``validation_`` on the
model) is written beside the model and summarised as ``val_*`` metrics in the report.

The score is the mean pixel correlation of the reconstructions of the held-out images
(their betas averaged over repetitions, as the test betas are), a continuous score that
stays usable with the few held-out images of a small study; 2-way identification among
them is recorded beside it (``metric: ident2`` chooses by it instead).
"""

from __future__ import annotations

import hashlib
import itertools
import logging

import numpy as np

from .methods.settings import VALIDATION_DEFAULTS, validation_settings  # noqa: F401 (re-export)

log = logging.getLogger(__name__)


def image_ids(images: np.ndarray) -> np.ndarray:
    """A content hash per image: repeats of one stimulus share it."""
    return np.array([hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest() for im in images])


def holdout_split(images: np.ndarray, groups=None, fraction: float = 0.2, seed: int = 0):
    """Training pairs to fit on and pairs held out to score, image-disjoint.

    With at least 3 groups (runs), about ``fraction`` of the runs are held out whole
    (neighbouring trials share noise); otherwise about ``fraction`` of the distinct
    images, with all their repetitions. Pairs of the fitting part that show an image
    of the held-out part are dropped from it, so no held-out image is ever fitted on.

    Returns
    -------
    fit, held_out : ndarray of int
    unit : str
        ``"runs"`` or ``"images"``.
    """
    ids = image_ids(images)
    rng = np.random.default_rng([seed, 61])
    groups = None if groups is None else np.asarray(groups).astype(str)
    if groups is not None and len(np.unique(groups)) >= 3:
        unique = np.unique(groups)
        n_held = min(len(unique) - 1, max(1, int(round(fraction * len(unique)))))
        held = np.isin(groups, rng.choice(unique, n_held, replace=False))
        unit = "runs"
    else:
        unique = np.unique(ids)
        if len(unique) < 4:
            raise ValueError(f"validation: {len(unique)} distinct training images; need >= 4 "
                             f"to hold some out (set validation: false)")
        n_held = min(len(unique) - 2, max(2, int(round(fraction * len(unique)))))
        held = np.isin(ids, rng.choice(unique, n_held, replace=False))
        unit = "images"
    fit = ~held & ~np.isin(ids, ids[held])
    if fit.sum() < 2 or held.sum() < 2:
        raise ValueError("validation: the held-out split leaves too few pairs on one side")
    return np.flatnonzero(fit), np.flatnonzero(held), unit


def validation_folds(images: np.ndarray, groups=None, fraction: float = 0.2, folds=None,
                     seed: int = 0):
    """The fitting and held-out parts of each validation fold, image-disjoint.

    With 3 or more runs: one split holding out about ``fraction`` of the runs
    (:func:`holdout_split`), or ``folds`` folds of whole runs. Without (a study of one
    run), the distinct images are dealt into ``folds`` (default 5) folds, each held out
    once with all its repetitions, so every training image is scored once: one
    held-out split of a few images would choose by noise.

    Returns
    -------
    list of (fit, held_out) index arrays
    unit : str
        ``"runs"`` or ``"images"``.
    """
    ids = image_ids(images)
    by_runs = groups is not None and len(np.unique(np.asarray(groups).astype(str))) >= 3
    if by_runs and (folds is None or folds == 1):
        fit, held, unit = holdout_split(images, groups, fraction, seed)
        return [(fit, held)], unit
    if folds == 1:
        fit, held, unit = holdout_split(images, None, fraction, seed)
        return [(fit, held)], unit
    units = np.asarray(groups).astype(str) if by_runs else ids
    unique = np.unique(units)
    k = min(folds or 5, len(unique) // 2)
    if k < 2:
        raise ValueError(f"validation: {len(unique)} distinct training images; need >= 4 to "
                         f"hold some out (set validation: false)")
    order = np.random.default_rng([seed, 61]).permutation(len(unique))
    out = []
    for f in range(k):
        held = np.isin(units, unique[order[f::k]])
        fit = ~held & ~np.isin(ids, ids[held])
        out.append((np.flatnonzero(fit), np.flatnonzero(held)))
    return out, "runs" if by_runs else "images"


def average_by_image(betas: np.ndarray, images: np.ndarray):
    """Betas averaged over the repetitions of each image (as test betas are), and the
    distinct images, in order of first appearance."""
    ids = image_ids(images)
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    order = np.argsort(first)
    avg = np.stack([betas[inverse == k].mean(0) for k in order])
    return avg.astype(np.float32), images[first[order]]


def scores(recon: np.ndarray, true: np.ndarray) -> dict:
    """Per-image ``pixcorr`` and exhaustive ``ident2`` (by pixel correlation)."""
    from .evaluation import identification_2way, pixcorr, similarity_matrix

    out = {"pixcorr": pixcorr(recon, true)}
    out["ident2"] = (identification_2way(similarity_matrix(recon, true)) if len(true) > 2
                     else np.full(len(true), np.nan))
    return out


def candidates(search: dict) -> list[dict]:
    """Every combination of the ``search`` values ([{}] for an empty search)."""
    keys = sorted(search)
    return [dict(zip(keys, values)) for values in itertools.product(*(search[k] for k in keys))]


def _label(overrides: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(overrides.items())) or "as configured"


def _summary(per_image: dict) -> dict:
    return {name: float(np.nanmean(v)) if np.any(np.isfinite(v)) else float("nan")
            for name, v in per_image.items()}


def fit_validated(cls, settings: dict, seed: int, betas, images, groups=None, **fit_kwargs):
    """Fit ``cls`` with the settings its validation chooses, under the guards.

    Parameters
    ----------
    cls : type of ReconstructionMethod
    settings : dict
        The method's settings (``validation`` included, workflow keys excluded).
    seed : int
    betas, images, groups
        Training pairs and their runs.
    **fit_kwargs
        Passed to every ``fit`` (e.g. unpaired betas and images).

    Returns
    -------
    ReconstructionMethod
        Fitted on every training pair, with ``validation_`` (a dict: the split, each
        candidate's validation scores, the choice, the guards that acted, in words).
    """
    from .methods.pca import PCAReconstruction

    settings = dict(settings)
    options = validation_settings(settings.pop("validation", None), f"methods.{cls.name}.validation")
    if not options["enabled"]:
        model = cls(seed=seed, **settings).fit(betas, images, groups=groups, **fit_kwargs)
        model.validation_ = {"enabled": False}
        return model
    search = options["search"] if options["search"] is not None else cls.validation_search(settings)
    known = cls.setting_defaults()
    for key in search:
        if key not in known:
            from .methods.settings import unknown_key_message

            raise ValueError(unknown_key_message(f"methods.{cls.name}.validation.search", key, known))
    betas = np.asarray(betas, dtype=np.float32)
    images = np.asarray(images, dtype=np.float32)
    folds, unit = validation_folds(images, groups, options["fraction"], options["folds"], seed)
    ablation = cls.ablation(settings)
    entries = [{"overrides": c, "role": "candidate"} for c in candidates(search)]
    if ablation is not None:
        entries.append({"overrides": ablation, "role": "ablation"})
    if options["baseline"] == "pca" and cls is not PCAReconstruction:
        entries.append({"overrides": {}, "role": "baseline pca"})
    val_images, notes_fit = _score(cls, settings, search, entries, folds, unit, seed, betas, images,
                                   groups, fit_kwargs)
    chosen, notes = _choose(entries, options["metric"], seed)
    for note in notes:
        log.warning("%s: %s", cls.name, note)

    if chosen["role"] == "baseline pca":
        model = PCAReconstruction(seed=seed).fit(betas, images, groups=groups)
    else:
        model = cls(seed=seed, **{**settings, **chosen["overrides"]}).fit(
            betas, images, groups=groups, **fit_kwargs)
    model.validation_ = {
        "enabled": True, "metric": options["metric"], "held_out": unit, "folds": len(folds),
        "n_fit_pairs": [int(len(fit)) for fit, _ in folds],
        "n_validation_images": int(len(val_images)),
        "search": {k: list(v) for k, v in search.items()},
        "entries": [{"settings": e["overrides"], "role": e["role"], **e["scores"],
                     "pixcorr_per_image": [float(x) for x in e["per_image"]["pixcorr"]],
                     "ident2_per_image": [float(x) for x in e["per_image"]["ident2"]]}
                    for e in entries],
        "chosen": {"role": chosen["role"], "settings": chosen["overrides"]},
        "fallback": None if chosen["role"] == "candidate" else chosen["role"],
        "notes": notes + list(getattr(model, "guards_", [])),
        "validation_fit_notes": notes_fit,
    }
    log.info("validation of %s chose %s (%s)", cls.name, _label(chosen["overrides"]), chosen["role"])
    return model


def _score(cls, settings, search, entries, folds, unit, seed, betas, images, groups, fit_kwargs):
    """Fit on each fold's fitting part, reconstruct its held-out images with every entry,
    and score each entry on all held-out images pooled (``entry["scores"]``).

    Returns the held-out images (pooled) and the guards that acted in the validation fits.
    """
    from .methods.pca import PCAReconstruction

    recons = {id(e): [] for e in entries}
    truth, notes_fit = [], []
    base_settings = cls.validation_fit_settings(settings, search)
    defaults = cls.setting_defaults()
    for f, (fit_idx, held_idx) in enumerate(folds):
        val_betas, val_images = average_by_image(betas[held_idx], images[held_idx])
        fit_groups = None if groups is None else np.asarray(groups)[fit_idx]
        log.info("validation of %s, fold %d/%d: fitting on %d pairs, scoring %d held-out "
                 "images (%s held out)", cls.name, f + 1, len(folds), len(fit_idx),
                 len(val_images), unit)
        part = dict(betas=betas[fit_idx], images=images[fit_idx], groups=fit_groups,
                    **_part_fit_kwargs(fit_kwargs, val_betas))
        # One fit on the fitting part serves every candidate the method can draw without
        # a refit (e.g. other inversion settings, the ablation decoder trained beside it).
        base = cls(seed=seed, **_part_settings(base_settings, f"validation-{f}")).fit(**part)
        notes_fit += [n for n in getattr(base, "guards_", []) if n not in notes_fit]
        for i, entry in enumerate(entries):
            if entry["role"] == "baseline pca":
                pca = PCAReconstruction(seed=seed).fit(betas[fit_idx], images[fit_idx],
                                                       groups=fit_groups)
                recons[id(entry)].append(pca.reconstruct(val_betas))
                continue
            # overrides the base fit already has are no change to it
            changed = {k: v for k, v in entry["overrides"].items()
                       if base_settings.get(k, defaults.get(k)) != v}
            recon = base.reconstruct_with(val_betas, changed)
            if recon is None:
                model = cls(seed=seed, **_part_settings({**settings, **entry["overrides"]},
                                                        f"validation-{f}-{i}")).fit(**part)
                recon = model.reconstruct(val_betas)
            recons[id(entry)].append(recon)
        truth.append(val_images)
    val_images = np.concatenate(truth)
    for entry in entries:
        # pooled over folds: 2-way identification among every held-out image
        entry["per_image"] = scores(np.concatenate(recons[id(entry)]), val_images)
        entry["scores"] = _summary(entry["per_image"])
        log.info("validation of %s: %s (%s): pixcorr %.3f, ident2 %.3f", cls.name,
                 _label(entry["overrides"]), entry["role"], entry["scores"]["pixcorr"],
                 entry["scores"]["ident2"])
    return val_images, notes_fit


def _choose(entries: list[dict], metric: str, seed: int = 0) -> tuple[dict, list[str]]:
    """The best candidate, unless its own ablation or the pca baseline replaces it; and,
    in words, which guard acted.

    A guard's model replaces the full one when it scores at least as well on ``metric``,
    unless the full model identifies the held-out images clearly better
    (:func:`_clearly_better`: its paired gain in 2-way identification, or in PixCorr when
    ``metric`` is ident2, has a 95% bootstrap interval above 0). A method may trade pixel
    correlation for identification (selfsup's images are less smooth than pca's), but a
    gain within the noise of a few held-out images never keeps it.
    """
    other = "pixcorr" if metric == "ident2" else "ident2"
    best = max((e for e in entries if e["role"] == "candidate"),
               key=lambda e: (np.nan_to_num(e["scores"][metric], nan=-np.inf),
                              np.nan_to_num(e["scores"]["pixcorr"], nan=-np.inf)))
    chosen, notes = best, []
    for guard in [e for e in entries if e["role"] == "ablation"] + \
            [e for e in entries if e["role"] == "baseline pca"]:
        name = "the pca baseline" if guard["role"] == "baseline pca" else \
            f"the ablation ({_label(guard['overrides'])})"
        if guard["scores"][metric] < chosen["scores"][metric]:
            continue
        gain = _clearly_better(chosen, guard, other, seed)
        if gain is not None:
            notes.append(f"{name} scored {guard['scores'][metric]:.3f} >= "
                         f"{chosen['scores'][metric]:.3f} {metric} on the validation pairs, but "
                         f"{_label(chosen['overrides'])} identifies them better ({other} "
                         f"{gain[0]:+.3f} [{gain[1]:+.3f}, {gain[2]:+.3f}]): it is kept")
            continue
        notes.append(f"{name} scored {guard['scores'][metric]:.3f} >= "
                     f"{chosen['scores'][metric]:.3f} {metric} on the validation pairs and the "
                     f"full model is not clearly better on {other}: "
                     + ("this entry fits and draws with the pca baseline"
                        if guard["role"] == "baseline pca" else "the ablation is used"))
        chosen = guard
    return chosen, notes


def _clearly_better(a: dict, b: dict, key: str, seed: int = 0, n_boot: int = 2000):
    """``(mean, ci_low, ci_high)`` of entry ``a``'s per-image gain over ``b`` in ``key``
    when its 95% paired bootstrap interval lies above 0, else None."""
    diff = np.asarray(a["per_image"][key], np.float64) - np.asarray(b["per_image"][key], np.float64)
    diff = diff[np.isfinite(diff)]
    if len(diff) < 3:
        return None
    rng = np.random.default_rng([seed, 79])
    means = diff[rng.integers(0, len(diff), (n_boot, len(diff)))].mean(1)
    low, high = np.quantile(means, [0.025, 0.975])
    return (float(diff.mean()), float(low), float(high)) if low > 0 else None


def _part_fit_kwargs(fit_kwargs: dict, held_out_betas: np.ndarray) -> dict:
    """Fit arguments of a fit on part of the pairs: the held-out betas join the unpaired
    betas (never their images), as the test betas do in the final fit."""
    out = dict(fit_kwargs)
    if "unpaired_betas" in out:
        unpaired = out["unpaired_betas"]
        out["unpaired_betas"] = held_out_betas if unpaired is None or not len(unpaired) \
            else np.concatenate([np.asarray(unpaired, np.float32), held_out_betas])
    return out


def _part_settings(settings: dict, name: str) -> dict:
    """Settings of a fit on part of the pairs: its checkpoints in a subfolder, so they
    never overwrite (or resume) the final fit's."""
    out = dict(settings)
    if out.get("checkpoint_dir"):
        from pathlib import Path

        out["checkpoint_dir"] = str(Path(out["checkpoint_dir"]) / name)
    return out


def validation_metrics(record: dict | None, n_boot: int = 2000, seed: int = 0) -> dict:
    """``val_*`` entries of a model's validation record, for the summary and report.

    ``val_pixcorr`` (the kept model), ``val_pixcorr_ablation`` and
    ``val_pixcorr_pca`` when they were scored, ``val_fallback`` (1 when the ablation or
    the baseline replaced the method, else 0): means over the held-out training images
    with 95% bootstrap CIs; chance 0.
    """
    from .evaluation import summarise

    if not record or not record.get("enabled"):
        return {}
    rng = np.random.default_rng([seed, 67])
    out = {}
    chosen = record["chosen"]
    for entry in record["entries"]:
        values = np.asarray(entry["pixcorr_per_image"], dtype=np.float64)
        if entry["role"] == chosen["role"] and entry["settings"] == chosen["settings"]:
            out["val_pixcorr"] = summarise(values, 0.0, n_boot, rng)
        if entry["role"] == "ablation":
            out["val_pixcorr_ablation"] = summarise(values, 0.0, n_boot, rng)
        if entry["role"] == "baseline pca":
            out["val_pixcorr_pca"] = summarise(values, 0.0, n_boot, rng)
    flag = 0.0 if record.get("fallback") is None else 1.0
    out["val_fallback"] = {"mean": flag, "ci_low": flag, "ci_high": flag, "chance": None}
    return out
