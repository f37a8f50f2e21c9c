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
    (lambda root, ev: ev.write_text("onset\tduration\tstim_file\n40\t3\ta.png\n"),
     ["_events.tsv", "past the end of the run", "TR 2"]),
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
    from fmrirecon.stimuli import read_stimuli_table, stimulus_column

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


def _events(path, rows):
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False, na_rep="n/a")
    return path


def test_read_trials_resolves_ids_by_table_stem_and_subfolder(tmp_path):
    from fmrirecon.events import read_trials
    from fmrirecon.stimuli import StimulusResolver, stimuli_spec

    folder = tmp_path / "images"
    (folder / "cats").mkdir(parents=True)
    for name in ("cats/c1.png", "n0001_7.JPEG", "plain.png"):
        (folder / name).write_bytes(b"x")
    (tmp_path / "ids.tsv").write_text("stimulus_id\tstim_file\n1518009.0080\tcats/c1.png\n")
    rows = [dict(onset=2, duration=1, stimulus_id=1518009.008, stimulus_name="n/a", event_type=1),
            dict(onset=8, duration=1, stimulus_id="n/a", stimulus_name="n/a", event_type=-1)]
    by_table = StimulusResolver(stimuli_spec({"column": "stimulus_id", "folder": str(folder),
                                              "table": str(tmp_path / "ids.tsv")}, None))
    trials = read_trials(_events(tmp_path / "a_events.tsv", rows), {}, by_table, splits=["train"])
    # 1518009.008 and 1518009.0080 are one id; the n/a row is not a trial
    assert trials[["stim_id", "stim_file", "split"]].values.tolist() == [["1518009.008", "cats/c1.png", "train"]]
    by_stem = StimulusResolver(stimuli_spec({"column": "stimulus_name", "folder": str(folder)}, None))
    rows = [dict(onset=2, duration=1, stimulus_name="n0001_7"), dict(onset=5, duration=1, stimulus_name="plain.png"),
            dict(onset=9, duration=1, stimulus_name="./cats/../plain.png")]
    trials = read_trials(_events(tmp_path / "b_events.tsv", rows), {}, by_stem, splits=["test"])
    assert list(trials["stim_file"]) == ["n0001_7.JPEG", "plain.png", "plain.png"]  # one image, one name


def test_read_trials_splits_by_column_and_drops_rows_by_rule(tmp_path):
    from fmrirecon.events import read_trials, run_splits
    from fmrirecon.stimuli import StimulusResolver, stimuli_spec

    (tmp_path / "stimuli").mkdir()
    for name in "abc":
        (tmp_path / "stimuli" / f"{name}.png").write_bytes(b"x")
    resolver = StimulusResolver(stimuli_spec({}, tmp_path))
    rows = [dict(onset=0, duration=4, trial_type="fixation", phase="train", stim_file="n/a"),
            dict(onset=4, duration=2, trial_type="image", phase="train", stim_file="a.png"),
            dict(onset=8, duration=2, trial_type="oneback", phase="train", stim_file="a.png"),
            dict(onset=12, duration=2, trial_type="image", phase="holdout", stim_file="b.png"),
            dict(onset=16, duration=2, trial_type="image", phase="practice", stim_file="c.png")]
    design = {"split_by": "column", "split_column": "phase",
              "split_values": {"train": ["train"], "test": ["holdout"], "imagery": []},
              "exclude": {"trial_type": ["fixation"]}, "exclude_split": {"train": {"trial_type": ["oneback"]}}}
    counts = {}
    trials = read_trials(_events(tmp_path / "x_events.tsv", rows), design, resolver,
                         splits=run_splits({"task": "x"}, design), counts=counts)
    assert trials[["onset", "split"]].values.tolist() == [[4.0, "train"], [12.0, "test"]]
    assert counts == {"excluded": 2, "no_stimulus": 0, "no_split": 1, "modelled": 2}
    # the one-back and the practice trial showed an image: the GLM models them (not the fixation)
    assert sorted(trials.attrs["nuisance"]) == [(8.0, 2.0), (16.0, 2.0)]
    # splits by session label: globs and regular expressions
    design = {"split_by": "session", "train_sessions": ["perceptionTraining*"],
              "test_sessions": ["re:perceptionTest0[12]"]}
    assert run_splits({"task": "p", "session": "perceptionTraining07"}, design) == ["train"]
    assert run_splits({"task": "p", "session": "perceptionTest02"}, design) == ["test"]
    assert run_splits({"task": "p", "session": "perceptionTest03"}, design) == []


def test_whole_file_checks_are_cached_by_size_and_mtime(tmp_path, monkeypatch):
    import fmrirecon.preflight as preflight

    root = tiny_bids(tmp_path / "ds", subjects=("01",))
    reads = []
    real = preflight.nifti_summary
    monkeypatch.setattr(preflight, "nifti_summary", lambda path: reads.append(path) or real(path))
    cache = tmp_path / "cache.json"
    manifest = index_bids(root)
    preflight.check_runs(manifest, {"folder": str(root / "stimuli"), "column": "stim_file", "table": None},
                         cache=preflight._Cache(cache))
    assert len(reads) == 2
    preflight.check_runs(manifest, {"folder": str(root / "stimuli"), "column": "stim_file", "table": None},
                         cache=preflight._Cache(cache))
    assert len(reads) == 2  # nothing read again
    bold = root / "sub-01/func/sub-01_task-train_run-02_bold.nii.gz"
    img = nib.load(bold)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj) + 1, img.affine, img.header), bold)
    preflight.check_runs(manifest, {"folder": str(root / "stimuli"), "column": "stim_file", "table": None},
                         cache=preflight._Cache(cache))
    assert len(reads) == 3 and reads[-1] == bold


def test_read_trials_tolerates_root_relative_names_and_padding(tmp_path):
    from fmrirecon.events import read_trials
    from fmrirecon.stimuli import StimulusResolver, stimuli_spec

    (tmp_path / "stimuli").mkdir()
    (tmp_path / "stimuli" / "a.png").write_bytes(b"x")
    path = tmp_path / "r_events.tsv"
    path.write_text("onset \tduration\tstim_file\r\n 2.0\t1 \tstimuli/a.png\r\n6\t1\ta.png \r\n")
    trials = read_trials(path, {}, StimulusResolver(stimuli_spec({}, tmp_path)), splits=["train"])
    assert trials[["onset", "stim_file"]].values.tolist() == [[2.0, "a.png"], [6.0, "a.png"]]
