"""Snakemake script: light preprocessing of one run."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.preprocess.light import preprocess_run

preprocess_run(snakemake.input.bold, snakemake.input.reference, dict(snakemake.output.items()))
