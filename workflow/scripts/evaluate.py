"""Snakemake script: metrics of one reconstruction."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.stages import evaluate

evaluate(snakemake.input.recon, snakemake.input.extra, snakemake.params.settings, snakemake.params.seed,
         snakemake.output.metrics, snakemake.output.summary, snakemake.input.trials,
         snakemake.params.stimuli, snakemake.params.images)
