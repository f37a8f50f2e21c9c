"""Snakemake script: the voxels the decoders use."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.stages import select_voxels

select_voxels(snakemake.input.betas, snakemake.input.trials, snakemake.params.settings,
              snakemake.output[0])
