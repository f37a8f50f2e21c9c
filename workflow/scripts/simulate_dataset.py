"""Snakemake script: write the simulated study's dataset-level BIDS files."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.simulate import write_dataset_files

write_dataset_files(snakemake.params.sim, snakemake.params.bids_dir)
