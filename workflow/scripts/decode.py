"""Snakemake script: fit one reconstruction method on one subject."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.stages import fit_method

fit_method(snakemake.input.betas, snakemake.input.trials, snakemake.input.voxels,
           snakemake.params.stimuli, snakemake.wildcards.method, snakemake.params.settings,
           snakemake.params.images, snakemake.params.seed, snakemake.output.model,
           snakemake.output.history, snakemake.params.work_dir, snakemake.output.validation,
           snakemake.params.unpaired_splits)
