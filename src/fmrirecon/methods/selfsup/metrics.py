"""The self-supervised method's own metrics (``extra_metrics``), computed after fitting.

Functions of the fitted model: they read it and never change it.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def extra_metrics(model, data):
    """Encoder quality, semantic classification and the perceptual network's accuracy.

    - ``encoder_r``: mean over voxels of the correlation, across the split's stimuli,
      of the encoder's predicted responses to the images with the measured
      (repetition-averaged) responses; chance 0. ``encoder_ceiling_r``: mean over
      voxels of the best achievable r, ``sqrt(noise ceiling / 100)`` (no interval).
      ``encoder_fraction_of_ceiling``: variance explained (``r^2``, signed) summed
      over voxels with a positive ceiling, divided by their summed ceiling.
      Intervals: 95% bootstrap over stimuli.
    - with ``semantic_folder``: ``semantic_top<k>``, classification of each
      reconstruction among all classes of that folder by the correlation of its
      deep features (``semantic_layers``) with class prototypes, the mean
      features of the folder's images not shown in the study (chance ``k`` / number
      of classes; see :func:`fmrirecon.semantic.semantic_classification`);
      ``semantic_unseen_top<k>`` for the items whose class has no training image;
      ``semantic_decoded_top<k>`` (and ``_unseen``), the same with deep features
      decoded straight from the betas (:func:`decode_features`) instead of the
      reconstruction's;
      ``semantic_stimulus_top<k>``, the same classifier on the shown images
      themselves (what a perfect reconstruction would score).
    - ``featnway<n>``: n-way identification (n = 2, 5, 10, 50) of the reconstructions
      by deep-feature similarity (:func:`feature_similarity`) instead of pixel
      correlation; chance ``1 / n``.
    - with ``ablation``: ``cycles_gain_*``, see :func:`ablation_metrics`.
    - ``perceptual_net_accuracy``: held-out accuracy of a locally trained perceptual
      network (absent for random or external weights).
    """
    out = encoder_metrics(model, data)
    quality = getattr(model, "encoder_quality_", None)
    if quality is not None:
        # what the encoder guard judged: held-out training pairs, not this split
        out["encoder_heldout_r2"] = {"mean": quality["r2"], "ci_low": quality["ci_low"],
                                     "ci_high": quality["ci_high"], "chance": 0.0}
    if len(data.test_betas) > 1:
        out.update(feature_identification_metrics(model, data))
    if "cycles" in model.variants and "pairs" in model.variants and len(data.test_betas) > 1:
        out.update(ablation_metrics(model, data))
    if model.settings["semantic_folder"]:
        out.update(semantic_metrics(model, data))
    from ...features import network_summary

    entry = network_summary(model.settings["perceptual_weights"])  # {} unless trained here
    if entry:
        out["perceptual_net_accuracy"] = entry
    return out

def encoder_metrics(model, data) -> dict:
    """The ``encoder_*`` entries of :meth:`extra_metrics`."""
    from ...semantic import encoder_quality

    measured = np.asarray(data.test_betas, dtype=np.float64)
    predicted = model.predict_betas(data.test_images).astype(np.float64)
    if len(measured) < 3:
        return {}
    nc = None if data.noise_ceiling is None else np.asarray(data.noise_ceiling, np.float64)
    r, _ = encoder_quality(predicted, measured, nc)
    rng = np.random.default_rng([data.seed, 5])
    boot = {"r": [], "frac": []}
    ok = None if nc is None else (nc > 0) & np.isfinite(nc)

    def fraction(rr):
        good = ok & np.isfinite(rr)
        return float(np.sum(100 * np.sign(rr[good]) * rr[good] ** 2) / np.sum(nc[good])) \
            if good.any() else np.nan

    for _ in range(data.n_boot):
        idx = rng.integers(0, len(measured), len(measured))
        rb, _ = encoder_quality(predicted[idx], measured[idx])
        boot["r"].append(np.nanmean(rb) if np.any(np.isfinite(rb)) else np.nan)
        if nc is not None:
            boot["frac"].append(fraction(rb))

    def entry(mean, values, chance):
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        low, high = (np.quantile(values, [0.025, 0.975]) if len(values)
                     else (np.nan, np.nan))
        return {"mean": float(mean), "ci_low": float(low), "ci_high": float(high),
                "chance": chance}

    out = {"encoder_r": entry(np.nanmean(r), boot["r"], 0.0)}
    if nc is not None:
        ceiling = np.sqrt(np.clip(nc[np.isfinite(nc)], 0, 100) / 100)
        out["encoder_ceiling_r"] = {"mean": float(np.mean(ceiling)), "ci_low": np.nan,
                                    "ci_high": np.nan, "chance": None}
        out["encoder_fraction_of_ceiling"] = entry(fraction(r), boot["frac"], 0.0)
    return out

def feature_similarity(model, recon, data) -> np.ndarray:
    """Similarity (n, n) of reconstructions to the split's images by deep features.

    Features of the perceptual network's ``identification_layers``, each unit
    z-scored with the training images' statistics, correlated and averaged over
    layers (:func:`fmrirecon.features.feature_similarity`). The decoders learn with
    this network's perceptual loss, so it is not an independent judge of them; it
    compares variants trained with the same loss fairly.
    """
    from ...features import feature_similarity

    extractor = model.feature_extractor(model.settings["identification_layers"])
    return feature_similarity(np.asarray(recon, np.float32),
                              np.asarray(data.test_images, np.float32), extractor,
                              reference=np.asarray(data.train_images, np.float32))

def feature_identification_metrics(model, data, n_way=(2, 5, 10, 50),
                                   n_draws: int = 1000) -> dict:
    """``featnway<n>`` of :meth:`extra_metrics`: n-way identification by deep features."""
    from ...evaluation import identification_nway, summarise

    recon = data.recon if data.recon is not None else model.reconstruct(data.test_betas)
    sim = model.feature_similarity(recon, data)
    out = {}
    for n in n_way:
        if n <= len(sim):
            # The distractor draws of ablation_metrics: the entries agree.
            acc = identification_nway(sim, n, n_draws=n_draws,
                                      rng=np.random.default_rng([data.seed, 29, n]))
            out[f"featnway{n}"] = summarise(acc, 1.0 / n, data.n_boot,
                                            np.random.default_rng([data.seed, 41, n]))
    return out

def ablation_metrics(model, data, n_way=(2, 5, 10, 50), n_draws: int = 1000) -> dict:
    """Paired comparison of the decoders trained with and without cycles (``ablation``).

    Both decoders share the encoder and their initial weights; per test image,
    ``cycles_gain_pixcorr`` is the pixel correlation of the cycles decoder minus that
    of the pairs-only one, ``cycles_gain_nway<n>`` the same for n-way identification
    by pixel correlation (the standard evaluation's) and ``cycles_gain_featnway<n>``
    by deep-feature similarity (:func:`feature_similarity`), with the same
    distractor draws for both decoders. 95% bootstrap CIs over images; chance 0.
    """
    from ...evaluation import identification_nway, pixcorr, similarity_matrix, summarise

    true = np.asarray(data.test_images, dtype=np.float32)
    scores = {}
    for variant in ("cycles", "pairs"):
        recon = model.reconstruct(data.test_betas, variant=variant)
        scores[variant] = {"pixcorr": pixcorr(recon, true)}
        sims = {"nway": similarity_matrix(recon, true, "pixcorr"),
                "featnway": model.feature_similarity(recon, data)}
        for prefix, sim in sims.items():
            for n in n_way:
                if n <= len(true):
                    scores[variant][f"{prefix}{n}"] = identification_nway(
                        sim, n, n_draws=n_draws, rng=np.random.default_rng([data.seed, 29, n]))
    rng = np.random.default_rng([data.seed, 31])
    out = {}
    for name in scores["cycles"]:
        diff = scores["cycles"][name] - scores["pairs"][name]
        out[f"cycles_gain_{name}"] = summarise(diff, 0.0, data.n_boot, rng)
    return out

def semantic_metrics(model, data) -> dict:
    """The ``semantic_*`` entries of :meth:`extra_metrics` (needs ``semantic_folder``
    and a stimuli table with ``source_file`` and the ``semantic_label`` column)."""
    from ...features import extract_features
    from ...semantic import prototypes_from_folder, semantic_classification, unseen_mask

    s = model.settings
    label = s["semantic_label"]
    table = data.stimuli
    if table is None or label not in table or "source_file" not in table:
        log.warning("selfsup: no stimuli table with source_file and %r; no semantic "
                    "classification", label)
        return {}
    lookup = table.set_index(table["stim_file"].astype(str))
    test_labels = lookup.loc[np.asarray(data.test_stim_files, dtype=str), label].astype(str)
    train_labels = lookup.loc[np.asarray(data.train_stim_files, dtype=str), label].astype(str)
    extractor = model.feature_extractor(s["semantic_layers"])
    log.info("selfsup semantic classification: %s", extractor.provenance)
    size, _, channels = model.image_shape_
    # Every image of the study (train and test) stays out of the prototypes.
    protos, names, _ = prototypes_from_folder(
        s["semantic_folder"], extractor, size, channels, label_column=label,
        exclude=table["source_file"].dropna().astype(str).tolist(),
        max_per_class=s["semantic_max_per_class"], seed=model.seed)
    known = np.isin(test_labels.to_numpy(), names)
    if not known.all():
        log.warning("selfsup: %d test items of classes without prototypes left out",
                    (~known).sum())
    recon = (data.recon if data.recon is not None else model.reconstruct(data.test_betas))[known]
    labels = test_labels.to_numpy()[known]
    unseen = unseen_mask(labels, train_labels.to_numpy())
    log.info("selfsup: %d of %d test items of classes without training images",
             unseen.sum(), len(labels))
    out = {}
    recon_feats = extract_features(recon, extractor)
    decoded = {layer: values[known] for layer, values in
               decode_features(model, data, extractor).items()}
    everything = np.ones(len(labels), bool)
    sets = {"semantic": (recon_feats, everything),
            "semantic_unseen": (recon_feats, unseen),
            "semantic_decoded": (decoded, everything),
            "semantic_decoded_unseen": (decoded, unseen),
            "semantic_stimulus": (extract_features(np.asarray(data.test_images)[known], extractor),
                                  everything)}
    for prefix, (all_feats, keep) in sets.items():
        if keep.sum() == 0:
            continue
        feats = {layer: values[keep] for layer, values in all_feats.items()}
        _, summary = semantic_classification(feats, labels[keep], protos, names,
                                             k=s["semantic_k"], n_boot=data.n_boot,
                                             seed=data.seed)
        for kk in sorted({int(v) for v in s["semantic_k"]}):
            out[f"{prefix}_top{kk}"] = summary[f"top{kk}"]
    return out

def decode_features(model, data, extractor) -> dict:
    """Deep features of the test items decoded straight from their betas.

    The shared ridge decoder (:class:`fmrirecon.decoding.RidgeDecoder`, a penalty
    per unit) learns the map from the training betas to the features of their
    images, as Horikawa & Kamitani (2017) decoded features for unseen categories;
    no image is drawn. Returns ``{layer: (n_test, units)}``.
    """
    from ...decoding import RidgeDecoder
    from ...features import extract_features

    train = extract_features(np.asarray(data.train_images), extractor)
    layers = list(train)
    decoder = RidgeDecoder(device=model.device_, seed=model.seed).fit(
        data.train_betas, np.concatenate([train[layer] for layer in layers], axis=1))
    predicted = decoder.predict(data.test_betas)
    edges = np.cumsum([train[layer].shape[1] for layer in layers])[:-1]
    return dict(zip(layers, np.split(predicted, edges, axis=1)))
