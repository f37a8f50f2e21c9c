"""Snakemake script: train the small feature network on a labelled image folder."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.features import train_feature_network

train_feature_network(snakemake.input.folder, snakemake.params.settings,
                      snakemake.params.seed, snakemake.output.weights)
