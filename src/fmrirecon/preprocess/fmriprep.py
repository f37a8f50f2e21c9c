"""Command lines that run fMRIPrep on one subject, in Docker or Apptainer.

Only the command lines are built here (lists of str for :func:`subprocess.run`); the
workflow runs them. Paths are made absolute because containers see only bind mounts.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["FMRIPREP_VERSION", "fmriprep_command", "fmriprep_docker_command", "fmriprep_apptainer_command",
           "fmriprep_container_command", "container_image", "unbound_paths"]

FMRIPREP_VERSION = "24.1.1"

# Mount points inside the Apptainer container (the fmriprep-docker wrapper uses the
# same /data, /out and license locations for Docker).
_BIDS, _OUT, _WORK = "/data", "/out", "/work"
_LICENSE = "/opt/freesurfer/license.txt"
_TEMPLATEFLOW = "/home/fmriprep/.cache/templateflow"


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
    except ValueError:
        return False
    return True


def _check_common(bids_dir, out_dir, work_dir, subject, fs_license, output_spaces,
                  nthreads, mem_mb, require_dataset=True):
    bids_dir, out_dir, work_dir, fs_license = (
        Path(p).expanduser().absolute() for p in (bids_dir, out_dir, work_dir, fs_license)
    )
    if require_dataset and not (bids_dir / "dataset_description.json").is_file():
        raise ValueError(f"{bids_dir}: not a BIDS dataset (no dataset_description.json)")
    subject = str(subject).removeprefix("sub-")
    if not subject.isalnum():
        raise ValueError(f"subject label must be alphanumeric, got {subject!r}")
    if require_dataset and not (bids_dir / f"sub-{subject}").is_dir():
        raise ValueError(f"{bids_dir}: no folder sub-{subject}")
    if not fs_license.is_file():
        raise ValueError(
            f"{fs_license}: FreeSurfer license file not found (fMRIPrep needs one even "
            "without surface reconstruction; get it at "
            "https://surfer.nmr.mgh.harvard.edu/registration.html)"
        )
    # fMRIPrep (and its wrapper) refuse a working directory inside the input dataset
    if _is_within(work_dir, bids_dir) or _is_within(out_dir, bids_dir):
        raise ValueError(f"{work_dir} / {out_dir}: work and output directories must be outside {bids_dir}")
    if isinstance(output_spaces, str):
        output_spaces = (output_spaces,)
    output_spaces = [str(s) for s in output_spaces]
    if int(nthreads) < 1:
        raise ValueError(f"nthreads must be >= 1, got {nthreads}")
    if int(mem_mb) < 1:
        raise ValueError(f"mem_mb must be >= 1, got {mem_mb}")
    return bids_dir, out_dir, work_dir, subject, fs_license, output_spaces


def _fmriprep_options(subject, fs_license, work_dir, nthreads, mem_mb, spaces, extra_args) -> list[str]:
    """fMRIPrep's options after ``<bids> <out> participant``, as every engine passes them."""
    options = [
        "--participant-label", subject,
        "--fs-license-file", str(fs_license),
        "-w", str(work_dir),
        "--nthreads", str(int(nthreads)),
        "--mem_mb", str(int(mem_mb)),
        "--skip-bids-validation",
    ]
    if spaces:
        options += ["--output-spaces", *spaces]
    return options + [str(a) for a in extra_args]


def fmriprep_docker_command(
    bids_dir: str | Path,
    out_dir: str | Path,
    work_dir: str | Path,
    subject: str,
    fs_license: str | Path,
    output_spaces: tuple[str, ...] | list[str] = ("func",),
    nthreads: int = 4,
    mem_mb: int = 16000,
    extra_args: tuple[str, ...] | list[str] = (),
    image: str = f"nipreps/fmriprep:{FMRIPREP_VERSION}",
) -> list[str]:
    """Command line running fMRIPrep on one subject through ``fmriprep-docker``.

    The ``fmriprep-docker`` wrapper (``pip install fmriprep-docker``) mounts the
    directories and the license file into the container itself.

    Parameters
    ----------
    bids_dir, out_dir, work_dir : str or Path
        Raw BIDS dataset, fMRIPrep output folder and working directory (outside
        ``bids_dir``).
    subject : str
        Participant label, with or without ``sub-``.
    fs_license : str or Path
        FreeSurfer license file (must exist).
    output_spaces : sequence of str, default=("func",)
        fMRIPrep ``--output-spaces`` (``func`` = the native BOLD grid).
    nthreads : int, default=4
        ``--nthreads``.
    mem_mb : int, default=16000
        ``--mem_mb`` (this spelling also stops the wrapper's interactive
        low-memory prompt).
    extra_args : sequence of str, default=()
        Further fMRIPrep options, appended verbatim (e.g. ``("--fs-no-reconall",)``).
    image : str
        Docker image, passed with ``-i``.

    Returns
    -------
    list of str
    """
    bids_dir, out_dir, work_dir, subject, fs_license, spaces = _check_common(
        bids_dir, out_dir, work_dir, subject, fs_license, output_spaces, nthreads, mem_mb
    )
    cmd = [
        "fmriprep-docker", str(bids_dir), str(out_dir), "participant",
        "-i", image,
        # workflow jobs have no terminal; docker -it would fail
        "--no-tty",
    ]
    return cmd + _fmriprep_options(subject, fs_license, work_dir, nthreads, mem_mb, spaces, extra_args)


def fmriprep_apptainer_command(
    image_path: str | Path,
    bids_dir: str | Path,
    out_dir: str | Path,
    work_dir: str | Path,
    subject: str,
    fs_license: str | Path,
    templateflow_home: str | Path,
    output_spaces: tuple[str, ...] | list[str] = ("func",),
    nthreads: int = 4,
    mem_mb: int = 16000,
    extra_args: tuple[str, ...] | list[str] = (),
    bind: tuple[str, ...] | list[str] = (),
) -> list[str]:
    """Command line running fMRIPrep on one subject in an Apptainer image.

    Runs ``apptainer run --cleanenv`` with bind mounts for the BIDS dataset
    (read-only) at ``/data``, the output at ``/out``, the working directory at
    ``/work``, the license file and the TemplateFlow cache; ``TEMPLATEFLOW_HOME``
    reaches the container through ``APPTAINERENV_TEMPLATEFLOW_HOME`` (set with
    ``env``, since ``--cleanenv`` drops the host environment).

    Parameters
    ----------
    image_path : str or Path
        The fMRIPrep ``.sif`` image (must exist).
    bids_dir, out_dir, work_dir, subject, fs_license, output_spaces, nthreads, mem_mb, extra_args
        As in :func:`fmriprep_docker_command`.
    templateflow_home : str or Path
        Host TemplateFlow cache (must exist; pre-fetch templates on clusters whose
        compute nodes are offline).
    bind : sequence of str, default=()
        Further ``-B`` specifications (``src[:dest[:opts]]``).

    Notes
    -----
    Apptainer refuses to bind missing folders: create ``out_dir`` and ``work_dir``
    before running the command.

    Returns
    -------
    list of str
    """
    image_path = Path(image_path).expanduser().absolute()
    if not image_path.is_file():
        raise ValueError(f"{image_path}: Apptainer image not found")
    templateflow_home = Path(templateflow_home).expanduser().absolute()
    if not templateflow_home.is_dir():
        raise ValueError(f"{templateflow_home}: TemplateFlow home folder not found")
    bids_dir, out_dir, work_dir, subject, fs_license, spaces = _check_common(
        bids_dir, out_dir, work_dir, subject, fs_license, output_spaces, nthreads, mem_mb
    )
    binds = [
        f"{bids_dir}:{_BIDS}:ro",
        f"{out_dir}:{_OUT}",
        f"{work_dir}:{_WORK}",
        f"{fs_license}:{_LICENSE}:ro",
        f"{templateflow_home}:{_TEMPLATEFLOW}",
        *[str(b) for b in bind],
    ]
    cmd = ["env", f"APPTAINERENV_TEMPLATEFLOW_HOME={_TEMPLATEFLOW}", "apptainer", "run", "--cleanenv"]
    for spec in binds:
        cmd += ["-B", spec]
    cmd += [str(image_path), _BIDS, _OUT, "participant"]
    return cmd + _fmriprep_options(subject, _LICENSE, _WORK, nthreads, mem_mb, spaces, extra_args)


def fmriprep_container_command(
    bids_dir: str | Path,
    out_dir: str | Path,
    work_dir: str | Path,
    subject: str,
    fs_license: str | Path,
    output_spaces: tuple[str, ...] | list[str] = ("func",),
    nthreads: int = 4,
    mem_mb: int = 16000,
    extra_args: tuple[str, ...] | list[str] = (),
    templateflow_home: str | Path | None = None,
    require_dataset: bool = True,
) -> list[str]:
    """fMRIPrep's own command line, for a job that already runs inside the fMRIPrep image.

    This is the form of a Snakemake rule with a ``container:`` directive run with
    ``--software-deployment-method apptainer``: Snakemake starts the container and the
    command sees the host paths, provided they are bound (see :func:`unbound_paths`).

    Parameters
    ----------
    bids_dir, out_dir, work_dir, subject, fs_license, output_spaces, nthreads, mem_mb, extra_args
        As in :func:`fmriprep_docker_command`.
    templateflow_home : str or Path, optional
        Host TemplateFlow cache, passed as ``TEMPLATEFLOW_HOME`` (compute nodes are often
        offline: fetch the templates there beforehand).
    require_dataset : bool, default=True
        Check that ``bids_dir`` holds the subject. The workflow builds this command
        before any job runs, when a dataset the workflow simulates does not exist yet.

    Returns
    -------
    list of str
    """
    bids_dir, out_dir, work_dir, subject, fs_license, spaces = _check_common(
        bids_dir, out_dir, work_dir, subject, fs_license, output_spaces, nthreads, mem_mb,
        require_dataset,
    )
    cmd = []
    if templateflow_home:
        cmd = ["env", f"TEMPLATEFLOW_HOME={Path(templateflow_home).expanduser().absolute()}"]
    cmd += ["fmriprep", str(bids_dir), str(out_dir), "participant"]
    return cmd + _fmriprep_options(subject, fs_license, work_dir, nthreads, mem_mb, spaces, extra_args)


def container_image(settings: dict) -> str:
    """The image URI of the ``container:`` directive, from ``preprocess.fmriprep.image``
    (a Docker Hub name gets ``docker://``; a ``.sif`` path or a URI is kept)."""
    image = str(settings.get("image") or f"nipreps/fmriprep:{FMRIPREP_VERSION}")
    if "://" in image or image.endswith((".sif", ".simg")):
        return image
    return f"docker://{image}"


def _bind_sources(apptainer_args: str) -> list[Path]:
    import shlex

    words, sources = shlex.split(apptainer_args or ""), []
    for i, word in enumerate(words):
        if word in ("-B", "--bind", "--mount") and i + 1 < len(words):
            value = words[i + 1]
        elif word.startswith("--bind="):
            value = word.split("=", 1)[1]
        else:
            continue
        for spec in value.split(","):
            parts = spec.split(":")
            # only binds that keep the host path inside the container count
            if len(parts) == 1 or parts[1] == parts[0]:
                sources.append(Path(parts[0]).expanduser().absolute())
    return sources


def unbound_paths(paths, apptainer_args: str, cwd: str | Path) -> list[Path]:
    """Host paths a containerised job needs that Apptainer will not see.

    Snakemake runs container jobs with ``--home <cwd>``, so the working directory is
    visible; any other path must be bound at the same location through
    ``--apptainer-args "--bind <path>"``.

    Parameters
    ----------
    paths : iterable of str or Path
        What the job reads or writes.
    apptainer_args : str
        Snakemake's ``--apptainer-args``.
    cwd : str or Path
        Snakemake's working directory.

    Returns
    -------
    list of Path
        The paths neither under ``cwd`` nor under a same-path bind, in input order.
    """
    roots = [Path(cwd).absolute(), *_bind_sources(apptainer_args)]
    missing = []
    for path in paths:
        path = Path(path).expanduser().absolute()
        if not any(_is_within(path, root) for root in roots):
            missing.append(path)
    return missing


def fmriprep_command(
    settings: dict,
    bids_dir: str | Path,
    out_dir: str | Path,
    work_dir: str | Path,
    subject: str,
    space: str | None = None,
    nthreads: int | None = None,
    mem_mb: int | None = None,
    require_dataset: bool = True,
) -> list[str]:
    """The command line of the workflow's ``fmriprep`` rule, from ``preprocess.fmriprep``.

    Parameters
    ----------
    settings : dict
        The config section ``preprocess.fmriprep``: ``engine`` (``docker`` runs the
        ``fmriprep-docker`` wrapper, ``apptainer`` runs a ``.sif`` image,
        ``container`` is fMRIPrep's own command for a job inside the image), ``image``
        (Docker image, or the ``.sif`` file for Apptainer), ``fs_license``,
        ``templateflow_home`` (Apptainer; default ``$TEMPLATEFLOW_HOME``),
        ``output_spaces``, ``nthreads``, ``mem_mb``, ``extra_args``.
    bids_dir, out_dir, work_dir, subject
        As in :func:`fmriprep_docker_command`.
    space : str or None
        ``preprocess.space``, the space the GLM reads; the output spaces when
        ``output_spaces`` is empty (None: the native BOLD grid, ``func``).
    nthreads, mem_mb : int, optional
        What the job was given (on a cluster, what SLURM granted); default the settings'.
    require_dataset : bool, default=True
        See :func:`fmriprep_container_command` (engine ``container`` only).

    Returns
    -------
    list of str
    """
    import os

    engine = settings.get("engine", "docker")
    if not settings.get("fs_license"):
        raise ValueError("config['preprocess']['fmriprep']['fs_license']: required (the FreeSurfer license file)")
    common = dict(
        bids_dir=bids_dir, out_dir=out_dir, work_dir=work_dir, subject=subject,
        fs_license=settings["fs_license"],
        # fMRIPrep writes the space the GLM is going to read
        output_spaces=list(settings.get("output_spaces") or [space or "func"]),
        nthreads=int(nthreads or settings.get("nthreads", 4)),
        mem_mb=int(mem_mb or settings.get("mem_mb", 16000)),
        extra_args=list(settings.get("extra_args") or []),
    )
    image = str(settings.get("image") or f"nipreps/fmriprep:{FMRIPREP_VERSION}")
    if engine == "container":
        return fmriprep_container_command(
            **common, templateflow_home=settings.get("templateflow_home") or None,
            require_dataset=require_dataset)
    if engine == "docker":
        return fmriprep_docker_command(**common, image=image)
    if engine == "apptainer":
        if not image.endswith((".sif", ".simg")):
            raise ValueError(
                f"config['preprocess']['fmriprep']['image']: {image!r} is not an Apptainer image; "
                f"build one (apptainer build fmriprep.sif docker://{image.removeprefix('docker://')}) "
                "and give its path"
            )
        templateflow = settings.get("templateflow_home") or os.environ.get("TEMPLATEFLOW_HOME")
        if not templateflow:
            raise ValueError(
                "config['preprocess']['fmriprep']['templateflow_home']: required with apptainer "
                "(or set TEMPLATEFLOW_HOME); compute nodes are often offline, so fetch the templates "
                "there beforehand"
            )
        return fmriprep_apptainer_command(image, templateflow_home=templateflow, **common)
    raise ValueError(f"config['preprocess']['fmriprep']['engine']: {engine!r} is not docker, apptainer or container")
