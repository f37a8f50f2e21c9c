"""Derivative names, light preprocessing and fMRIPrep command lines."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.interfaces.fmriprep import load_confounds
from scipy import ndimage

from fmrirecon.preprocess import derivative_paths, write_dataset_description
from fmrirecon.preprocess.fmriprep import fmriprep_apptainer_command, fmriprep_docker_command
from fmrirecon.preprocess.light import preprocess_subject

ZOOMS = (3.0, 3.0, 3.5)
SHAPE = (16, 16, 10)
TR = 2.0
PLANTED = np.array([0.7, -0.4, 0.3])  # head displacement (voxels) in run 2 from volume 8 on


def test_derivative_paths(tmp_path):
    paths = derivative_paths(tmp_path, "01", "train", 3)
    func = tmp_path / "sub-01" / "func"
    assert paths == {
        "bold": func / "sub-01_task-train_run-03_desc-preproc_bold.nii.gz",
        "mask": func / "sub-01_task-train_run-03_desc-brain_mask.nii.gz",
        "confounds": func / "sub-01_task-train_run-03_desc-confounds_timeseries.tsv",
    }
    spaced = derivative_paths(tmp_path, "01", "test", 12, space="MNI152NLin2009cAsym")
    assert spaced["bold"].name == "sub-01_task-test_run-12_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
    assert spaced["mask"].name == "sub-01_task-test_run-12_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz"
    assert spaced["confounds"].name == "sub-01_task-test_run-12_desc-confounds_timeseries.tsv"
    with pytest.raises(ValueError, match="task"):
        derivative_paths(tmp_path, "01", "bad_task", 1)


def test_dataset_description(tmp_path):
    path = write_dataset_description(tmp_path / "deriv", "fmrirecon light", "fmrirecon")
    description = json.loads(path.read_text())
    assert description["DatasetType"] == "derivative"
    assert description["Name"] == "fmrirecon light"
    assert description["GeneratedBy"] == [{"Name": "fmrirecon"}]
    assert "BIDSVersion" in description


def _brain(rng):
    """A smooth ellipsoid 'head' with texture, zero outside."""
    grid = np.indices(SHAPE).astype(float)
    centre = (np.array(SHAPE) / 2 - 0.5)[:, None, None, None]
    radii = np.array([5.0, 6.0, 3.5])[:, None, None, None]
    r = np.sqrt((((grid - centre) / radii) ** 2).sum(axis=0))
    texture = ndimage.gaussian_filter(rng.normal(size=SHAPE), 1.0)
    return 1000.0 / (1.0 + np.exp((r - 1.0) * 6.0)) * (1.0 + 0.1 * texture)


@pytest.fixture(scope="module")
def light_outputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("light")
    rng = np.random.default_rng(0)
    brain = _brain(rng)
    affine = np.diag([*ZOOMS, 1.0])
    bold_paths, out_paths = [], []
    for run, n_vols in ((1, 12), (2, 16)):
        vols = []
        for t in range(n_vols):
            shift = PLANTED if (run == 2 and t >= 8) else np.zeros(3)
            vols.append(ndimage.shift(brain, shift, order=3, mode="nearest") + rng.normal(0, 3, SHAPE))
        img = nib.Nifti1Image(np.stack(vols, axis=-1).astype(np.float32), affine)
        img.header.set_zooms((*ZOOMS, TR))
        path = tmp / f"sub-01_task-train_run-{run}_bold.nii.gz"
        img.to_filename(path)
        bold_paths.append(path)
        out_paths.append(derivative_paths(tmp / "deriv", "01", "train", run))
    preprocess_subject(bold_paths, out_paths, tmp / "deriv" / "ref.nii.gz", progress=False)
    return bold_paths, out_paths


def test_light_recovers_translation(light_outputs):
    _, out_paths = light_outputs
    run1 = pd.read_csv(out_paths[0]["confounds"], sep="\t", na_values="n/a")
    run2 = pd.read_csv(out_paths[1]["confounds"], sep="\t", na_values="n/a")
    trans = ["trans_x", "trans_y", "trans_z"]
    # run 1 and the first volumes of run 2 sit at the reference
    assert np.abs(run1[trans].to_numpy()).max() < 0.1 * min(ZOOMS)
    np.testing.assert_allclose(run2[trans].to_numpy()[:8], 0, atol=0.1 * min(ZOOMS))
    # the planted displacement, in mm with the head's sign, within 0.1 voxel
    expected = PLANTED * np.array(ZOOMS)
    np.testing.assert_allclose(run2[trans].to_numpy()[8:], np.tile(expected, (8, 1)),
                               atol=0.1 * min(ZOOMS))
    assert (run2[["rot_x", "rot_y", "rot_z"]].to_numpy() == 0).all()
    # framewise displacement: n/a first, then a jump at the planted shift
    fd = run2["framewise_displacement"].to_numpy()
    assert np.isnan(fd[0])
    assert fd[8] == pytest.approx(np.abs(expected).sum(), abs=0.3)
    assert np.nanmax(np.delete(fd, 8)) < 0.3


def test_light_outputs_are_consistent(light_outputs):
    bold_paths, out_paths = light_outputs
    masks = [nib.load(o["mask"]).get_fdata() > 0 for o in out_paths]
    # per-run masks of realigned runs cover the same brain
    dice = 2 * (masks[0] & masks[1]).sum() / (masks[0].sum() + masks[1].sum())
    assert dice > 0.95
    mask = masks[0] & masks[1]
    assert 50 < mask.sum() < mask.size
    corrected = nib.load(out_paths[1]["bold"])
    assert corrected.header.get_zooms() == pytest.approx((*ZOOMS, TR))
    np.testing.assert_allclose(corrected.affine, nib.load(bold_paths[1]).affine)
    # after correction, shifted volumes match unshifted ones inside the brain much
    # better than before it
    raw = nib.load(bold_paths[1]).get_fdata()
    data = corrected.get_fdata()
    before = np.abs(raw[..., 12] - raw[..., 2])[mask].mean()
    after = np.abs(data[..., 12] - data[..., 2])[mask].mean()
    assert after < 0.5 * before


def test_light_confounds_load_with_nilearn(light_outputs):
    _, out_paths = light_outputs
    for outs in out_paths:
        confounds, sample_mask = load_confounds(
            str(outs["bold"]), strategy=("motion",), motion="basic", demean=False
        )
        assert sorted(confounds.columns) == ["rot_x", "rot_y", "rot_z", "trans_x", "trans_y", "trans_z"]
        assert sample_mask is None
        table = pd.read_csv(outs["confounds"], sep="\t", na_values="n/a")
        np.testing.assert_allclose(confounds["trans_y"], table["trans_y"])
        full, _ = load_confounds(str(outs["bold"]), strategy=("motion",), motion="full")
        assert full.shape[1] == 24
    sidecar = json.loads(out_paths[0]["confounds"].with_suffix("").with_suffix(".json").read_text())
    assert "not estimated" in sidecar["rot_x"]["Description"]
    assert set(sidecar) >= {"trans_x", "framewise_displacement"}


def test_light_bad_input(tmp_path):
    path = tmp_path / "sub-01_task-a_run-1_bold.nii.gz"
    nib.Nifti1Image(np.ones((4, 4, 4), dtype=np.float32), np.eye(4)).to_filename(path)
    with pytest.raises(ValueError, match="sub-01_task-a_run-1_bold"):
        preprocess_subject([path], [derivative_paths(tmp_path, "01", "a", 1)],
                           tmp_path / "ref.nii.gz", progress=False)


@pytest.fixture
def fmriprep_inputs(tmp_path):
    bids = tmp_path / "bids"
    (bids / "sub-01").mkdir(parents=True)
    (bids / "dataset_description.json").write_text("{}")
    license_file = tmp_path / "license.txt"
    license_file.write_text("x")
    templateflow = tmp_path / "templateflow"
    templateflow.mkdir()
    image = tmp_path / "fmriprep.sif"
    image.write_text("")
    return bids, tmp_path / "out", tmp_path / "work", license_file, templateflow, image


def _after(cmd, flag):
    return cmd[cmd.index(flag) + 1]


def test_fmriprep_docker_command(fmriprep_inputs):
    bids, out, work, license_file, _, _ = fmriprep_inputs
    cmd = fmriprep_docker_command(bids, out, work, "sub-01", license_file,
                                  output_spaces=("func", "MNI152NLin2009cAsym:res-2"),
                                  nthreads=8, mem_mb=20000, extra_args=("--fs-no-reconall",),
                                  image="nipreps/fmriprep:24.1.1")
    assert cmd[:4] == ["fmriprep-docker", str(bids), str(out), "participant"]
    assert _after(cmd, "--participant-label") == "01"
    assert _after(cmd, "--fs-license-file") == str(license_file)
    assert _after(cmd, "-w") == str(work)
    assert _after(cmd, "--nthreads") == "8"
    assert _after(cmd, "--mem_mb") == "20000"
    assert _after(cmd, "-i") == "nipreps/fmriprep:24.1.1"
    i = cmd.index("--output-spaces")
    assert cmd[i + 1:i + 3] == ["func", "MNI152NLin2009cAsym:res-2"]
    assert "--skip-bids-validation" in cmd and cmd[-1] == "--fs-no-reconall"
    assert all(isinstance(c, str) for c in cmd)


def test_fmriprep_apptainer_command(fmriprep_inputs):
    bids, out, work, license_file, templateflow, image = fmriprep_inputs
    cmd = fmriprep_apptainer_command(image, bids, out, work, "01", license_file, templateflow,
                                     nthreads=2, mem_mb=8000, bind=("/scratch:/scratch",))
    assert cmd[:5] == ["env", "APPTAINERENV_TEMPLATEFLOW_HOME=/home/fmriprep/.cache/templateflow",
                       "apptainer", "run", "--cleanenv"]
    binds = [cmd[i + 1] for i, c in enumerate(cmd) if c == "-B"]
    assert binds == [f"{bids}:/data:ro", f"{out}:/out", f"{work}:/work",
                     f"{license_file}:/opt/freesurfer/license.txt:ro",
                     f"{templateflow}:/home/fmriprep/.cache/templateflow", "/scratch:/scratch"]
    i = cmd.index(str(image))
    assert cmd[i + 1:i + 4] == ["/data", "/out", "participant"]
    assert _after(cmd, "--fs-license-file") == "/opt/freesurfer/license.txt"
    assert _after(cmd, "-w") == "/work"
    assert _after(cmd, "--participant-label") == "01"
    assert _after(cmd, "--output-spaces") == "func"


def test_fmriprep_command_errors(fmriprep_inputs, tmp_path):
    bids, out, work, license_file, templateflow, image = fmriprep_inputs
    missing = tmp_path / "nolicense.txt"
    with pytest.raises(ValueError, match="nolicense.txt"):
        fmriprep_docker_command(bids, out, work, "01", missing)
    with pytest.raises(ValueError, match="sub-02"):
        fmriprep_docker_command(bids, out, work, "02", license_file)
    with pytest.raises(ValueError, match="outside"):
        fmriprep_docker_command(bids, out, bids / "work", "01", license_file)
    with pytest.raises(ValueError, match="nothere.sif"):
        fmriprep_apptainer_command(tmp_path / "nothere.sif", bids, out, work, "01",
                                   license_file, templateflow)


def test_light_masks_a_single_slice(tmp_path):
    """One-slice acquisitions (e.g. Haxby's) get a mask: a 3-D opening would erase it."""
    rng = np.random.default_rng(1)
    brain = _brain(rng)[:, :, SHAPE[2] // 2 : SHAPE[2] // 2 + 1]
    vols = np.stack([brain + rng.normal(0, 3, brain.shape) for _ in range(6)], axis=-1)
    path = tmp_path / "sub-01_task-train_run-1_bold.nii.gz"
    img = nib.Nifti1Image(vols.astype(np.float32), np.diag([*ZOOMS, 1.0]))
    img.header.set_zooms((*ZOOMS, TR))
    img.to_filename(path)
    outs = derivative_paths(tmp_path / "deriv", "01", "train", 1)
    preprocess_subject([path], [outs], tmp_path / "ref.nii.gz", progress=False)
    mask = np.asarray(nib.load(outs["mask"]).dataobj) > 0
    inside = brain > 800
    # the mask is the head: nearly all of it, and little of the background
    assert mask[inside].mean() > 0.9 and mask[~inside].mean() < 0.2
