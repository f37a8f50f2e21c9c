"""Snakemake script: deep-network features of every stimulus image."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.features import extract_stimulus_features

extract_stimulus_features(snakemake.input.stimuli, snakemake.params.settings,
                          snakemake.params.images, snakemake.output[0])
