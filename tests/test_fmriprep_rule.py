"""The fmriprep rule and workflow/scripts/fmriprep.py, with stand-ins for the engines.

Neither Docker nor Apptainer runs here: fake ``fmriprep-docker`` / ``apptainer``
executables on PATH record their command line and write the subject's output folder,
so the rule, the script and the command builders are exercised together.
"""

import json
import os
import shlex
import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from fmrirecon.preprocess.fmriprep import container_image, fmriprep_command, unbound_paths
from test_workflow import TINY

FAKE = """#!/bin/sh
# stand-in for {name}: record the arguments, write what fMRIPrep would
python3 -c 'import json, sys; json.dump(sys.argv[1:], open("{record}", "w"))' "$@"
mkdir -p "{out}/sub-01/func"
"""


@pytest.fixture
def license_file(tmp_path):
    path = tmp_path / "license.txt"
    path.write_text("not a real license\n")
    return path


@pytest.fixture
def bids(tmp_path):
    bids = tmp_path / "bids"
    (bids / "sub-01").mkdir(parents=True)
    (bids / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0"}')
    return bids


def test_command_follows_the_config_section(bids, license_file, tmp_path):
    settings = {"engine": "docker", "image": "nipreps/fmriprep:25.1.4", "fs_license": str(license_file),
                "output_spaces": [], "nthreads": 8, "mem_mb": 32000, "extra_args": ["--fs-no-reconall"]}
    cmd = fmriprep_command(settings, bids, tmp_path / "out", tmp_path / "work", "01", nthreads=4, mem_mb=20000)
    assert cmd[0] == "fmriprep-docker"
    text = shlex.join(cmd)
    # what the job was given wins over the config; spaces follow preprocess.space
    assert "--nthreads 4 --mem_mb 20000" in text
    assert "-i nipreps/fmriprep:25.1.4" in text
    assert cmd[-3:] == ["--output-spaces", "func", "--fs-no-reconall"]
    cmd = fmriprep_command(settings, bids, tmp_path / "out", tmp_path / "work", "01", space="T1w")
    assert "--output-spaces T1w" in shlex.join(cmd) and "--nthreads 8 --mem_mb 32000" in shlex.join(cmd)


def test_apptainer_needs_an_image_file_and_templateflow(bids, license_file, tmp_path, monkeypatch):
    monkeypatch.delenv("TEMPLATEFLOW_HOME", raising=False)
    image = tmp_path / "fmriprep.sif"
    image.write_bytes(b"")
    settings = {"engine": "apptainer", "image": str(image), "fs_license": str(license_file)}
    with pytest.raises(ValueError, match="templateflow_home"):
        fmriprep_command(settings, bids, tmp_path / "out", tmp_path / "work", "01")
    (tmp_path / "tf").mkdir()
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path / "tf"))
    cmd = fmriprep_command(settings, bids, tmp_path / "out", tmp_path / "work", "01")
    assert cmd[2:5] == ["apptainer", "run", "--cleanenv"] and str(image) in cmd
    assert f"{tmp_path / 'tf'}:/home/fmriprep/.cache/templateflow" in cmd
    with pytest.raises(ValueError, match="apptainer build fmriprep.sif docker://nipreps/fmriprep"):
        fmriprep_command({**settings, "image": "nipreps/fmriprep:25.1.4"}, bids, tmp_path / "o", tmp_path / "w", "01")
    with pytest.raises(ValueError, match="fs_license"):
        fmriprep_command({**settings, "fs_license": None}, bids, tmp_path / "o", tmp_path / "w", "01")
    with pytest.raises(ValueError, match="engine"):
        fmriprep_command({**settings, "engine": "podman"}, bids, tmp_path / "o", tmp_path / "w", "01")


def test_container_engine_runs_fmriprep_itself_on_host_paths(bids, license_file, tmp_path):
    settings = {"engine": "container", "fs_license": str(license_file), "templateflow_home": "/tf"}
    cmd = fmriprep_command(settings, bids, tmp_path / "out", tmp_path / "work", "01", nthreads=3, mem_mb=9000)
    assert cmd[:3] == ["env", "TEMPLATEFLOW_HOME=/tf", "fmriprep"]
    assert cmd[3:6] == [str(bids), str(tmp_path / "out"), "participant"]
    assert f"--fs-license-file {license_file}" in shlex.join(cmd) and "--nthreads 3 --mem_mb 9000" in shlex.join(cmd)
    assert container_image({}) .startswith("docker://nipreps/fmriprep:")
    assert container_image({"image": "nipreps/fmriprep:25.1.4"}) == "docker://nipreps/fmriprep:25.1.4"
    assert container_image({"image": "/images/fmriprep.sif"}) == "/images/fmriprep.sif"


def test_unbound_paths_names_what_the_container_cannot_see(tmp_path):
    cwd, data, lic = tmp_path / "project", tmp_path / "data" / "bids", tmp_path / "fs" / "license.txt"
    paths = [cwd / "results", data, lic]
    assert unbound_paths(paths, "", cwd) == [data, lic]
    assert unbound_paths(paths, f"--bind {tmp_path / 'data'}", cwd) == [lic]
    assert unbound_paths(paths, f"-B {tmp_path / 'data'},{lic.parent}:{lic.parent}:ro", cwd) == []
    # a bind that moves the folder does not make the host path visible
    assert unbound_paths(paths, f"--bind={data}:/data --cleanenv -B {lic}", cwd) == [data]


FAKE_APPTAINER = """#!/bin/sh
# stand-in for apptainer: a version, a pulled image, and exec running the command here
case "$1" in
  --version) echo "apptainer version 1.3.4"; exit 0;;
  pull) touch "$3"; echo "$4" > "{pulled}"; exit 0;;
esac
python3 -c 'import json, sys; json.dump(sys.argv[1:], open("{record}", "w"))' "$@"
for last; do :; done
exec bash -c "$last"
"""


@pytest.mark.slow
def test_container_rule_runs_in_the_fmriprep_image(tmp_path, license_file):
    """--software-deployment-method apptainer: the rule's container is the fMRIPrep
    image, binds are checked before any job, and fmriprep runs inside the container."""
    out = tmp_path / "results" / "derivatives" / "fmriprep"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record, pulled, argv = tmp_path / "exec.json", tmp_path / "pulled.txt", tmp_path / "argv.json"
    (bin_dir / "apptainer").write_text(FAKE_APPTAINER.format(record=record, pulled=pulled))
    # apptainer packages also install `singularity`, the name older Snakemake 9 releases call
    (bin_dir / "singularity").symlink_to("apptainer")
    (bin_dir / "fmriprep").write_text(FAKE.format(name="fmriprep", record=argv, out=out))
    for exe in ("apptainer", "fmriprep"):
        (bin_dir / exe).chmod(0o755)
    settings = {"engine": "container", "image": "nipreps/fmriprep:25.1.4", "fs_license": str(license_file),
                "nthreads": 2, "mem_mb": 4000}
    config = {**TINY, "simulate": {**TINY["simulate"], "subjects": 1}, "results_dir": str(tmp_path / "results"),
              "preprocess": {"method": "fmriprep", "fmriprep": settings}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    project = tmp_path / "project"  # the license file lies outside the working directory
    project.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    target = str(out / "sub-01")
    base = [sys.executable, "-m", "snakemake", target, "-s", str(REPO / "Snakefile"), "--directory", str(project),
            "--configfile", str(tmp_path / "config.yaml"), "--cores", "2", "--sdm", "apptainer"]
    refused = subprocess.run(base, env=env, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and f'--apptainer-args "--bind {tmp_path / "results"}' in refused.stderr
    assert not record.exists()
    done = subprocess.run(base[:4] + [f"--apptainer-args=--bind {tmp_path}"] + base[4:],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert pulled.read_text().strip() == "docker://nipreps/fmriprep:25.1.4"
    exec_args = json.loads(record.read_text())
    assert "exec" in exec_args and f"--bind {tmp_path}" in " ".join(exec_args)
    bids = tmp_path / "results" / "simulated" / "bids"
    assert json.loads(argv.read_text()) == fmriprep_command(
        settings, bids, out, tmp_path / "results" / "work" / "fmriprep", "01", nthreads=2, mem_mb=4000)[1:]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["docker", "apptainer"])
def test_rule_runs_the_engine_on_one_subject(engine, tmp_path, license_file):
    out = tmp_path / "results" / "derivatives" / "fmriprep"
    record = tmp_path / "argv.json"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    name = "fmriprep-docker" if engine == "docker" else "apptainer"
    (bin_dir / name).write_text(FAKE.format(name=name, record=record, out=out))
    (bin_dir / name).chmod(0o755)
    (tmp_path / "templateflow").mkdir()
    image = tmp_path / "fmriprep-25.1.4.sif"
    image.write_bytes(b"")
    settings = {"engine": engine, "fs_license": str(license_file), "nthreads": 8, "mem_mb": 4000,
                "image": str(image) if engine == "apptainer" else "nipreps/fmriprep:25.1.4",
                "templateflow_home": str(tmp_path / "templateflow")}
    config = {**TINY, "simulate": {**TINY["simulate"], "subjects": 1},
              "preprocess": {"method": "fmriprep", "fmriprep": settings}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
                           str(tmp_path), "--configfile", str(tmp_path / "config.yaml"), "--cores", "2",
                           "results/derivatives/fmriprep/sub-01"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    argv = json.loads(record.read_text())
    bids = tmp_path / "results" / "simulated" / "bids"
    # threads: the 2 cores snakemake gave the job, not the configured 8
    expected = fmriprep_command(settings, bids, out, tmp_path / "results" / "work" / "fmriprep", "01",
                                nthreads=2, mem_mb=4000)
    assert argv == expected[1:] if engine == "docker" else argv == expected[3:]
    log = (tmp_path / "results" / "logs" / "fmriprep" / "sub-01.log").read_text()
    assert "running: " in log and "--participant-label 01" in log
