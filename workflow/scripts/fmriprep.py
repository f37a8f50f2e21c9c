"""Snakemake script: fMRIPrep on one subject, through fmriprep-docker or Apptainer."""

import subprocess
from pathlib import Path

from fmrirecon.logs import log_to

log = log_to(snakemake.log[0])

from fmrirecon.preprocess.fmriprep import fmriprep_command

p = snakemake.params
cmd = fmriprep_command(p.settings, p.bids_dir, p.out_dir, p.work_dir, snakemake.wildcards.subject,
                       space=p.space, nthreads=snakemake.threads, mem_mb=snakemake.resources.mem_mb)
# Apptainer refuses to bind missing folders.
for folder in (p.out_dir, p.work_dir):
    Path(folder).mkdir(parents=True, exist_ok=True)
log.info("running: %s", subprocess.list2cmdline(cmd))
with open(snakemake.log[0], "a") as out:
    subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=True)
