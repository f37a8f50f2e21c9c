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
from .bids import read_stimuli_table, stimulus_column, stimulus_sources
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
    """``<task>_<run>`` of each trial: the groups cross-validation leaves out whole."""
    return (trials["task"].astype(str) + "_" + trials["run"].astype(str)).to_numpy()


def method_class(name: str, settings: dict) -> type[ReconstructionMethod]:
    """The class behind the config entry ``methods.<name>`` (see :func:`implementation`)."""
    return get_method(implementation(name, settings))


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


def evaluate(recon_npz, extra_json, settings: dict, seed: int, out_tsv, out_json) -> None:
    """Metrics of one reconstruction file (see :func:`fmrirecon.evaluation.evaluate`)
    plus the method's own metrics computed at reconstruction."""
    from .evaluation import evaluate as run, write_evaluation

    data = np.load(recon_npz)
    per_image, summary = run(data["images"], data["true"], data["stim_file"],
                             n_way=tuple(settings["n_way"]), n_boot=settings["n_boot"], seed=seed)
    extra = json.loads(Path(extra_json).read_text())
    clash = set(extra) & set(summary)
    if clash:
        raise ValueError(f"{extra_json}: method metrics {sorted(clash)} shadow standard ones")
    write_evaluation(per_image, {**summary, **extra}, out_tsv, out_json)


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


def report(summary_paths, grid_paths, history_paths, config: dict, out_html, out_tsv,
           betas_paths: dict | None = None, classification_paths=(),
           named_histories: dict | None = None, benchmark_dir=None) -> None:
    """The aggregated HTML report and the long metrics table.

    ``betas_paths`` (subject -> betas HDF5) adds the reliability of each step of the
    ``denoised`` GLM; ``classification_paths`` (``sub-<s>_desc-<classifier>
    _classification.json`` of :func:`classify`) add the classification accuracies;
    ``named_histories`` (label -> curves TSV) adds training curves of shared models,
    such as the generator; ``benchmark_dir`` (the jobs' Snakemake benchmark files) adds
    each stage's wall time and peak memory.
    """
    from .report import (build_report, classification_metrics, classification_section,
                         collect_metrics, index_by_name, resources_section,
                         training_curves_section, write_metrics_table)

    metrics = collect_metrics(summary_paths)
    classified = classification_metrics(classification_paths)
    if len(classified):
        # (pandas deprecates empty frames in concat: their dtypes may not be kept)
        metrics = pd.concat([metrics, classified], ignore_index=True)
    write_metrics_table(metrics, out_tsv)
    sections = [classification_section(classification_paths), training_curves_section(history_paths, named_histories)]
    if betas_paths:
        from .glm_denoise import reliability_by_step

        table, figure = reliability_by_step(betas_paths)
        sections += [{"title": "Single-trial reliability by GLM step", "figure": figure},
                     {"title": "Single-trial reliability by GLM step (medians)", "table": table}]
    if benchmark_dir is not None:
        sections.append(resources_section(benchmark_dir))
    build_report(metrics, index_by_name(grid_paths), config, Path(out_html),
                 extra_sections=[s for s in sections if s is not None],
                 title=config["report"]["title"])


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
