"""Snakemake script: category decoding of one subject, leaving runs out."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.stages import classify

classify(snakemake.input.betas, snakemake.input.trials, snakemake.input.voxels, snakemake.params.stimuli,
         snakemake.params.settings, snakemake.params.seed, snakemake.params.n_boot,
         snakemake.output.per_item, snakemake.output.summary)
