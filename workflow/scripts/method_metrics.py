"""Snakemake script: one fitted method's own metrics of one reconstruction file."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.stages import method_metrics

method_metrics(snakemake.input.model, snakemake.input.recon, snakemake.input.betas,
               snakemake.input.trials, snakemake.input.voxels, snakemake.params.stimuli,
               snakemake.wildcards.split, snakemake.params.images, snakemake.params.evaluation,
               snakemake.params.seed, snakemake.output.extra)
