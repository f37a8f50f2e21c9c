import pytest
import yaml
from snakemake.utils import validate

from conftest import REPO
from fmrirecon.config import ConfigError, check_config

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


@pytest.mark.parametrize("path", sorted([REPO / "config.yaml", *(REPO / "config").glob("*.yaml")]))
def test_shipped_configs_are_valid(path):
    config = yaml.safe_load(path.read_text())
    check_config(config, SCHEMA)
    validate(config, str(SCHEMA))
    assert config["glm"]["method"] in ("lsa", "lss")


def test_defaults_are_filled():
    config = {}
    validate(config, str(SCHEMA))
    assert config["preprocess"]["method"] == "light"
    assert config["methods"] == {"pca": {"n_components": 50}}
    assert config["evaluation"]["n_way"] == [2, 5, 10]


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
