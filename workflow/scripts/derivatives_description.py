"""Snakemake script: dataset_description.json of the derivatives."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.stages import derivatives_description

for kind, path in snakemake.output.items():
    derivatives_description(path, kind)
