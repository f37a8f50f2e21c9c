"""Snakemake script: ready-made single-trial betas into the pipeline's format."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.importers import import_betas

import_betas(snakemake.params.spec, snakemake.output.betas, snakemake.output.trials,
             snakemake.output.stimuli)
