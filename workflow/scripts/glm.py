"""Snakemake script: single-trial betas of one subject."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.stages import DENOISED_MAPS, glm

glm(snakemake.params.runs, snakemake.params.splits, snakemake.params.settings,
    snakemake.output.betas, snakemake.output.trials, snakemake.output.reliability,
    {key: path for key, path in snakemake.output.items() if key in DENOISED_MAPS})
