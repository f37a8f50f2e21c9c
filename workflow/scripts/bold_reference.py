"""Snakemake script: the subject's realignment reference (light preprocessing)."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.preprocess.light import write_reference

write_reference(snakemake.input.bold, snakemake.output[0])
