"""Snakemake script: write the simulated study's stimulus images and stimuli.tsv."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.simulate import write_stimuli

write_stimuli(snakemake.params.sim, snakemake.params.bids_dir)
