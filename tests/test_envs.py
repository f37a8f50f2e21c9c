"""Each rule's conda environment (envs/*.yaml) holds what the rule's script imports.

A rule of the fMRI family must not need torch; a rule of the model family must find
everything it imports. Checked without conda: the script's imports (and the imports
inside the stage function it calls) are executed in a fresh interpreter in which the
packages of the *other* environments, absent from the rule's own, cannot be imported.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from fmrirecon.methods import METHODS

RULES = REPO / "workflow" / "rules"
# conda package name -> import name, where they differ
IMPORT_NAMES = {"scikit-learn": "sklearn", "scikit-image": "skimage", "pillow": "PIL",
                "matplotlib-base": "matplotlib", "pyyaml": "yaml", "pybids": "bids"}


def env_packages(path: Path) -> set[str]:
    """Import names of the packages an environment file installs (conda and pip)."""
    names = set()
    for dep in yaml.safe_load(path.read_text())["dependencies"]:
        for spec in dep["pip"] if isinstance(dep, dict) else [dep]:
            name = re.split(r"[<>=! ]", spec, maxsplit=1)[0]
            names.add(IMPORT_NAMES.get(name, name))
    return names - {"python", "pip"}


def rule_envs_and_scripts() -> list[tuple[str, Path, Path]]:
    """(rule, env file, script) of every rule with both ``conda:`` and ``script:``."""
    found = []
    for smk in sorted(RULES.glob("*.smk")):
        for block in re.split(r"^\s*rule ", smk.read_text(), flags=re.M)[1:]:
            name = block.split(":", 1)[0]
            env = re.search(r"conda:\s*\n\s*\"([^\"]+)\"", block)
            script = re.search(r"script:\s*\n\s*\"([^\"]+)\"", block)
            if env and script:
                found.append((name, (RULES / env[1]).resolve(), (RULES / script[1]).resolve()))
    return found


def _absolute(module: str, level: int, package: str) -> str:
    if not level:
        return module
    base = package.split(".")[: len(package.split(".")) - level + 1]
    return ".".join(base + ([module] if module else []))


def imported_modules(script: Path) -> set[str]:
    """Modules a workflow script imports, plus those imported inside the fmrirecon
    functions it calls (the stages import their heavy modules lazily)."""
    modules = set()
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Import):
            modules.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            if not node.module.startswith("fmrirecon"):
                continue
            spec = importlib.util.find_spec(node.module)
            origin = Path(spec.origin)
            package = node.module if origin.name == "__init__.py" else node.module.rpartition(".")[0]
            called = {a.name for a in node.names}
            for fn in ast.parse(origin.read_text()).body:
                if isinstance(fn, ast.FunctionDef) and fn.name in called:
                    if {"method_class", "get_method"} & {n.id for n in ast.walk(fn)
                                                         if isinstance(n, ast.Name)}:
                        # methods are imported by name at run time: any of them may run
                        modules.update(m.split(":")[0] for m in METHODS.values())
                    for inner in ast.walk(fn):
                        if isinstance(inner, ast.ImportFrom):
                            modules.add(_absolute(inner.module or "", inner.level, package))
                        elif isinstance(inner, ast.Import):
                            modules.update(a.name for a in inner.names)
    return modules


ENVS = {p.name: env_packages(p) for p in sorted((REPO / "envs").glob("*.yaml"))}
ALL_PACKAGES = set().union(*ENVS.values())
CASES = rule_envs_and_scripts()

_BLOCKED_IMPORTS = """
import importlib.abc, sys
blocked = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is not in this rule's environment")
sys.meta_path.insert(0, Block())
import importlib
for module in sys.argv[2].split(","):
    importlib.import_module(module)
"""


def test_every_rule_with_a_script_names_an_existing_env():
    assert len(CASES) >= 12
    missing = {rule: env.name for rule, env, _ in CASES if env.name not in ENVS}
    assert not missing


def test_the_fmri_family_does_without_torch():
    fmri = {rule for rule, env, _ in CASES if env.name == "fmri.yaml"}
    assert {"glm", "simulate_subject", "preprocess_light", "evaluate", "report"} <= fmri
    assert not {"torch", "torchvision", "himalaya"} & ENVS["fmri.yaml"]


@pytest.mark.parametrize("rule,env,script", CASES, ids=[c[0] for c in CASES])
def test_rule_imports_only_what_its_env_has(rule, env, script):
    modules = sorted(m for m in imported_modules(script) if m and m != "__future__")
    blocked = ALL_PACKAGES - ENVS[env.name]
    if not blocked:
        pytest.skip(f"{env.name} has every package of the other environments")
    run = subprocess.run(
        [sys.executable, "-c", _BLOCKED_IMPORTS, ",".join(sorted(blocked)), ",".join(modules)],
        capture_output=True, text=True, cwd=REPO,
    )
    assert run.returncode == 0, f"rule {rule} ({env.name}): {run.stderr.strip().splitlines()[-1]}"


def constraints() -> dict[str, str]:
    """constraints.txt as normalised package name -> exact version."""
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


@pytest.mark.parametrize("env", sorted((REPO / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_env_versions_are_the_tested_ones(env):
    """Cluster environments install exactly what CI tested (constraints.txt)."""
    pins = constraints()
    conda_names = {"matplotlib-base": "matplotlib"}
    for dep in yaml.safe_load(env.read_text())["dependencies"]:
        for spec in dep["pip"] if isinstance(dep, dict) else [dep]:
            name, _, version = re.split(r"(==|=)", spec, maxsplit=1) if "=" in spec else (spec, "", "")
            if name in ("python", "pip"):
                continue
            key = conda_names.get(name, name).lower()
            assert version == pins[key], f"{env.name}: {spec} but constraints.txt has {pins[key]}"


def test_constraints_cover_every_dependency():
    """Every dependency of pyproject.toml (and its extras) has an exact version."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + sum(project["optional-dependencies"].values(), [])
    names = {re.split(r"[\[<>=!~ ;]", spec, maxsplit=1)[0].lower().replace("_", "-") for spec in specs}
    assert names - set(constraints()) == set()
