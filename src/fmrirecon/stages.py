"""The work of each workflow step, as plain functions of paths and settings.

Each Snakemake rule calls one function here through a two-line script, so that a step
can be run, tested and debugged without Snakemake.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from .betas import Betas, read_betas
from .stimuli import read_stimuli_table, stimulus_column, stimulus_sources
from .images import load_images, save_grid
from .methods import EvaluationData, ReconstructionMethod, get_method, implementation

log = logging.getLogger(__name__)


def load_stimuli(stimuli_dir: str | Path, stim_files, size: int, channels: int) -> np.ndarray:
    """The images named by ``stim_files`` (relative to the BIDS ``stimuli/`` folder)."""
    return load_images([Path(stimuli_dir) / s for s in stim_files], size, channels)


def voxel_columns(betas: Betas, mask_path: str | Path) -> np.ndarray:
    """Boolean selection of the betas' columns inside the NIfTI mask at ``mask_path``."""
    mask = np.asarray(nib.load(mask_path).dataobj) > 0
    if mask.shape != tuple(betas.shape):
        raise ValueError(f"{mask_path}: grid {mask.shape} differs from the betas' {betas.shape}")
    i, j, k = betas.voxel_ijk.T
    return mask[i, j, k]


def select_voxels(betas_path, trials_path, settings: dict, out_mask) -> None:
    """Write the voxels the decoders use as a NIfTI mask (config section ``voxels``)."""
    from .voxels import select_voxels as select

    betas = read_betas(betas_path, trials_path)
    keep = select(
        betas, method=settings["select"], n_top=settings["n_top"],
        min_reliability=settings["min_reliability"], mask_img=settings["mask"],
        atlas_img=settings["atlas"], atlas_labels=settings["atlas_labels"] or None,
    )
    data = np.zeros(betas.shape, dtype=np.uint8)
    i, j, k = betas.voxel_ijk[keep].T
    data[i, j, k] = 1
    nib.save(nib.Nifti1Image(data, betas.affine), out_mask)
    log.info("selected %d of %d voxels (%s)", keep.sum(), len(keep), settings["select"])


def run_groups(trials: pd.DataFrame) -> np.ndarray:
    """``[<session>_]<task>_<run>`` of each trial: the groups cross-validation leaves out
    whole (run labels repeat across sessions)."""
    groups = trials["task"].astype(str) + "_" + trials["run"].astype(str)
    if "session" in trials:
        session = trials["session"].fillna("").astype(str)
        groups = session.where(session == "", session + "_") + groups
    return groups.to_numpy()


def method_class(name: str, settings: dict) -> type[ReconstructionMethod]:
    """The class behind the config entry ``methods.<name>`` (see :func:`implementation`)."""
    return get_method(implementation(name, settings))


def describe_fit(model, name: str = "model") -> None:
    """Log what a fitted method decided: each ridge decoder's penalties and CV scores.

    Looks for decoders among the model's attributes (objects with ``best_alphas_``
    and ``cv_scores_``, :class:`fmrirecon.decoding.RidgeDecoder`).
    """
    for attr, value in sorted(vars(model).items()):
        if hasattr(value, "best_alphas_") and hasattr(value, "cv_scores_"):
            alphas = np.asarray(value.best_alphas_, dtype=float)
            scores = np.asarray(value.cv_scores_, dtype=float)
            grid = np.asarray(getattr(value, "alphas", alphas), dtype=float)
            edge = int(np.sum((alphas == grid.min()) | (alphas == grid.max())))
            log.info("%s.%s: %d targets; penalty per target median %.3g (%.3g to %.3g; %d at the "
                     "grid's edge %.3g/%.3g); CV R2 median %.3f (10th-90th percentile %.3f to %.3f)",
                     name, attr, len(alphas), np.median(alphas), alphas.min(), alphas.max(), edge,
                     grid.min(), grid.max(), np.nanmedian(scores), np.nanpercentile(scores, 10),
                     np.nanpercentile(scores, 90))
        elif attr.endswith("_") and hasattr(value, "__dict__") and not isinstance(value, type) \
                and any(hasattr(v, "best_alphas_") for v in vars(value).values()):
            describe_fit(value, f"{name}.{attr}")
    history = model.training_history() if hasattr(model, "training_history") else None
    if history is not None and len(history):
        last = history.iloc[-1]
        losses = {k: v for k, v in last.items() if k not in ("epoch", "seconds", "phase", "variant")
                  and isinstance(v, (int, float, np.number)) and np.isfinite(v)}
        log.info("%s: %d epochs logged; last: %s", name, len(history),
                 ", ".join(f"{k} {v:.4g}" for k, v in losses.items()))


def fit_method(betas_path, trials_path, voxels_path, stimuli_dir, method: str,
               settings: dict, images: dict, seed: int, out_model, out_history,
               work_dir=None, out_validation=None,
               unpaired_splits=("test",)) -> ReconstructionMethod:
    """Fit the config's reconstruction ``method`` on the training trials and save it.

    The method's training settings are chosen on held-out training pairs, under its
    guards (:func:`fmrirecon.validation.fit_validated`); the record goes to
    ``out_validation`` (JSON). Methods that learn from unpaired betas get those of
    ``unpaired_splits`` (config ``unpaired.betas``). Also writes the method's training curves to
    ``out_history`` (a TSV with a header only for methods that do not train iteratively).
    """
    from .validation import fit_validated

    betas = read_betas(betas_path, trials_path)
    train = betas.select("train")
    if len(train.trials) == 0:
        raise ValueError(f"{trials_path}: no training trials (check design.train_tasks)")
    columns = voxel_columns(betas, voxels_path)
    targets = load_stimuli(stimuli_dir, train.trials["stim_file"], images["size"], images["channels"])
    groups = run_groups(train.trials)
    if len(set(groups)) == 1:
        # e.g. imported betas without run numbers: say so rather than let a solver guess
        log.warning("all %d training trials come from one run (%s): cross-validation inside "
                    "the decoders uses shuffled folds, which favours weak penalties when "
                    "trials share noise; give each trial its run (betas: train_runs) to leave "
                    "runs out", len(groups), groups[0])
        groups = None

    cls = method_class(method, settings)
    params = {k: v for k, v in settings.items() if k not in cls.WORKFLOW_KEYS}
    if cls.checkpointed and work_dir is not None:
        params.setdefault("checkpoint_dir", str(work_dir))
    extra = {}
    if cls.uses_unpaired_betas:
        # self-supervision on other recordings (config unpaired.betas: by default the
        # test recordings, transductively): their betas, never their images
        parts = [betas.select(split).average_repeats()[0] for split in unpaired_splits
                 if len(betas.select(split).trials)]
        extra["unpaired_betas"] = (np.concatenate(parts)[:, columns] if parts
                                   else np.zeros((0, int(columns.sum())), np.float32))
    if cls.uses_unpaired_images:
        # a folder some stimuli came from: those images stay out of the unpaired set
        extra["unpaired_exclude"] = stimulus_sources(read_stimuli_table(stimuli_dir))
    log.info("fitting %s (%s) on %d trials x %d voxels", method, cls.name, len(targets), columns.sum())
    model = fit_validated(cls, params, seed, train.betas[:, columns], targets, groups, **extra)
    model.save(out_model)
    describe_fit(model)
    if out_validation is not None:
        Path(out_validation).write_text(json.dumps(model.validation_, indent=2, default=float) + "\n")
    history = model.training_history()
    (history if history is not None else pd.DataFrame(columns=["epoch"])).to_csv(
        out_history, sep="\t", index=False, na_rep="n/a")
    return model


def reconstruct(model_path, betas_path, trials_path, voxels_path, stimuli_dir, split: str,
                images: dict, seed: int, out_npz, out_png) -> None:
    """Reconstruct the repetition-averaged betas of ``split``; save images and grid."""
    betas = read_betas(betas_path, trials_path)
    data = betas.select(split)
    if len(data.trials) == 0:
        raise ValueError(f"{trials_path}: no {split} trials")
    model = ReconstructionMethod.load(model_path)
    columns = voxel_columns(betas, voxels_path)
    averaged, stim_files = data.average_repeats()
    recon = model.reconstruct(averaged[:, columns])
    decoded = model.decode(averaged[:, columns])
    log.info("reconstructed %d %s images (%d trials averaged over repeats) from %d voxels; pixel SD "
             "%.3f (shown images %.3f)", len(recon), split, len(data.trials), columns.sum(),
             float(np.mean([r.std() for r in recon])), float(np.mean([t.std() for t in load_stimuli(
                 stimuli_dir, stim_files, images["size"], images["channels"])])))
    true = load_stimuli(stimuli_dir, stim_files, images["size"], images["channels"])
    np.savez_compressed(out_npz, images=recon.astype(np.float32), true=true,
                        stim_file=stim_files, decoded=np.asarray(decoded, dtype=np.float32))
    save_grid(out_png, [true, recon], scale=max(1, 96 // images["size"]))


def method_metrics(model_path, recon_npz, betas_path, trials_path, voxels_path, stimuli_dir,
                   split: str, images: dict, evaluation: dict, seed: int, out_extra) -> None:
    """The method's own metrics of one reconstruction file
    (:meth:`ReconstructionMethod.extra_metrics`, given the reconstructions so that none
    is drawn twice), plus the ``val_*`` entries of
    :func:`fmrirecon.validation.validation_metrics`.

    A job of its own (rule ``method_metrics``): some metrics fit models (e.g. dir's
    family generalisation), a cost the DAG and the benchmark files then show.
    """
    from .validation import validation_metrics

    betas = read_betas(betas_path, trials_path)
    model = ReconstructionMethod.load(model_path)
    columns = voxel_columns(betas, voxels_path)
    averaged, stim_files = betas.select(split).average_repeats()
    saved = np.load(recon_npz)
    if list(saved["stim_file"]) != list(stim_files):
        raise ValueError(f"{recon_npz}: its stim_file differ from the {split} trials of {trials_path}")
    train = betas.select("train")
    extra = model.extra_metrics(EvaluationData(
        split=split, train_betas=train.betas[:, columns],
        train_images=load_stimuli(stimuli_dir, train.trials["stim_file"], images["size"],
                                  images["channels"]),
        train_stim_files=train.trials["stim_file"].to_numpy(dtype=str),
        test_betas=averaged[:, columns], test_images=saved["true"], test_stim_files=stim_files,
        stimuli=read_stimuli_table(stimuli_dir),
        noise_ceiling=None if betas.noise_ceiling is None else betas.noise_ceiling[columns],
        seed=seed, n_boot=evaluation["n_boot"], recon=saved["images"],
    ))
    # how validation on held-out training pairs chose the model (val_* entries)
    extra.update(validation_metrics(getattr(model, "validation_", None), evaluation["n_boot"], seed))
    Path(out_extra).write_text(json.dumps(extra, indent=2, default=float) + "\n")


def training_images(trials_path, stimuli_dir, images: dict) -> tuple[np.ndarray, np.ndarray]:
    """The distinct images of the training trials (sorted stim_files) and their names."""
    trials = pd.read_csv(trials_path, sep="\t", dtype={"stim_file": str})
    missing = {"split", "stim_file"} - set(trials.columns)
    if missing:
        raise ValueError(f"{trials_path}: no column(s) {sorted(missing)}")
    names = np.array(sorted(set(trials.loc[trials["split"] == "train", "stim_file"])), dtype=str)
    if len(names) == 0:
        raise ValueError(f"{trials_path}: no training trials for the baselines")
    return load_stimuli(stimuli_dir, names, images["size"], images["channels"]), names


def evaluate(recon_npz, extra_json, settings: dict, seed: int, out_tsv, out_json,
             trials_path=None, stimuli_dir=None, images: dict | None = None) -> None:
    """Metrics of one reconstruction file and of its baselines (see
    :func:`fmrirecon.evaluation.evaluate`) plus the method's own metrics computed at
    reconstruction. With ``trials_path``, ``stimuli_dir`` and ``images``, the training
    images give the mean-image and retrieval baselines."""
    from .evaluation import evaluate as run, write_evaluation

    data = np.load(recon_npz)
    train, names = (training_images(trials_path, stimuli_dir, images)
                    if trials_path is not None else (None, None))
    per_image, summary = run(data["images"], data["true"], data["stim_file"],
                             n_way=tuple(settings["n_way"]), n_boot=settings["n_boot"], seed=seed,
                             train_images=train, train_stim_files=names)
    extra = json.loads(Path(extra_json).read_text())
    clash = set(extra) & set(summary)
    if clash:
        raise ValueError(f"{extra_json}: method metrics {sorted(clash)} shadow standard ones")
    write_evaluation(per_image, {**summary, **extra}, out_tsv, out_json)
    for metric in ("pixcorr", "ssim", "ident2"):
        entry = summary[metric]
        baselines = ", ".join(f"{name} {b['mean']:.3f}" for name, b in entry["baselines"].items())
        log.info("%s %.3f [%.3f, %.3f] on %d images at %d px; baselines: %s", metric,
                 entry["mean"], entry["ci_low"], entry["ci_high"], len(per_image),
                 data["images"].shape[1], baselines)


def field_metrics(recon_paths: dict, trials_path, stimuli_dir, images: dict, settings: dict,
                  n_boot: int, seed: int, out_tsv, out_json) -> None:
    """The NSD papers' metric table of every method on one subject's split
    (:func:`fmrirecon.perceptual_metrics.field_metrics`), with its baselines.

    ``recon_paths`` maps each method to its ``_recon.npz``; all must hold the same test
    images in the same order. ``settings``: config section ``field_metrics``.
    """
    from .evaluation import _nan_to_none
    from .perceptual_metrics import field_metrics as run

    recons, first = {}, None
    for method, path in recon_paths.items():
        data = np.load(path)
        if first is None:
            first, true, stim_files = path, data["true"], data["stim_file"]
        elif not np.array_equal(data["stim_file"], stim_files):
            raise ValueError(f"{path}: test images differ from those of {first} (same split, same subject)")
        recons[method] = data["images"]
    train, _ = training_images(trials_path, stimuli_dir, images)
    per_image, summary = run(recons, true, stim_files, train_images=train,
                             networks=settings["networks"], n_boot=n_boot, seed=seed,
                             n_shuffles=settings["n_shuffles"], device=settings["device"])
    per_image.to_csv(out_tsv, sep="\t", index=False, na_rep="n/a")
    Path(out_json).write_text(json.dumps(_nan_to_none(summary), indent=2) + "\n")
    missing = [name for name, status in summary["networks"].items() if not status["found"]]
    log.info("field metrics of %s on %d images; no weights for %s", ", ".join(recons), len(true),
             ", ".join(missing) or "none")


def quality(betas_path, trials_path, voxels_path, out_json, out_figures: dict,
            runs: list[dict] | None = None, glm: dict | None = None,
            train_tasks: list[str] | None = None) -> None:
    """Data quality of one subject: counts, warnings and figures
    (:func:`fmrirecon.quality.subject_quality`)."""
    from .quality import subject_quality

    subject_quality(betas_path, trials_path, voxels_path, out_json, out_figures,
                    runs=runs or None, glm=glm, train_tasks=train_tasks)


def classify(betas_path, trials_path, voxels_path, stimuli_dir, settings: dict, seed: int,
             n_boot: int, out_tsv, out_json) -> None:
    """Decode a stimulus attribute (config ``classify.label``, a column of
    ``stimuli/stimuli.tsv``) from the betas of ``classify.split``, leaving whole runs
    out (:func:`fmrirecon.classification.classify_categories`)."""
    from .classification import classify_categories

    betas = read_betas(betas_path, trials_path)
    data = betas if settings["split"] == "all" else betas.select(settings["split"])
    if len(data.trials) == 0:
        raise ValueError(f"{trials_path}: no {settings['split']} trials to classify")
    label = settings["label"]
    labels = stimulus_column(read_stimuli_table(stimuli_dir), data.trials["stim_file"], label,
                             f"{Path(stimuli_dir) / 'stimuli.tsv'} (config classify.label)")
    known = pd.notna(labels)
    groups = run_groups(data.trials)
    log.info("classifying %s of %d trials (%d runs) with %s", label, known.sum(),
             len(set(groups[known])), settings["classifier"])
    kept = data.take(known)  # items without a label (e.g. blank trials) are left out
    per_item, summary = classify_categories(
        kept, labels[known].astype(str), groups[known], classifier=settings["classifier"],
        Cs=settings["Cs"], n_features=settings["n_features"],
        columns=voxel_columns(betas, voxels_path), n_boot=n_boot, seed=seed,
    )
    per_item.insert(1, "stim_file", kept.trials["stim_file"].to_numpy()[per_item["row"]])
    per_item.to_csv(out_tsv, sep="\t", index=False, na_rep="n/a")
    summary = {"label": label, "split": settings["split"], **summary}
    Path(out_json).write_text(json.dumps(summary, indent=2, default=float) + "\n")
    log.info("accuracy %.3f [%.3f, %.3f], chance %.3f", summary["accuracy"]["mean"],
             summary["accuracy"]["ci_low"], summary["accuracy"]["ci_high"],
             summary["accuracy"]["chance"])


def report(evaluations: list[dict], config: dict, out_html, out_tsv, *, field=(), quality=(),
           curves=(), classifications=(), validation=(), betas_paths: dict | None = None,
           benchmark_dir=None, what_ran: dict | None = None, defaults: dict | None = None,
           run_info=None, repository=None) -> None:
    """The aggregated HTML report and the long metrics table.

    Every input is a structured record built by the workflow (``report.smk``), see
    :mod:`fmrirecon.report`: ``evaluations`` (subject, method, split -> summary JSON,
    per-image metrics TSV, recon NPZ), ``field`` (subject, split -> the field's table),
    ``quality`` (subject -> summary JSON and figures), ``curves`` (label -> training
    curves TSV), ``classifications`` (subject, classifier -> JSON and per-item TSV),
    ``validation`` (subject, method -> the validation JSON of its fit: how its settings
    were chosen on training pairs).
    ``betas_paths`` (subject -> betas HDF5) adds the reliability of each step of the
    ``denoised`` GLM; ``benchmark_dir`` (the jobs' Snakemake benchmark files) adds
    each stage's wall time and peak memory; ``what_ran``, ``defaults``, ``run_info``
    and ``repository`` give the provenance header (:func:`fmrirecon.report.provenance`).
    """
    from .report import (build_report, classification_metrics, classification_section,
                         collect_metrics, provenance, resources_section, training_curves_section,
                         write_metrics_table)

    evaluations, field, quality = list(evaluations), list(field), list(quality)
    metrics = collect_metrics(evaluations, field)
    classified = classification_metrics(classifications)
    if len(classified):
        # (pandas deprecates empty frames in concat: their dtypes may not be kept)
        metrics = pd.concat([metrics, classified], ignore_index=True) if len(metrics) else classified
    write_metrics_table(metrics, out_tsv)
    sections = [classification_section(classifications), training_curves_section(curves)]
    if betas_paths:
        from .glm_denoise import reliability_by_step

        table, figure = reliability_by_step(betas_paths)
        sections += [{"title": "Single-trial reliability by GLM step", "figure": figure},
                     {"title": "Single-trial reliability by GLM step (medians)", "table": table}]
    info = provenance(what_ran or {}, config, defaults, run_info, repository)
    if benchmark_dir is not None:
        resources = resources_section(benchmark_dir)
        sections.append(resources)
        if resources is not None:
            total = resources["table"].iloc[-1]
            info["compute"] = (f"{int(total['jobs'])} jobs, {total['total wall time (s)'] / 60:.1f} min of "
                               f"job time, peak memory {total['peak memory of a job (MB)']:.0f} MB "
                               "(per stage: the last section)")
    out = build_report(evaluations, config, Path(out_html), metrics=metrics, field=field, quality=quality,
                       provenance_info=info, extra_sections=[s for s in sections if s is not None],
                       title=config["report"]["title"], validation=validation)
    log.info("%d evaluations, %d field tables, %d quality summaries; %d metric rows; report %s",
             len(evaluations), len(field), len(quality), len(metrics), out)


def derivatives_description(out_json, kind: str = "fmrirecon") -> None:
    """dataset_description.json of a derivatives folder the workflow writes.

    ``kind`` is ``fmrirecon`` (betas, reconstructions, evaluation) or ``light`` (the
    built-in preprocessing, in fMRIPrep's layout).
    """
    from . import __version__
    from .preprocess import write_dataset_description

    names = {"fmrirecon": "fmrirecon outputs",
             "light": "fmrirecon light preprocessing (fMRIPrep file names)"}
    write_dataset_description(Path(out_json).parent, names[kind],
                              {"Name": "fmrirecon", "Version": __version__})


#: Extra per-voxel outputs of ``glm.method: denoised``: key -> file name suffix after
#: ``sub-<s>_desc-denoised``.
DENOISED_MAPS = {
    "hrf": "hrf_statmap.nii.gz",
    "r2": "R2_statmap.nii.gz",
    "npcs": "npcs_statmap.nii.gz",
    "fraction": "fraction_statmap.nii.gz",
    "noisepool": "noisepool_mask.nii.gz",
}


def glm(runs: list[dict], splits: dict, settings: dict, out_betas, out_trials,
        out_reliability, out_maps: dict | None = None) -> None:
    """Single-trial betas of one subject with per-voxel reliability (config ``glm``).

    For ``glm.method: denoised`` (:mod:`fmrirecon.glm_denoise`), ``out_maps`` maps each
    key of :data:`DENOISED_MAPS` to an output path, and the betas file gets a group
    ``denoise`` with the reliability of each step (read by
    :func:`fmrirecon.glm_denoise.reliability_by_step`).
    """
    from .betas import write_betas
    from .glm import single_trial_betas
    from .reliability import add_reliability, reliability_map

    if settings["method"] == "denoised":
        from .glm_denoise import denoise_maps, denoised_betas, step_reliability, write_denoise

        if set(DENOISED_MAPS) - set(out_maps or {}):
            raise ValueError(f"out_maps lacks {sorted(set(DENOISED_MAPS) - set(out_maps or {}))}")
        options = {key: settings[key] for key in ("n_hrfs", "hrf_peak_range", "hrf_fit", "max_pcs",
                                                  "pc_tolerance", "fractions", "chunk_size")}
        betas, fit = denoised_betas(
            runs, splits, high_pass=settings["high_pass"], confounds=settings["confounds"],
            drift_model=settings.get("drift_model", "polynomial"),
            xval_split=settings["xval_split"], keep_steps=True, **options,
        )
    else:
        betas = single_trial_betas(
            runs, splits, method=settings["method"], hrf_model=settings["hrf_model"],
            high_pass=settings["high_pass"], noise_model=settings["noise_model"],
            confounds=settings["confounds"],
        )
        fit = None
    betas = add_reliability(betas, split=settings["reliability_split"])
    write_betas(out_betas, betas, out_trials)
    nib.save(reliability_map(betas), out_reliability)
    if fit is not None:
        split = "test" if (betas.trials["split"] == "test").any() else settings["reliability_split"]
        write_denoise(out_betas, fit, step_reliability(fit, betas.trials, split=split), split)
        for key, image in denoise_maps(fit, betas).items():
            nib.save(image, out_maps[key])
