# Config validation, the BIDS manifest and path helpers shared by every rule file.
import json
import os
import re
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
from snakemake.utils import min_version
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from fmrirecon.bids import (
    BIDSInputError,
    MANIFEST_COLUMNS,
    manifest_from_plan,
    read_manifest,
    write_manifest,
)
from fmrirecon.events import design_settings, run_splits
from fmrirecon.stimuli import stimuli_spec
from fmrirecon.config import ConfigError, check_config, fill_defaults
from fmrirecon.paths import bids_name, bids_path
from fmrirecon.preflight import check_bids_study
from fmrirecon.preprocess import derivative_files
from fmrirecon.preprocess.fmriprep import fmriprep_command
from fmrirecon.methods import check_method, implementation
from fmrirecon.stages import DENOISED_MAPS

min_version("9.0")

# Jobs import the checked-out library, also inside conda environments (envs/), which
# hold its dependencies but not the library itself. Jobs inherit this environment,
# sbatch included (--export=ALL by default).
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (str(Path(workflow.basedir) / "src"), os.environ.get("PYTHONPATH")) if p)
)


def stop(error):
    """End the run before any job with the error's message only: one line per problem,
    naming the file and the fix (a traceback would bury it)."""
    print(f"\nError: the input cannot be used ({type(error).__name__}):\n{error}\n", file=sys.stderr)
    sys.exit(1)


SCHEMA = workflow.source_path("../schemas/config.schema.yaml")
try:
    check_config(config, SCHEMA)  # one-line message naming the bad key
except ConfigError as _error:
    stop(_error)
# Defaults filled here, not by snakemake.utils.validate: that skips cluster jobs, which
# see only the config files named on the command line.
fill_defaults(config, SCHEMA)


wildcard_constraints:
    subject="[a-zA-Z0-9]+",
    task="[a-zA-Z0-9]+",
    run="[0-9]+",
    method="[a-z0-9]+",
    split="test|imagery",
    # a run's derivatives path without suffix: sub-01[/ses-02]/func/sub-01[_ses-02]_task-x[_run-01]
    runpath="sub-[a-zA-Z0-9]+/(ses-[a-zA-Z0-9]+/)?func/sub-[a-zA-Z0-9]+(_[a-z]+-[a-zA-Z0-9]+)*",


RESULTS = Path(config["results_dir"])
OUT = RESULTS / "derivatives" / "fmrirecon"
REPORT = RESULTS / "report"
LOGS = RESULTS / "logs"
# Wall time and peak memory of every job (Snakemake benchmark files), summed up in the report.
BENCHMARKS = RESULTS / "benchmarks"
# Where the betas come from: a file of ready-made betas (entry point "betas"), the
# Natural Scenes Dataset in its own layout (entry point "nsd"), the built-in simulation,
# or a BIDS dataset.
NSD = config["nsd"] is not None
IMPORTED = config["betas"] is not None or NSD
SIMULATED = not IMPORTED and config["bids_dir"] is None
DESIGN = design_settings(config["design"])
if config["betas"] is not None and NSD:
    stop(ValueError("config: betas and nsd are two entry points; give one"))


# ---- preprocessed data ----
PREP_METHOD = config["preprocess"]["method"]
if PREP_METHOD == "precomputed":
    if not config["preprocess"]["derivatives_dir"]:
        stop(ValueError("config['preprocess']['derivatives_dir']: required when method is precomputed"))
    PREP = Path(config["preprocess"]["derivatives_dir"])
else:
    PREP = RESULTS / "derivatives" / "fmriprep"

# ---- the dataset: imported betas, simulated (known from the config) or indexed once from BIDS ----
_design_path = RESULTS / "design.tsv"
if IMPORTED:
    if NSD:
        from fmrirecon.nsd import NSD_DEFAULTS, check_nsd

        NSD_SPEC = {**NSD_DEFAULTS, **config["nsd"]}
        if workflow.is_main_process:
            try:
                check_nsd(NSD_SPEC, results_dir=RESULTS).raise_if_any()
            except BIDSInputError as _error:
                stop(_error)
    else:
        from fmrirecon.importers import SPEC_DEFAULTS, check_betas

        IMPORT_SPEC = {**SPEC_DEFAULTS, **config["betas"]}
        if workflow.is_main_process:
            try:
                check_betas(config["betas"])  # the file and the names it must hold
            except ValueError as _error:
                stop(_error)
    BIDS = None
    STIM_SPEC = None
    MANIFEST = pd.DataFrame(columns=MANIFEST_COLUMNS)
    TRIALS = None
elif SIMULATED:
    from fmrirecon.simulate import DEFAULTS as SIM_DEFAULTS, stimulus_settings, study_plan

    SIM = {**SIM_DEFAULTS, **config["simulate"]}
    BIDS = RESULTS / "simulated" / "bids"
    TRUTH = RESULTS / "simulated" / "truth"
    try:
        PLAN = study_plan(SIM)  # checks the simulate section: an unknown key stops here
    except ValueError as _error:
        stop(_error)
    MANIFEST = manifest_from_plan(PLAN, BIDS, SIM["tr"])
    STIM_SPEC = stimuli_spec(config["stimuli"], BIDS)
    TRIALS = None  # the events do not exist before the simulation runs
else:
    BIDS = Path(config["bids_dir"])
    STIM_SPEC = stimuli_spec(config["stimuli"], BIDS)
    _manifest_path = RESULTS / "manifest.tsv"
    if workflow.is_main_process:
        # The only place the dataset is indexed and checked: jobs (local or on SLURM)
        # read the files written here.
        try:
            _checked = check_bids_study(config)
        except BIDSInputError as _error:
            stop(_error)
        for _line in _checked.lines:
            print(f"pre-flight: {_line}", file=sys.stderr)
        for _line in _checked.warnings:
            print(f"pre-flight WARNING: {_line}", file=sys.stderr)
        MANIFEST = _checked.manifest
        TRIALS = _checked.trials
        write_manifest(MANIFEST, _manifest_path)
        write_manifest(TRIALS, _design_path)
        # what pre-flight said (counts per split, warnings such as test images shown in
        # training under design.allow_test_in_train), for the report
        (RESULTS / "preflight.json").write_text(
            json.dumps({"lines": _checked.lines, "warnings": _checked.warnings}, indent=2) + "\n"
        )
    else:
        MANIFEST = read_manifest(_manifest_path)
        TRIALS = pd.read_csv(_design_path, sep="\t", dtype=str, keep_default_na=False)

if config["subjects"] and not IMPORTED:
    MANIFEST = MANIFEST[MANIFEST["subject"].isin(config["subjects"])]

SPLIT_TASKS = {
    "train": config["design"]["train_tasks"],
    "test": config["design"]["test_tasks"],
    "imagery": config["design"]["imagery_tasks"],
}
if SIMULATED:
    MANIFEST = MANIFEST[MANIFEST["task"].isin(sum(SPLIT_TASKS.values(), []))]
if IMPORTED:
    SUBJECTS = [f"{s:02d}" for s in NSD_SPEC["subjects"]] if NSD else [IMPORT_SPEC["subject"]]
else:
    SUBJECTS = sorted(MANIFEST["subject"].unique())
# The images shown: the stimuli folder (BIDS's stimuli/ or config stimuli.folder), or
# the imported ones (a pattern in {subject}).
STIMULI = RESULTS / "imported" / "sub-{subject}" / "stimuli" if IMPORTED else Path(STIM_SPEC["folder"])
if not config["methods"] and not config["classify"]["label"]:
    stop(ValueError("config['methods']: no reconstruction method and no classify.label: nothing to do"))
# A classification-only study (no methods) needs no test images (the BIDS entry's
# pre-flight checked its splits per subject).
for _split in ("train", "test") if config["methods"] and SIMULATED else ():
    if not MANIFEST["task"].isin(SPLIT_TASKS[_split]).any():
        stop(ValueError(f"config['design']['{_split}_tasks']: none of {SPLIT_TASKS[_split]} " f"is a task of {BIDS}"))
if IMPORTED:
    EVAL_SPLITS = ["test"]
elif SIMULATED:
    EVAL_SPLITS = ["test"] + (["imagery"] if MANIFEST["task"].isin(SPLIT_TASKS["imagery"]).any() else [])
else:
    EVAL_SPLITS = ["test"] + (["imagery"] if (TRIALS["split"] == "imagery").any() else [])
METHODS = sorted(config["methods"])
for _name in METHODS:
    if not re.fullmatch("[a-z0-9]+", _name):
        stop(ValueError(f"config['methods']: name {_name!r} must be lowercase letters and digits"))
    try:
        check_method(_name, config["methods"][_name] or {})  # unknown implementation or key: stop now
    except (ValueError, KeyError) as _error:
        # a settings error names its key already; an unknown implementation does not
        stop(_error if str(_error).startswith("config[") else ValueError(f"config['methods'][{_name!r}]: {_error}"))


# Every run by its derivatives path without suffix (the {runpath} wildcard).
def run_path(row):
    """The ``{runpath}`` of one manifest row: its derivatives path without suffix."""
    return str(derivative_files(Path(""), row)["bold"]).removesuffix("_desc-preproc_bold.nii.gz")


RUNS = {run_path(_row): _row for _row in MANIFEST.to_dict("records")}


def runs_of(subject):
    """The manifest rows of one subject."""
    return MANIFEST[MANIFEST["subject"] == subject]


def preproc_files(row):
    """fMRIPrep-named preprocessed files of one run (bold, mask, confounds): every
    entity of the raw run plus preprocess.space and preprocess.res."""
    return derivative_files(PREP, row, space=config["preprocess"]["space"], res=config["preprocess"]["res"])


def glm_inputs(wildcards):
    """Everything the GLM of one subject reads."""
    files = {"events": list(runs_of(wildcards.subject)["events"])}
    if PREP_METHOD == "fmriprep":
        files["preproc"] = PREP / f"sub-{wildcards.subject}"
    else:
        paths = [preproc_files(r) for r in runs_of(wildcards.subject).to_dict("records")]
        files["bold"] = [p["bold"] for p in paths]
        files["mask"] = [p["mask"] for p in paths]
        files["confounds"] = [p["confounds"] for p in paths]
    return files


def glm_runs(subject):
    """Run descriptions handed to the GLM (see fmrirecon.glm.single_trial_betas): files,
    labels, TR, the run's splits and the design and stimuli settings its events are
    read with (fmrirecon.events.read_trials)."""
    runs = []
    for r in runs_of(subject).to_dict("records"):
        paths = preproc_files(r)
        runs.append(
            dict(
                bold=str(paths["bold"]),
                mask=str(paths["mask"]),
                confounds=str(paths["confounds"]),
                events=r["events"],
                task=r["task"],
                run=int(r["run"]) if r["run"] else 1,
                session=r["session"],
                tr=float(r["tr"]),
                splits=run_splits(r, DESIGN),
                design=DESIGN,
                stimuli=STIM_SPEC,
            )
        )
    return runs


def stimulus_files(wildcards):
    """The image files one subject's trials show: inputs of the rules that read them, so
    that editing one image reruns what used it, and adding an unrelated file nothing."""
    if IMPORTED:
        return expand(STIMULI, subject=wildcards.subject)
    if SIMULATED:
        return STIMULI  # written by the rule simulate_stimuli
    mine = TRIALS[TRIALS["subject"] == wildcards.subject]
    table = [str(STIMULI / "stimuli.tsv")] if (STIMULI / "stimuli.tsv").is_file() else []
    return sorted(str(STIMULI / f) for f in set(mine["stim_file"])) + table


def stimuli_folder(wildcards):
    """The stimuli folder of one subject (the imported ones are per subject)."""
    return str(STIMULI).format(subject=wildcards.subject) if IMPORTED else str(STIMULI)


def out_file(datatype, suffix, extension="", **entities):
    """A file of the workflow's own derivatives (``results/derivatives/fmrirecon``), named
    from its entities by fmrirecon.paths.bids_path (Snakemake wildcards allowed):
    ``out_file("recon", "model", ".pkl", subject="{subject}", desc="{method}")``."""
    return bids_path(OUT, datatype, suffix, extension, **entities)


def job_file(folder, rule, extension, **entities):
    """A job's log or benchmark file, ``<folder>/<rule>/<its entities><extension>``."""
    return folder / rule / bids_name("", extension, **entities)


def denoised_maps():
    """The per-voxel maps of glm.method denoised (fmrirecon.stages.DENOISED_MAPS) as
    outputs of the glm rule."""
    files = {}
    for key, name in DENOISED_MAPS.items():  # "<what>_<suffix>.<extension>" after desc-denoised
        what, rest = name.split("_", 1)
        suffix, extension = rest.split(".", 1)
        files[key] = out_file("func", suffix, f".{extension}", subject="{subject}", desc=f"denoised{what}")
    return files


def betas_files(subject):
    """The single-trial betas of one subject (from the GLM, or imported)."""
    label = "imported" if IMPORTED else config["glm"]["method"]
    return {
        "betas": str(out_file("func", "betas", ".h5", subject=subject, desc=label)),
        "trials": str(out_file("func", "trials", ".tsv", subject=subject, desc=label)),
    }


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
