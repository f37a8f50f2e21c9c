"""Bad inputs a hostile but realistic user brings, one per case (issue 17).

Each case corrupts its own copy of a small valid two-session study (:func:`base_study`)
and names what the error must mention (the file or config key at fault). Used by
``tests/test_bad_inputs.py`` and, to count outcomes before and after, by
``benchmarks/bad_inputs.py``.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from datasets import TINY_METHODS, fmriprep_derivatives, two_session_dataset

SUB = "sub-01"
#: ``sessions``: runs in ses-01 and ses-02 (the tests); ``runs``: the same data as runs
#: 01 and 02 without sessions (benchmarks/bad_inputs.py, so that older code reads it).
LAYOUT = {"sessions": True}


def base_study(root: Path) -> dict:
    """A valid study at ``root/bids`` (one subject, two sessions, train and test runs)
    and its config (light preprocessing, pca)."""
    two_session_dataset(root / "bids", as_runs=not LAYOUT["sessions"])
    return {"bids_dir": str(root / "bids"), "seed": 1, **TINY_METHODS}


def stem(ses="01", task="train") -> str:
    """A run's name in the current layout."""
    return f"{SUB}_ses-{ses}_task-{task}_run-01" if LAYOUT["sessions"] else f"{SUB}_task-{task}_run-{ses}"


def _func(root, ses="01"):
    return root / "bids" / SUB / (f"ses-{ses}" if LAYOUT["sessions"] else "") / "func"


def events(root, ses="01", task="train") -> Path:
    return _func(root, ses) / f"{stem(ses, task)}_events.tsv"


def bold(root, ses="01", task="train") -> Path:
    return _func(root, ses) / f"{stem(ses, task)}_bold.nii.gz"


def sidecar(root, ses="01", task="train") -> Path:
    return _func(root, ses) / f"{stem(ses, task)}_bold.json"


def words_in_layout(words):
    """The case's words for the current layout (ses-02_task-x_run-01 -> task-x_run-02)."""
    import re

    if LAYOUT["sessions"]:
        return words
    return [re.sub(r"ses-(\d+)_task-(\w+?)_run-01", r"task-\2_run-\1", w).replace("ses-01_", "")
            for w in words]


def _edit_events(root, change, ses="01", task="train"):
    path = events(root, ses, task)
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    table = change(table)
    table.to_csv(path, sep="\t", index=False)


def _set(table, row, column, value):
    table.loc[row, column] = value
    return table


def _edit_bold(root, change, ses="01", task="train"):
    path = bold(root, ses, task)
    img = nib.load(path)
    data, affine, header = change(np.asarray(img.dataobj).copy(), img.affine.copy(), img.header.copy())
    nib.save(nib.Nifti1Image(data, affine, header), path)


def _sidecar(root, value, ses="01", task="train"):
    sidecar(root, ses, task).write_text(json.dumps({"RepetitionTime": value, "TaskName": task}) if not
                                        isinstance(value, str) or not value.startswith("{") else value)


def _header_tr(data, affine, header, tr):
    header.set_zooms(header.get_zooms()[:3] + (tr,))
    return data, affine, header


def _precomputed(config, root, **extra):
    config["preprocess"] = {"method": "precomputed", "derivatives_dir": str(root / "fmriprep"),
                            "space": "T1w", **extra}


def _with_derivatives(root, config, **settings):
    """fMRIPrep derivatives in space T1w; ``settings`` change what the config asks for."""
    fmriprep_derivatives(root / "bids", root / "fmriprep", space="T1w")
    _precomputed(config, root, **settings)


def _derivative_confounds_missing(root, config):
    _with_derivatives(root, config)
    next((root / "fmriprep").glob(f"sub-01/**/func/{stem()}_desc-confounds_timeseries.tsv")).unlink()


def _old_confounds_name(root, config):
    _with_derivatives(root, config)
    path = next((root / "fmriprep").glob(f"sub-01/**/func/{stem()}_desc-confounds_timeseries.tsv"))
    path.rename(path.with_name(path.name.replace("_timeseries", "_regressors")))


def _nan_voxels(data, affine, header):
    data = data.astype(np.float32)
    data.reshape(-1)[::97] = np.nan
    return data, affine, header


def _other_dataset(root, config):
    other = root / "other"
    two_session_dataset(other, sessions=("A", "B"))
    fmriprep_derivatives(other, root / "fmriprep", space="T1w")
    _precomputed(config, root)


def _derivative_grid(root, config):
    fmriprep_derivatives(root / "bids", root / "fmriprep", space="T1w")
    path = next((root / "fmriprep").glob(f"sub-01/**/func/{stem('02')}_*_desc-preproc_bold.nii.gz"))
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:-1], img.affine), path)
    _precomputed(config, root)


def _multi_echo(root, config):
    for echo in (1, 2):
        name = _func(root) / stem().replace("task-train_", f"task-train_echo-{echo}_")
        shutil.copy(bold(root), f"{name}_bold.nii.gz")
        shutil.copy(sidecar(root), f"{name}_bold.json")
    for path in (bold(root), sidecar(root)):
        path.unlink()


def _surface_only(root, config):
    name = _func(root) / f"{SUB}_task-train_run-05"
    (Path(f"{name}_hemi-L_bold.func.gii")).write_text("<GIFTI/>")
    Path(f"{name}_bold.json").write_text(json.dumps({"RepetitionTime": 2.0}))
    shutil.copy(events(root), f"{name}_events.tsv")


def _stim_table(root, config, rows, id_column="stim_id"):
    table = root / "ids.tsv"
    pd.DataFrame(rows, columns=[id_column, "stim_file"]).to_csv(table, sep="\t", index=False)
    config["stimuli"] = {"column": "stim_file", "table": str(table), "table_id": "stim_id"}


def _all_images_table(root):
    files = sorted(p.name for p in (root / "bids" / "stimuli").glob("*.png"))
    return [(f, f) for f in files]


def _rename_task(root, old, new):
    for path in sorted((root / "bids").glob(f"sub-*/**/func/*task-{old}_*")):
        path.rename(path.with_name(path.name.replace(f"task-{old}_", f"task-{new}_")))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _gzip_garbage(path):
    path.write_bytes(gzip.compress(b"this is not a NIfTI header at all" * 20))


#: (case id, change(root, config), words the message must contain)
CASES = [
    # ---- events
    ("events_row_duplicated", lambda r, c: _edit_events(r, lambda t: pd.concat([t, t.iloc[[3]]])),
     ["ses-01_task-train_run-01_events.tsv", "repeated verbatim"]),
    ("events_second_trial_same_onset", lambda r, c: _edit_events(
        r, lambda t: pd.concat([t, t.iloc[[3]].assign(stim_file="train_00.png")])),
     ["ses-01_task-train_run-01_events.tsv", "same onset"]),
    ("events_onset_text", lambda r, c: _edit_events(r, lambda t: _set(t, 2, "onset", "ten")),
     ["run-01_events.tsv", "onset must be a number", "'ten'"]),
    ("events_onset_negative", lambda r, c: _edit_events(r, lambda t: _set(t, 0, "onset", "-3")),
     ["run-01_events.tsv", "negative onset"]),
    ("events_onset_nan", lambda r, c: _edit_events(r, lambda t: _set(t, 1, "onset", "n/a")),
     ["run-01_events.tsv", "onset must be a number"]),
    ("events_duration_negative", lambda r, c: _edit_events(r, lambda t: _set(t, 4, "duration", "-1")),
     ["run-01_events.tsv", "negative duration"]),
    ("events_duration_nan", lambda r, c: _edit_events(r, lambda t: _set(t, 4, "duration", "n/a")),
     ["run-01_events.tsv", "duration must be a number"]),
    ("events_empty_file", lambda r, c: events(r).write_text(""),
     ["run-01_events.tsv", "empty file"]),
    ("events_header_only", lambda r, c: events(r).write_text("onset\tduration\tstim_file\n"),
     ["run-01_events.tsv", "no events"]),
    ("events_no_onset_column", lambda r, c: _edit_events(r, lambda t: t.drop(columns="onset")),
     ["run-01_events.tsv", "missing column(s) onset"]),
    ("events_no_stim_column", lambda r, c: _edit_events(r, lambda t: t.drop(columns="stim_file")),
     ["run-01_events.tsv", "stim_file", "stimuli.column"]),
    ("events_missing", lambda r, c: events(r, "02", "test").unlink(),
     ["ses-02_task-test_run-01_events.tsv", "events file missing"]),
    ("events_onset_past_end", lambda r, c: _edit_events(r, lambda t: _set(t, 11, "onset", "400")),
     ["run-01_events.tsv", "past the end of the run", "TR 2"]),
    ("events_onsets_in_ms", lambda r, c: _edit_events(
        r, lambda t: t.assign(onset=(t["onset"].astype(float) * 1000).astype(str))),
     ["run-01_events.tsv", "past the end of the run", "units"]),
    ("events_binary_garbage", lambda r, c: events(r).write_bytes(b"\x00\xff\xfe\x00" * 50),
     ["run-01_events.tsv"]),
    ("events_stim_column_misnamed", lambda r, c: c.update(stimuli={"column": "stimulus_name"}),
     ["run-01_events.tsv", "stimulus_name", "stimuli.column"]),
    # ---- stimuli
    ("stimulus_missing", lambda r, c: (r / "bids" / "stimuli" / "train_03.png").unlink(),
     ["run-01_events.tsv", "'train_03.png' not found"]),
    ("stimulus_outside_dataset", lambda r, c: (
        (r / "outside.png").write_bytes((r / "bids/stimuli/train_00.png").read_bytes()),
        _edit_events(r, lambda t: _set(t, 0, "stim_file", "../../outside.png"))),
     ["run-01_events.tsv", "'../../outside.png' leads outside the stimuli folder"]),
    ("stimulus_absolute_path", lambda r, c: _edit_events(r, lambda t: _set(t, 0, "stim_file", "/etc/hostname")),
     ["run-01_events.tsv", "'/etc/hostname' leads outside"]),
    ("stimulus_corrupt_png", lambda r, c: (r / "bids/stimuli/train_05.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage"),
     ["train_05.png", "cannot read the image"]),
    ("stimulus_empty_file", lambda r, c: (r / "bids/stimuli/test_02.png").write_bytes(b""),
     ["test_02.png", "cannot read the image"]),
    ("stimuli_folder_missing", lambda r, c: c.update(stimuli={"folder": str(r / "nowhere")}),
     ["nowhere", "stimuli folder not found"]),
    ("stimuli_table_missing", lambda r, c: c.update(stimuli={"table": str(r / "ids.tsv")}),
     ["ids.tsv", "not found"]),
    ("stimuli_table_no_id_column", lambda r, c: _stim_table(r, c, _all_images_table(r), id_column="name"),
     ["ids.tsv", "no column(s) ['stim_id']"]),
    ("stimuli_table_duplicate_ids",
     lambda r, c: _stim_table(r, c, _all_images_table(r) + [("train_00.png", "train_01.png")]),
     ["ids.tsv", "appear twice"]),
    ("stimuli_table_unknown_id",
     lambda r, c: _stim_table(r, c, [x for x in _all_images_table(r) if x[0] != "test_04.png"]),
     ["run-01_events.tsv", "'test_04.png' has no row in", "ids.tsv"]),
    ("test_image_in_training", lambda r, c: _edit_events(r, lambda t: _set(t, 0, "stim_file", "test_03.png")),
     ["sub-01", "also shown in training", "design.allow_test_in_train"]),
    # ---- BOLD and sidecars
    ("tr_zero", lambda r, c: _sidecar(r, 0), ["ses-01_task-train_run-01_bold.nii.gz", "RepetitionTime 0 s"]),
    ("tr_negative", lambda r, c: _sidecar(r, -2.0), ["run-01_bold.nii.gz", "RepetitionTime -2 s", "> 0"]),
    ("tr_missing", lambda r, c: sidecar(r).write_text(json.dumps({"TaskName": "train"})),
     ["run-01_bold.nii.gz", "no RepetitionTime"]),
    ("tr_text", lambda r, c: _sidecar(r, "2 s"), ["run-01_bold.nii.gz", "'2 s'", "not a number"]),
    ("tr_sidecar_differs_from_header", lambda r, c: _sidecar(r, 2.5),
     ["run-01_bold.nii.gz", "RepetitionTime 2.5 s", "pixdim[4] 2 s"]),
    ("sidecar_invalid_json", lambda r, c: sidecar(r).write_text('{"RepetitionTime": 2.0,'),
     ["run-01_bold.json"]),
    ("bold_one_volume", lambda r, c: _edit_bold(r, lambda d, a, h: (d[..., :1], a, h)),
     ["run-01_bold.nii.gz", "more than one volume"]),
    ("bold_3d", lambda r, c: _edit_bold(r, lambda d, a, h: (d[..., 0], a, None)),
     ["run-01_bold.nii.gz", "4-D"]),
    ("bold_all_zero", lambda r, c: _edit_bold(r, lambda d, a, h: (np.zeros_like(d), a, h)),
     ["run-01_bold.nii.gz", "every value is the same"]),
    ("bold_constant", lambda r, c: _edit_bold(r, lambda d, a, h: (np.full_like(d, 500), a, h), "02", "test"),
     ["ses-02_task-test_run-01_bold.nii.gz", "every value is the same"]),
    ("bold_nan_voxels", lambda r, c: _edit_bold(r, _nan_voxels),
     ["run-01_bold.nii.gz", "NaN"]),
    ("bold_truncated_gzip", lambda r, c: _truncate(bold(r, "02")),
     ["ses-02_task-train_run-01_bold.nii.gz", "cannot read the NIfTI file"]),
    ("bold_not_nifti", lambda r, c: _gzip_garbage(bold(r)), ["run-01_bold.nii.gz", "cannot read"]),
    ("bold_grid_shape_differs", lambda r, c: _edit_bold(r, lambda d, a, h: (d[:-2], a, h), "02", "test"),
     ["ses-02_task-test_run-01_bold.nii.gz", "voxel grid", "differs"]),
    ("bold_grid_affine_differs", lambda r, c: _edit_bold(r, lambda d, a, h: (d, a @ np.diag([1, 1, 1.2, 1]), h), "02"),
     ["ses-02_task-train_run-01_bold.nii.gz", "voxel grid"]),
    ("multi_echo", _multi_echo, ["echo-1", "multi-echo runs are not supported"]),
    ("surface_only", _surface_only, ["func.gii", "surface data only are not supported"]),
    # ---- dataset and config
    ("no_dataset_description", lambda r, c: (r / "bids" / "dataset_description.json").unlink(),
     ["dataset_description.json", "missing"]),
    ("dataset_description_invalid", lambda r, c: (r / "bids" / "dataset_description.json").write_text("{Name: x"),
     ["dataset_description.json", "not valid JSON"]),
    ("bids_dir_missing", lambda r, c: c.update(bids_dir=str(r / "not_there")), ["not_there", "not found"]),
    ("results_dir_is_bids_root", lambda r, c: c.update(results_dir=str(r / "bids")),
     ["results_dir is inside bids_dir"]),
    ("results_dir_in_subject_folder", lambda r, c: c.update(results_dir=str(r / "bids" / "sub-01" / "out")),
     ["sub-01/out", "results_dir is inside bids_dir"]),
    ("subject_not_in_dataset", lambda r, c: c.update(subjects=["07"]), ["config['subjects']", "07"]),
    ("no_test_runs", lambda r, c: _rename_task(r, "test", "localizer"),
     ["sub-01", "no test trials", "design.test_tasks"]),
    ("train_task_misspelt", lambda r, c: c.update(design={"train_tasks": ["training"]}),
     ["sub-01", "no train trials", "design.train_tasks"]),
    ("session_pattern_matches_nothing", lambda r, c: c.update(design={
        "split_by": "session", "train_sessions": ["1*"], "test_sessions": ["02"]}),
     ["no train trials", "design.train_sessions"]),
    ("run_in_two_splits", lambda r, c: c.update(design={"train_tasks": ["train", "test"], "test_tasks": ["test"]}),
     ["task-test_run-01_bold.nii.gz", "in splits train and test"]),
    ("n_way_exceeds_test_images", lambda r, c: c.update(evaluation={"n_way": [2, 50], "n_boot": 100}),
     ["config['evaluation']['n_way']", "[50]", "10 test images"]),
    ("exclude_unknown_column", lambda r, c: c.update(design={"exclude": {"event_type": [-1]}}),
     ["run-01_events.tsv", "'event_type'", "design.exclude"]),
    ("split_column_missing", lambda r, c: c.update(design={"split_by": "column", "split_column": "phase"}),
     ["run-01_events.tsv", "missing column(s) phase"]),
    ("config_key_misspelt", lambda r, c: c.update(design={"train_task": ["train"]}),
     ["config['design']", "unknown key 'train_task'"]),
    ("fmriprep_without_anatomy", lambda r, c: c.update(preprocess={"method": "fmriprep"}),
     ["sub-01", "no anatomical T1w image"]),
    ("derivatives_dir_missing", lambda r, c: _precomputed(c, r), ["fmriprep", "derivatives folder"]),
    ("derivatives_of_another_dataset", _other_dataset,
     ["sub-01_ses-01_task-train_run-01_space-T1w_desc-preproc_bold.nii.gz", "missing"]),
    ("derivatives_other_space", lambda r, c: _with_derivatives(r, c, space="MNI152NLin2009cAsym"),
     ["space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz", "missing", "space-T1w"]),
    ("derivatives_res_missing", lambda r, c: _with_derivatives(r, c, res="2"),
     ["space-T1w_res-2_desc-preproc_bold.nii.gz", "preprocess.res"]),
    ("derivatives_on_different_grids", _derivative_grid,
     ["ses-02_task-train_run-01_space-T1w_desc-preproc_bold.nii.gz", "voxel grid"]),
    ("derivatives_confounds_old_name", _old_confounds_name,
     ["desc-confounds_timeseries.tsv", "confounds_regressors.tsv", "before 20.2"]),
    ("derivatives_confounds_missing", _derivative_confounds_missing,
     ["ses-01_task-train_run-01_desc-confounds_timeseries.tsv", "missing"]),
]
