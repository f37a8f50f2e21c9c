"""The code style the project keeps (pyproject.toml's [tool.ruff] and [tool.snakefmt]):
checked with the rest of the tests so a change that breaks it does not land."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

BIN = Path(sys.executable).parent


def _tool(name):
    path = BIN / name if (BIN / name).exists() else shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not installed: pip install -c constraints.txt -e '.[test]'")
    return str(path)


def test_python_passes_ruff():
    done = subprocess.run([_tool("ruff"), "check", "--output-format", "concise", "--no-cache"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_rule_files_are_snakefmt_formatted():
    done = subprocess.run([_tool("snakefmt"), "--check", "Snakefile", "workflow"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
