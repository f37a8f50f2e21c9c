"""Entry points for data others processed: precomputed betas and fMRIPrep derivatives."""

import json

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import scipy.io as sio

from fmrirecon.betas import read_betas
from fmrirecon.importers import import_betas, open_data_file
from fmrirecon.stages import select_voxels as select_stage, voxel_columns
from fmrirecon.voxels import select_voxels

N_VOX = 30


def _study(seed=0):
    """8 distinct 6x6 binary images; train shows each 3 times, test 4 of them twice."""
    rng = np.random.default_rng(seed)
    pool = (rng.random((8, 6, 6)) > 0.5).astype(np.float64)
    train_idx = np.tile(np.arange(8), 3)
    test_idx = np.repeat([1, 3, 5, 7], 2)
    weights = rng.standard_normal((36, N_VOX))

    def responses(idx):
        return pool[idx].reshape(len(idx), -1) @ weights + 0.3 * rng.standard_normal((len(idx), N_VOX))

    return dict(pool=pool, train_idx=train_idx, test_idx=test_idx,
                train=responses(train_idx), test=responses(test_idx))


SPEC = dict(train_responses="Xtr", test_responses="Xte", train_stimuli="Str", test_stimuli="Ste",
            train_labels="Ltr", test_labels="Lte")


def _check_import(tmp_path, study, spec):
    out = tmp_path / "out"
    import_betas(spec, out / "b.h5", out / "t.tsv", out / "stimuli")
    betas = read_betas(out / "b.h5", out / "t.tsv")
    np.testing.assert_allclose(betas.betas, np.r_[study["train"], study["test"]], rtol=1e-5)
    trials = betas.trials
    assert list(trials["split"]) == ["train"] * 24 + ["test"] * 8
    assert set(trials["task"]) == {"train", "test"} and trials["onset"].isna().all()
    # identical images share a stim_file: 8 distinct images, test ones named as in train
    assert trials["stim_file"].nunique() == 8
    assert set(trials.loc[trials.split == "test", "stim_file"]) <= set(trials.loc[trials.split == "train", "stim_file"])
    assert trials.loc[trials.split == "train", "repetition"].max() == 3
    assert trials.loc[trials.split == "test", "repetition"].max() == 2
    # the PNG of every trial is the image shown
    from PIL import Image
    for row, idx in zip(trials.itertuples(), np.r_[study["train_idx"], study["test_idx"]]):
        png = np.asarray(Image.open(out / "stimuli" / row.stim_file), dtype=float) / 255
        np.testing.assert_array_equal(png, study["pool"][idx])
    table = pd.read_csv(out / "stimuli" / "stimuli.tsv", sep="\t")
    assert list(table.columns) == ["stim_file", "split", "label"] and len(table) == 8
    # 1-D pseudo-grid
    assert betas.shape == (N_VOX, 1, 1) and betas.attrs["grid"] == "pseudo"
    np.testing.assert_array_equal(betas.voxel_ijk[:, 0], np.arange(N_VOX))
    assert np.isfinite(betas.reliability).all() and np.isfinite(betas.noise_ceiling).all()
    return betas, out


def _labels(idx):
    return (idx % 2 + 1).astype(np.uint16)[:, None]


def test_mat_v5_flattened_column_major(tmp_path):
    study = _study()
    # MATLAB style: images flattened column-major, labels as column vectors
    def flat(idx):
        return np.stack([study["pool"][i].ravel(order="F") for i in idx])
    path = tmp_path / "data.mat"
    sio.savemat(path, {"Xtr": study["train"], "Xte": study["test"], "Str": flat(study["train_idx"]),
                       "Ste": flat(study["test_idx"]), "Ltr": _labels(study["train_idx"]),
                       "Lte": _labels(study["test_idx"])})
    spec = dict(SPEC, file=str(path), image_shape=[6, 6], image_order="F")
    betas, out = _check_import(tmp_path, study, spec)
    table = pd.read_csv(out / "stimuli" / "stimuli.tsv", sep="\t")
    assert set(table["label"]) == {1, 2}


def test_mat_v73_hdf5(tmp_path):
    """v7.3 files are HDF5 with MATLAB's column-major axes reversed."""
    study = _study(1)
    path = tmp_path / "data73.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in (("Xtr", study["train"]), ("Xte", study["test"]),
                            ("Str", study["pool"][study["train_idx"]]),
                            ("Ste", study["pool"][study["test_idx"]]),
                            ("Ltr", _labels(study["train_idx"])), ("Lte", _labels(study["test_idx"]))):
            f.create_dataset(name, data=np.asarray(value).T)  # as MATLAB writes it
            f[name].attrs["MATLAB_class"] = np.bytes_("double")
    _check_import(tmp_path, study, dict(SPEC, file=str(path)))


def test_npz_with_pool_indices(tmp_path):
    study = _study(2)
    path = tmp_path / "data.npz"
    np.savez(path, Xtr=study["train"], Xte=study["test"], pool=(study["pool"] * 255).astype(np.uint8),
             Str=study["train_idx"] + 1, Ste=study["test_idx"] + 1,
             Ltr=_labels(study["train_idx"]).ravel(), Lte=_labels(study["test_idx"]).ravel())
    spec = dict(SPEC, file=str(path), stimulus_pool="pool", index_base=1)
    _check_import(tmp_path, study, spec)


def test_h5_with_file_names_runs_and_geometry(tmp_path):
    study = _study(3)
    from PIL import Image
    (tmp_path / "img").mkdir()
    for i, img in enumerate(study["pool"]):
        Image.fromarray((img * 255).astype(np.uint8)).save(tmp_path / "img" / f"im{i}.png")
    ijk = np.argwhere(np.ones((5, 3, 2), dtype=bool))  # all 30 voxels of a 5x3x2 grid
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["responses/train"] = study["train"].T  # stored voxels x trials
        f["responses/test"] = study["test"].T
        f["stim/train"] = np.array([f"im{i}.png" for i in study["train_idx"]], dtype="S")
        f["stim/test"] = np.array([f"im{i}.png" for i in study["test_idx"]], dtype="S")
        f["runs"] = np.repeat([1, 2, 3], 8)
        f["ijk"] = ijk
        f["affine"] = np.diag([2.0, 2.0, 2.0, 1.0])
    spec = dict(file=str(path), train_responses="responses/train", test_responses="responses/test",
                transpose_responses=True, train_stimuli="stim/train", test_stimuli="stim/test",
                stimuli_folder=str(tmp_path / "img"), train_runs="runs", voxel_ijk="ijk",
                volume_shape=[5, 3, 2], affine="affine")
    out = tmp_path / "out"
    import_betas(spec, out / "b.h5", out / "t.tsv", out / "stimuli")
    betas = read_betas(out / "b.h5", out / "t.tsv")
    assert betas.shape == (5, 3, 2) and betas.attrs["grid"] == "volume"
    np.testing.assert_array_equal(betas.voxel_ijk, ijk)
    np.testing.assert_allclose(betas.affine, np.diag([2.0, 2.0, 2.0, 1.0]))
    assert list(betas.trials.loc[betas.trials.split == "train", "run"]) == list(np.repeat([1, 2, 3], 8))
    assert (betas.trials.loc[betas.trials.split == "test", "run"] == 1).all()


def test_pseudo_grid_works_with_voxel_selection(tmp_path):
    """select_voxels and the stage's NIfTI mask round-trip on the (n, 1, 1) grid."""
    study = _study(4)
    path = tmp_path / "data.npz"
    np.savez(path, Xtr=study["train"], Xte=study["test"], Str=study["pool"][study["train_idx"]],
             Ste=study["pool"][study["test_idx"]])
    out = tmp_path / "out"
    import_betas(dict(file=str(path), train_responses="Xtr", test_responses="Xte",
                      train_stimuli="Str", test_stimuli="Ste"), out / "b.h5", out / "t.tsv", out / "s")
    betas = read_betas(out / "b.h5", out / "t.tsv")
    keep = select_voxels(betas, method="reliability", n_top=10)
    assert keep.sum() == 10
    settings = dict(select="reliability", n_top=10, min_reliability=None, mask=None, atlas=None,
                    atlas_labels=[])
    select_stage(out / "b.h5", out / "t.tsv", settings, out / "mask.nii.gz")
    assert nib.load(out / "mask.nii.gz").shape == (N_VOX, 1, 1)
    np.testing.assert_array_equal(voxel_columns(betas, out / "mask.nii.gz"), keep)
    # a mask drawn on the pseudo-grid works with method "mask" too
    np.testing.assert_array_equal(select_voxels(betas, "mask", mask_img=out / "mask.nii.gz"), keep)


def test_errors_name_file_and_keys(tmp_path):
    study = _study(5)
    path = tmp_path / "data.npz"
    np.savez(path, Xtr=study["train"], Xte=study["test"], Str=study["pool"][study["train_idx"]],
             Ste=study["pool"][study["test_idx"]][:-1], flat=np.zeros((24, 35)))
    base = dict(file=str(path), train_responses="Xtr", test_responses="Xte",
                train_stimuli="Str", test_stimuli="Ste")
    def run(**kw):
        return import_betas({**base, **kw}, tmp_path / "b.h5", tmp_path / "t.tsv", tmp_path / "s")
    with pytest.raises(ValueError, match=r"data\.npz: no dataset 'fmriTrn' \(betas\.train_responses\); "
                                         r"the file has: Ste, Str, Xte, Xtr, flat"):
        run(train_responses="fmriTrn")
    with pytest.raises(ValueError, match=r"data\.npz: 7 test stimuli .* for 8 test response rows"):
        run()
    with pytest.raises(ValueError, match="data.npz.*betas.image_shape"):
        run(train_stimuli="flat", test_stimuli="Str")
    with pytest.raises(ValueError, match="unknown betas key"):
        run(trainresponses="x")
    with pytest.raises(ValueError, match="missing.mat: betas file not found"):
        run(file=str(tmp_path / "missing.mat"))
    (tmp_path / "broken.mat").write_bytes(b"not a mat file")
    with pytest.raises(ValueError, match="broken.mat: cannot read MATLAB file"):
        open_data_file(tmp_path / "broken.mat")


# ---- entry point "derivatives": fMRIPrep names line up with the raw dataset ----


def _tiny_raw(bids, runs=("1", "02")):
    rng = np.random.default_rng(0)
    (bids / "stimuli").mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.10.0"}))
    from PIL import Image
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(bids / "stimuli" / "a.png")
    func = bids / "sub-01" / "func"
    func.mkdir(parents=True)
    yy, xx, zz = np.mgrid[:12, :12, :6]
    brain = ((yy - 5.5) ** 2 + (xx - 5.5) ** 2 < 16).astype(float) * 1000
    for run in runs:
        stem = func / f"sub-01_task-train_run-{run}"
        data = brain[..., None] + rng.normal(0, 5, (12, 12, 6, 40))
        img = nib.Nifti1Image(data.astype(np.float32), np.diag([3.0, 3.0, 3.0, 1.0]))
        img.header.set_zooms((3.0, 3.0, 3.0, 2.0))
        img.to_filename(f"{stem}_bold.nii.gz")
        (func / f"sub-01_task-train_run-{run}_bold.json").write_text(json.dumps({"RepetitionTime": 2.0}))
        pd.DataFrame({"onset": [4.0, 30.0], "duration": 2.0, "trial_type": "image",
                      "stim_file": "a.png"}).to_csv(f"{stem}_events.tsv", sep="\t", index=False)


def test_fmriprep_names_line_up(tmp_path):
    """Light preprocessing written under fMRIPrep names with a space entity is found by
    the names the workflow derives from the raw dataset, and the GLM reads it."""
    from nilearn.interfaces.fmriprep import load_confounds

    from fmrirecon.bids import index_bids
    from fmrirecon.glm import single_trial_betas
    from fmrirecon.preprocess import derivative_paths
    from fmrirecon.preprocess.light import preprocess_run, write_reference

    bids, deriv = tmp_path / "bids", tmp_path / "fmriprep"
    _tiny_raw(bids)
    manifest = index_bids(bids)
    assert list(manifest["run"]) == ["1", "02"]  # labels kept as written
    space = "MNI152NLin2009cAsym"
    write_reference(manifest["bold"].iloc[0], tmp_path / "ref.nii.gz")
    runs = []
    for row in manifest.itertuples():
        paths = derivative_paths(deriv, row.subject, row.task, row.run, space=space)
        preprocess_run(row.bold, tmp_path / "ref.nii.gz", paths, progress=False)
        raw_stem = f"sub-01_task-train_run-{row.run}"
        assert paths["bold"].name == f"{raw_stem}_space-{space}_desc-preproc_bold.nii.gz"
        assert paths["mask"].name == f"{raw_stem}_space-{space}_desc-brain_mask.nii.gz"
        assert paths["confounds"].name == f"{raw_stem}_desc-confounds_timeseries.tsv"  # no space
        # nilearn finds the confounds from the spaced BOLD name, as the GLM does
        confounds, _ = load_confounds(str(paths["bold"]), strategy=("motion",), motion="basic")
        assert len(confounds) == 40
        runs.append(dict(bold=paths["bold"], mask=paths["mask"], confounds=paths["confounds"],
                         events=row.events, task=row.task, run=row.run, tr=row.tr))
    betas = single_trial_betas(runs, {"train": ["train"]}, progress=False)
    assert betas.betas.shape[0] == 4 and list(betas.trials["run"]) == [1, 1, 2, 2]
    # a derivatives folder without the space entity is not silently picked up
    assert not derivative_paths(deriv, "01", "train", "1")["bold"].exists()
    assert not derivative_paths(deriv, "01", "train", 1, space=space)["bold"].exists()  # run-01 != run-1


def test_preflight_names_a_missing_file_or_dataset_before_any_job(tmp_path):
    from fmrirecon.importers import check_betas

    study = _study(5)
    path = tmp_path / "data.npz"
    np.savez(path, Xtr=study["train"], Xte=study["test"], Str=study["pool"][study["train_idx"]],
             Ste=study["pool"][study["test_idx"]])
    base = dict(file=str(path), train_responses="Xtr", test_responses="Xte",
                train_stimuli="Str", test_stimuli="Ste")
    check_betas(base)  # a valid spec passes
    check_betas({**base, "test_stimuli": str(tmp_path)})  # an image folder instead of a dataset
    with pytest.raises(ValueError, match=r"missing\.npz: betas file not found"):
        check_betas({**base, "file": str(tmp_path / "missing.npz")})
    with pytest.raises(ValueError, match=r"data\.npz: no dataset 'Xtrr' \(betas\.train_responses\)"):
        check_betas({**base, "train_responses": "Xtrr"})
    with pytest.raises(ValueError, match=r"no dataset 'Lte' \(betas\.test_labels\)"):
        check_betas({**base, "test_labels": "Lte"})
    with pytest.raises(ValueError, match=r"unknown betas key"):
        check_betas({**base, "train_respones": "Xtr"})
