# Config validation, the BIDS manifest and path helpers shared by every rule file.
import os
import re
import shlex
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
from snakemake.utils import min_version, validate
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from fmrirecon.bids import (MANIFEST_COLUMNS, check_manifest, index_bids, manifest_from_plan,
                            read_manifest, write_manifest)
from fmrirecon.config import check_config
from fmrirecon.preprocess import derivative_paths
from fmrirecon.preprocess.fmriprep import fmriprep_command
from fmrirecon.methods import check_method, implementation
from fmrirecon.stages import DENOISED_MAPS, method_class

min_version("9.0")

# Jobs import the checked-out library, also inside conda environments (envs/), which
# hold its dependencies but not the library itself. Jobs inherit this environment,
# sbatch included (--export=ALL by default).
os.environ.update(PYTHONPATH=os.pathsep.join(
    p for p in (str(Path(workflow.basedir) / "src"), os.environ.get("PYTHONPATH")) if p
))

SCHEMA = workflow.source_path("../schemas/config.schema.yaml")
check_config(config, SCHEMA)  # one-line message naming the bad key
validate(config, SCHEMA)  # fills the defaults


wildcard_constraints:
    subject="[a-zA-Z0-9]+",
    task="[a-zA-Z0-9]+",
    run="[0-9]+",
    method="[a-z0-9]+",
    split="test|imagery",


RESULTS = Path(config["results_dir"])
OUT = RESULTS / "derivatives" / "fmrirecon"
REPORT = RESULTS / "report"
LOGS = RESULTS / "logs"
# Wall time and peak memory of every job (Snakemake benchmark files), summed up in the report.
BENCHMARKS = RESULTS / "benchmarks"
# Where the betas come from: a file of ready-made betas (entry point "betas"), the
# built-in simulation, or a BIDS dataset.
IMPORTED = config["betas"] is not None
SIMULATED = not IMPORTED and config["bids_dir"] is None

# ---- the dataset: imported betas, simulated (known from the config) or indexed once from BIDS ----
if IMPORTED:
    from fmrirecon.importers import SPEC_DEFAULTS

    IMPORT_SPEC = {**SPEC_DEFAULTS, **config["betas"]}
    BIDS = None
    MANIFEST = pd.DataFrame(columns=MANIFEST_COLUMNS)
elif SIMULATED:
    from fmrirecon.simulate import DEFAULTS as SIM_DEFAULTS, stimulus_settings, study_plan

    SIM = {**SIM_DEFAULTS, **config["simulate"]}
    BIDS = RESULTS / "simulated" / "bids"
    TRUTH = RESULTS / "simulated" / "truth"
    PLAN = study_plan(SIM)
    MANIFEST = manifest_from_plan(PLAN, BIDS, SIM["tr"])
else:
    BIDS = Path(config["bids_dir"])
    _manifest_path = RESULTS / "manifest.tsv"
    if workflow.is_main_process:
        # The only place the dataset is indexed: jobs (local or on SLURM) read the file.
        _tasks = sum(config["design"].values(), [])
        MANIFEST = check_manifest(
            index_bids(BIDS, subjects=config["subjects"], tasks=_tasks), BIDS / "stimuli"
        )
        write_manifest(MANIFEST, _manifest_path)
    else:
        MANIFEST = read_manifest(_manifest_path)

if config["subjects"] and not IMPORTED:
    _unknown = sorted(set(config["subjects"]) - set(MANIFEST["subject"]))
    if _unknown:
        raise ValueError(f"config['subjects']: {', '.join(_unknown)} not in {BIDS}")
    MANIFEST = MANIFEST[MANIFEST["subject"].isin(config["subjects"])]

SPLIT_TASKS = {
    "train": config["design"]["train_tasks"],
    "test": config["design"]["test_tasks"],
    "imagery": config["design"]["imagery_tasks"],
}
MANIFEST = MANIFEST[MANIFEST["task"].isin(sum(SPLIT_TASKS.values(), []))]
SUBJECTS = [IMPORT_SPEC["subject"]] if IMPORTED else sorted(MANIFEST["subject"].unique())
# The images shown: BIDS's stimuli/ folder, or the imported ones (a pattern in {subject}).
STIMULI = RESULTS / "imported" / "sub-{subject}" / "stimuli" if IMPORTED else BIDS / "stimuli"
if not config["methods"] and not config["classify"]["label"]:
    raise ValueError("config['methods']: no reconstruction method and no classify.label: nothing to do")
# A classification-only study (no methods) needs no test images.
for _split in ("train", "test") if config["methods"] else ("train",):
    if not IMPORTED and not MANIFEST["task"].isin(SPLIT_TASKS[_split]).any():
        raise ValueError(
            f"config['design']['{_split}_tasks']: none of {SPLIT_TASKS[_split]} "
            f"is a task of {BIDS}"
        )
EVAL_SPLITS = ["test"] + (["imagery"] if MANIFEST["task"].isin(SPLIT_TASKS["imagery"]).any() else [])
METHODS = sorted(config["methods"])
for _name in METHODS:
    if not re.fullmatch("[a-z0-9]+", _name):
        raise ValueError(f"config['methods']: name {_name!r} must be lowercase letters and digits")
    check_method(_name, config["methods"][_name] or {})  # unknown implementation or key: stop now

# ---- preprocessed data ----
PREP_METHOD = config["preprocess"]["method"]
if PREP_METHOD == "precomputed":
    if not config["preprocess"]["derivatives_dir"]:
        raise ValueError("config['preprocess']['derivatives_dir']: required when method is precomputed")
    PREP = Path(config["preprocess"]["derivatives_dir"])
else:
    PREP = RESULTS / "derivatives" / "fmriprep"


def runs_of(subject):
    """The manifest rows of one subject."""
    return MANIFEST[MANIFEST["subject"] == subject]


def run_row(subject, task, run):
    """The manifest row of one run."""
    rows = MANIFEST[(MANIFEST["subject"] == subject) & (MANIFEST["task"] == task) & (MANIFEST["run"] == run)]
    return rows.iloc[0]


def preproc_files(subject, task, run):
    """fMRIPrep-named preprocessed files of one run (bold, mask, confounds)."""
    return derivative_paths(PREP, subject, task, run, space=config["preprocess"]["space"])


def glm_inputs(wildcards):
    """Everything the GLM of one subject reads."""
    files = {"events": list(runs_of(wildcards.subject)["events"])}
    if PREP_METHOD == "fmriprep":
        files["preproc"] = PREP / f"sub-{wildcards.subject}"
    else:
        rows = runs_of(wildcards.subject).itertuples()
        paths = [preproc_files(r.subject, r.task, r.run) for r in rows]
        files["bold"] = [p["bold"] for p in paths]
        files["mask"] = [p["mask"] for p in paths]
        files["confounds"] = [p["confounds"] for p in paths]
    return files


def glm_runs(subject):
    """Run descriptions handed to the GLM (see fmrirecon.glm.single_trial_betas)."""
    runs = []
    for r in runs_of(subject).itertuples():
        paths = preproc_files(r.subject, r.task, r.run)
        runs.append(dict(bold=str(paths["bold"]), mask=str(paths["mask"]),
                         confounds=str(paths["confounds"]), events=r.events,
                         task=r.task, run=r.run, tr=float(r.tr)))
    return runs


def betas_files(subject):
    """The single-trial betas of one subject (from the GLM, or imported)."""
    label = "imported" if IMPORTED else config["glm"]["method"]
    stem = OUT / f"sub-{subject}" / "func" / f"sub-{subject}_desc-{label}"
    return {"betas": f"{stem}_betas.h5", "trials": f"{stem}_trials.tsv"}


def method_settings(method):
    """The config section of one method (``method:`` in it names the implementation)."""
    return dict(config["methods"][method] or {})


# Files a method implementation needs beyond the betas (a trained generator, feature
# network weights), as the methods declare them (ReconstructionMethod.input_files,
# registered in generator.smk):
# METHOD_FILES[implementation] is a list of functions settings -> {parameter: path}.
# The files become inputs of decode and reconstruct and reach the method as the
# parameters of the same name, so a method's extra stage touches no other method.
METHOD_FILES = {}


def method_files(wildcards):
    """Extra input files of the config method ``wildcards.method``."""
    settings = method_settings(wildcards.method)
    files = {}
    for make in METHOD_FILES.get(implementation(wildcards.method, settings), []):
        files.update(make(settings))
    return files


def method_parameters(wildcards):
    """The method's settings with its extra files in place.

    A function of the wildcards only: Snakemake does not track params that depend on
    ``input`` for its params rerun trigger (snakemake/snakemake#3895), and a changed
    method setting must refit the method.
    """
    files = {k: str(v) for k, v in method_files(wildcards).items()}
    return {**method_settings(wildcards.method), **files}


def excluded_stimuli(network):
    """The study's stimuli folder when train_network.exclude_stimuli keeps its images out."""
    from fmrirecon.methods import network_training

    if not network_training(config["methods"], network).get("exclude_stimuli"):
        return []
    if IMPORTED:
        raise ValueError(
            "train_network.exclude_stimuli: imported betas have no dataset-level stimuli "
            "table; leave the study's images out of the training folder instead"
        )
    return STIMULI
