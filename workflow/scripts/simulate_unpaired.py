"""Snakemake script: write procedural images the simulated study never shows."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.simulate import write_unpaired

write_unpaired(snakemake.params.sim, snakemake.output[0])
