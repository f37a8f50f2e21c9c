"""Bad inputs stop before any compute, with one clear line per problem naming the file
or config key (issue 17). The cases are in tests/bad_inputs.py."""

import hashlib
import re
import shutil

import pytest
import yaml
from snakemake.utils import validate

from bad_inputs import CASES, base_study
from conftest import REPO
from datasets import run_snakemake
from fmrirecon.bids import BIDSInputError
from fmrirecon.config import ConfigError, check_config
from fmrirecon.preflight import check_bids_study

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
IDS = [c[0] for c in CASES]
#: One case per kind of check in the fast tier (each case indexes a dataset: ~0.5 s);
#: every case runs in the slow tier, through the library and through snakemake.
FAST = {"events_row_duplicated", "events_onset_text", "events_empty_file", "events_onset_past_end",
        "stimulus_outside_dataset", "stimulus_corrupt_png", "stimuli_table_unknown_id", "test_image_in_training",
        "tr_zero", "tr_sidecar_differs_from_header", "sidecar_invalid_json", "bold_one_volume",
        "bold_truncated_gzip", "bold_grid_shape_differs", "multi_echo", "results_dir_in_subject_folder",
        "no_test_runs", "n_way_exceeds_test_images", "config_key_misspelt", "derivatives_other_space"}
LIBRARY_CASES = [pytest.param(*case, id=case[0], marks=() if case[0] in FAST else pytest.mark.slow)
                 for case in CASES]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("base")
    return root, base_study(root)


@pytest.fixture(scope="module")
def filled(base):
    """The base config with the schema's defaults (validating costs 0.5 s: done once)."""
    config = yaml.safe_load(yaml.safe_dump(base[1]))
    validate(config, str(SCHEMA))
    return config


def _checked_config(config, untouched, filled):
    """The config as the workflow sees it: validated, defaults filled."""
    if config == untouched:  # the case changed files only
        return {**filled, "bids_dir": config["bids_dir"], "results_dir": config["results_dir"]}
    check_config(config, SCHEMA)
    validate(config, str(SCHEMA))
    return config


def _copy(base, tmp_path):
    root, config = base
    shutil.copytree(root / "bids", tmp_path / "bids")
    return {**yaml.safe_load(yaml.safe_dump(config)), "bids_dir": str(tmp_path / "bids")}


def _tree(folder):
    """Every file under ``folder`` with its content hash: what must not change."""
    return {p.relative_to(folder).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_base_study_passes(base, tmp_path):
    config = _copy(base, tmp_path)
    config["results_dir"] = str(tmp_path / "results")
    check_config(config, SCHEMA)
    validate(config, str(SCHEMA))
    checked = check_bids_study(config)
    assert len(checked.trials) == 48 and not checked.warnings


@pytest.mark.parametrize("name, change, words", LIBRARY_CASES)
def test_bad_input_is_named_before_compute(base, filled, tmp_path, name, change, words):
    """The library's pre-flight (what the workflow runs before any job) names each problem."""
    config = _copy(base, tmp_path)
    config["results_dir"] = str(tmp_path / "results")
    untouched = yaml.safe_load(yaml.safe_dump(config))
    change(tmp_path, config)
    before = _tree(tmp_path / "bids") if (tmp_path / "bids").is_dir() else {}
    with pytest.raises((BIDSInputError, ConfigError)) as error:
        check_bids_study(_checked_config(config, untouched, filled))
    message = str(error.value)
    for word in words:
        assert word in message, message
    assert all(re.match(r"^\S.*: ", line) for line in message.splitlines()), message
    if before:
        assert _tree(tmp_path / "bids") == before  # nothing written into the inputs


def test_allow_test_in_train_makes_it_a_warning(base, tmp_path):
    config = _copy(base, tmp_path)
    config["results_dir"] = str(tmp_path / "results")
    dict(CASES_BY_ID)["test_image_in_training"](tmp_path, config)
    config["design"] = {"allow_test_in_train": True}
    validate(config, str(SCHEMA))
    checked = check_bids_study(config)
    assert any("1 of 10 test images also shown in training" in w for w in checked.warnings)


CASES_BY_ID = [(c[0], c[1]) for c in CASES]


@pytest.mark.slow
@pytest.mark.parametrize("name, change, words", CASES, ids=IDS)
def test_workflow_stops_before_any_job(base, tmp_path, name, change, words):
    """Through snakemake itself: exit 1 before any job, the message and no traceback."""
    config = _copy(base, tmp_path)
    change(tmp_path, config)
    before = _tree(tmp_path / "bids") if (tmp_path / "bids").is_dir() else {}
    done = run_snakemake(tmp_path / "work", config, check=False)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and not re.search(r'^\s+File "', done.stderr, re.M), done.stderr
    assert "Error: the input cannot be used" in done.stderr
    for word in words:
        assert word in done.stderr, done.stderr
    assert "Select jobs to execute" not in done.stdout + done.stderr  # no job started
    if before:
        assert _tree(tmp_path / "bids") == before
