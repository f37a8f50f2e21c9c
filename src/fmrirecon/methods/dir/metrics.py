"""The dir method's own metrics (``extra_metrics``), computed after fitting.

Functions of the fitted model: decoded-feature accuracy, feature identification of
the reconstructions, the paired comparison of the two priors, and generalisation
across stimulus families (a copy fitted on one family: the cost of its ``method_metrics``
job).
"""

from __future__ import annotations

import logging

import numpy as np

from .scores import decoded_feature_scores, identification_scores

log = logging.getLogger(__name__)


def extra_metrics(model, data):
    """Decoded-feature accuracy, feature identification of the reconstructions and,
    with ``generalisation``, decoding across stimulus families.

    Entries (95% bootstrap CIs over images):

    - ``featpattern_<layer>``, ``featident2_<layer>``: pattern correlation and 2-way
      identification of the *decoded* features with the true ones (chance 0, 0.5);
    - ``reconfeat_ident2_<layer>`` and ``reconfeat_ident2`` (mean over layers): 2-way
      identification of the *reconstructions* by the correlation of their features
      with those of the shown images, in this method's network (chance 0.5);
    - ``weights_accuracy``: held-out accuracy of a locally trained network;
    - with ``generalisation`` and a ``family`` column in the stimuli table, see
      :meth:`generalisation_metrics`.
    """
    from ...evaluation import summarise
    from ...features import network_summary

    rng = np.random.default_rng(data.seed)
    scores = decoded_feature_scores(model.decode_layers(data.test_betas),
                                    model.true_features(data.test_images),
                                    model.feature_mean_, model.feature_std_)
    out = {}

    def add(name, values, chance):
        out[name] = summarise(values, chance, data.n_boot, rng)

    for layer, score in scores.items():
        for kind, chance in (("pattern", 0.0), ("ident2", 0.5)):
            add(f"feat{kind}_{layer}", score[kind], chance)
    if len(data.test_betas) > 1:
        recon = data.recon if data.recon is not None else model.reconstruct(data.test_betas)
        by_layer = model.feature_identification(recon, np.asarray(data.test_images, np.float32))
        for layer, values in by_layer.items():
            add(f"reconfeat_ident2_{layer}", values, 0.5)
        add("reconfeat_ident2", np.nanmean(np.vstack(list(by_layer.values())), 0), 0.5)
    entry = network_summary(model.weights)  # {} unless trained here
    if entry:
        out["weights_accuracy"] = entry
    if model.compare_priors and len(data.test_betas) > 1:
        out.update(prior_comparison(model, data, recon))
    if model.generalisation is not None:
        out.update(generalisation_metrics(model, data))
    return out

def prior_comparison(model, data, recon=None) -> dict:
    """Paired comparison of this model's prior with the other one.

    The decoded features are inverted again with the other prior (``pixel`` <->
    ``generator``); per image, ``prior_gain_<score>`` is the score of this model's
    reconstruction minus that of the other, for ``pixcorr``, ``ident2_pixel`` and
    ``ident2_feature`` (see :func:`identification_scores`), with a 95% bootstrap CI
    over images (chance 0: no difference). Pairing by image removes the spread
    between images that two separate intervals would carry.
    """
    from ...evaluation import summarise

    other = "pixel" if model.prior == "generator" else "generator"
    true = np.asarray(data.test_images, dtype=np.float32)
    if recon is None:
        recon = model.reconstruct(data.test_betas)
    mine = identification_scores(recon, true, model.feature_identification)
    theirs = identification_scores(model.invert(model.decode_layers(data.test_betas), prior=other),
                                   true, model.feature_identification)
    rng = np.random.default_rng([data.seed, 23])
    out = {}
    for score in mine:
        diff = np.asarray(mine[score], np.float64) - np.asarray(theirs[score], np.float64)
        out[f"prior_gain_{score}"] = summarise(diff, 0.0, data.n_boot, rng)
    return out

def generalisation_metrics(model, data) -> dict:
    """Family generalisation (Shen et al. 2019): train on one family, test on others.

    A copy of this model (same settings and seed) is fitted on the training trials
    of the family ``generalisation["train"]`` only, and reconstructs the split's
    items of each family in ``generalisation["test"]`` (default: every family).
    For each test family ``f``, entries ``gen_<train>_to_<f>_<score>`` and, from this
    model (trained on every family), ``gen_all_to_<f>_<score>``, where ``<score>`` is
    ``pixcorr`` (chance 0), ``ident2_pixel`` and ``ident2_feature`` (2-way
    identification among that family's items by pixel and by deep-feature
    correlation, in this model's network; chance 0.5). 95% bootstrap CIs over items.
    Empty, with a warning, without a ``family`` column.
    """
    from ...evaluation import summarise

    from ...stimuli import stimulus_column

    table = data.stimuli
    if table is None or "family" not in table:
        log.warning("dir generalisation: the stimuli table has no 'family' column; skipped")
        return {}
    train_fam, test_fam = (
        stimulus_column(table, files, "family", "stimuli/stimuli.tsv").astype(str)
        for files in (data.train_stim_files, data.test_stim_files))
    source = model.generalisation["train"]
    targets = model.generalisation.get("test") or sorted(set(test_fam))
    keep = train_fam == source
    if keep.sum() < 3:
        raise ValueError(f"methods.dir.generalisation.train: {keep.sum()} training trials "
                         f"of family {source!r} (families: {sorted(set(train_fam))})")
    settings = {**model.settings(), "generalisation": None}
    narrow = type(model)(seed=model.seed, **settings)
    narrow._extractor, narrow._generator = model._extractor, model._generator
    log.info("dir generalisation: fitting on %d %s training trials", keep.sum(), source)
    narrow.fit(np.asarray(data.train_betas)[keep], np.asarray(data.train_images)[keep])
    betas = np.asarray(data.test_betas, dtype=np.float32)
    true = np.asarray(data.test_images, dtype=np.float32)
    models = {source: narrow, "all": model}
    rng = np.random.default_rng([data.seed, 17])
    out = {}
    for name, fitted in models.items():
        # this model's own reconstructions were drawn already (the recon file)
        recon = data.recon if fitted is model and data.recon is not None else fitted.reconstruct(betas)
        for family in targets:
            sel = test_fam == family
            if sel.sum() < 2:
                log.warning("dir generalisation: %d test items of %s", sel.sum(), family)
                continue
            scores = identification_scores(recon[sel], true[sel], model.feature_identification)
            for score, values in scores.items():
                out[f"gen_{name}_to_{family}_{score}"] = summarise(
                    values, 0.0 if score == "pixcorr" else 0.5, data.n_boot, rng)
    return out
