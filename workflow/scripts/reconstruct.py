"""Snakemake script: reconstruct one split with one fitted method."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.stages import reconstruct

reconstruct(snakemake.input.model, snakemake.input.betas, snakemake.input.trials,
            snakemake.input.voxels, snakemake.params.stimuli, snakemake.wildcards.split,
            snakemake.params.images, snakemake.params.seed, snakemake.output.recon,
            snakemake.output.grid)
