import pytest
import yaml
from snakemake.utils import validate

from conftest import REPO
import copy

from fmrirecon.config import ConfigError, check_config, fill_defaults

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


@pytest.mark.parametrize("path", sorted([REPO / "config.yaml", *(REPO / "config").glob("*.yaml")]))
def test_shipped_configs_are_valid(path):
    config = yaml.safe_load(path.read_text())
    check_config(config, SCHEMA)
    validate(config, str(SCHEMA))
    assert config["glm"]["method"] in ("lsa", "lss")


def test_defaults_are_filled():
    config = fill_defaults({}, SCHEMA)
    assert config["preprocess"]["method"] == "light"
    assert config["methods"] == {"pca": {"n_components": 50}}
    assert config["evaluation"]["n_way"] == [2, 5, 10]


@pytest.mark.parametrize("path", sorted([REPO / "config.yaml", *(REPO / "config").glob("*.yaml")]))
def test_defaults_agree_with_snakemake_validate(path):
    # fill_defaults stands in for validate's default filling, which cluster jobs skip
    config = yaml.safe_load(path.read_text())
    ours, reference = fill_defaults(copy.deepcopy(config), SCHEMA), copy.deepcopy(config)
    validate(reference, str(SCHEMA))
    assert ours == reference
    assert ours != config or config == reference


@pytest.mark.parametrize("config, words", [
    ({"glmm": {}}, ["config", "glmm"]),
    ({"glm": {"method": "lsq"}}, ["config['glm']['method']", "lsq"]),
    ({"voxels": {"n_top": 0}}, ["config['voxels']['n_top']"]),
    ({"subjects": ["sub-01"]}, ["config['subjects'][0]"]),
])
def test_bad_key_or_value_names_it_in_one_line(config, words):
    with pytest.raises(ConfigError) as err:
        check_config(config, SCHEMA)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_a_cluster_job_sees_the_schema_defaults(tmp_path):
    """A SLURM job re-reads the Snakefile in --mode remote, where snakemake.utils.validate
    fills no defaults; a config without results_dir must still parse there."""
    import subprocess
    import sys

    (tmp_path / "small.yaml").write_text(yaml.safe_dump({"seed": 3}))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
           "--configfiles", str(tmp_path / "small.yaml"), "--mode", "remote", "--cores", "1",
           "--target-jobs", "simulate_stimuli:", "--allowed-rules", "simulate_stimuli", "--dry-run"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
