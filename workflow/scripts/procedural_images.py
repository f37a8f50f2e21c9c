"""Snakemake script: write one procedural unpaired image set."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.procedural import write_image_set

write_image_set(snakemake.params.spec, snakemake.params.size, snakemake.output[0])
