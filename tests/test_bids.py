import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from fmrirecon.bids import (BIDSInputError, check_manifest, index_bids, manifest_from_plan,
                            read_manifest, write_manifest)


def tiny_bids(root, subjects=("01", "02"), runs=(1, 2), n_vols=20, tr=2.0):
    """A minimal valid BIDS raw dataset with one stimulus per trial."""
    (root / "stimuli").mkdir(parents=True)
    (root / "stimuli" / "a.png").write_bytes(b"")
    (root / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.10.0"}))
    (root / "participants.tsv").write_text("participant_id\n" + "".join(f"sub-{s}\n" for s in subjects))
    for s in subjects:
        func = root / f"sub-{s}" / "func"
        func.mkdir(parents=True)
        for r in runs:
            stem = func / f"sub-{s}_task-train_run-{r:02d}"
            img = nib.Nifti1Image(np.random.default_rng(r).integers(900, 1100, (2, 2, 2, n_vols)).astype(np.int16),
                                  np.eye(4))
            img.header.set_zooms((1.0, 1.0, 1.0, tr))
            nib.save(img, f"{stem}_bold.nii.gz")
            stem.with_name(stem.name + "_bold.json").write_text(json.dumps({"RepetitionTime": tr, "TaskName": "train"}))
            pd.DataFrame({"onset": [2.0, 10.0], "duration": [3.0, 3.0], "trial_type": "image",
                          "stim_file": "a.png"}).to_csv(f"{stem}_events.tsv", sep="\t", index=False)
    return root


def test_index_finds_every_run_with_its_tr(tmp_path):
    root = tiny_bids(tmp_path / "ds")
    manifest = check_manifest(index_bids(root), root / "stimuli")
    assert list(manifest.subject) == ["01", "01", "02", "02"]
    assert list(manifest.run) == ["01", "02", "01", "02"]
    assert (manifest.tr == 2.0).all() and (manifest.n_volumes == 20).all()
    assert manifest.events.map(lambda p: p.endswith("_events.tsv")).all()


def test_subset_and_round_trip(tmp_path):
    root = tiny_bids(tmp_path / "ds")
    manifest = index_bids(root, subjects=["02"])
    assert set(manifest.subject) == {"02"}
    write_manifest(manifest, tmp_path / "m.tsv")
    back = read_manifest(tmp_path / "m.tsv")
    assert list(back.subject) == ["02", "02"] and back.bold.tolist() == manifest.bold.tolist()


@pytest.mark.parametrize("breakage, words", [
    (lambda root, ev: ev.write_text("onset\tduration\n1\t3\n"), ["_events.tsv", "stim_file"]),
    (lambda root, ev: ev.write_text("onset\tduration\tstim_file\n40\t3\ta.png\n"), ["_events.tsv", "past the end of the run", "TR 2"]),
    (lambda root, ev: ev.write_text("onset\tduration\tstim_file\n1\t3\tb.png\n"), ["_events.tsv", "b.png"]),
    (lambda root, ev: ev.unlink(), ["_events.tsv", "missing"]),
])
def test_bad_events_name_the_file_and_problem(tmp_path, breakage, words):
    root = tiny_bids(tmp_path / "ds")
    events = root / "sub-02" / "func" / "sub-02_task-train_run-02_events.tsv"
    breakage(root, events)
    with pytest.raises(BIDSInputError) as err:
        check_manifest(index_bids(root), root / "stimuli")
    assert "sub-02_task-train_run-02" in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_missing_tr_and_missing_dataset_are_named(tmp_path):
    root = tiny_bids(tmp_path / "ds", subjects=("01",))
    (root / "sub-01/func/sub-01_task-train_run-01_bold.json").write_text("{}")
    with pytest.raises(BIDSInputError, match="run-01_bold.nii.gz: no RepetitionTime"):
        index_bids(root)
    with pytest.raises(BIDSInputError, match="dataset_description.json"):
        index_bids(tmp_path / "nothing")


def test_broken_nifti_is_named(tmp_path):
    root = tiny_bids(tmp_path / "ds", subjects=("01",))
    (root / "sub-01/func/sub-01_task-train_run-02_bold.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(BIDSInputError, match="run-02_bold.nii.gz: cannot read"):
        check_manifest(index_bids(root), root / "stimuli")


def test_plan_manifest_uses_bids_names(tmp_path):
    plan = {"runs": [{"subject": "01", "task": "test", "run": 3}]}
    row = manifest_from_plan(plan, tmp_path, tr=1.5).iloc[0]
    assert row.bold.endswith("sub-01/func/sub-01_task-test_run-03_bold.nii.gz") and row.tr == 1.5


def test_stimulus_column_reads_one_attribute_per_stimulus(tmp_path):
    from fmrirecon.bids import read_stimuli_table, stimulus_column

    assert read_stimuli_table(tmp_path) is None
    (tmp_path / "stimuli.tsv").write_text("stim_file\tcategory\na.png\tface\nb.png\tn/a\nc.png\thouse\n")
    table = read_stimuli_table(tmp_path)
    values = stimulus_column(table, ["c.png", "a.png", "b.png", "a.png"], "category", "stimuli.tsv")
    assert list(values[[0, 1, 3]]) == ["house", "face", "face"] and pd.isna(values[2])
    with pytest.raises(ValueError, match=r"stimuli.tsv: no row for \['d.png'\]"):
        stimulus_column(table, ["a.png", "d.png"], "category", "stimuli.tsv")
    with pytest.raises(ValueError, match="stimuli.tsv: no column 'family'"):
        stimulus_column(table, ["a.png"], "family", "stimuli.tsv")
    with pytest.raises(ValueError, match="no column"):
        stimulus_column(None, ["a.png"], "category", "stimuli.tsv")
