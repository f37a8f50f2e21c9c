"""Snakemake script: train the small feature network on a labelled image folder."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.features import train_feature_network

# the stimuli folder with train_network.exclude_stimuli (an empty input otherwise)
stimuli = snakemake.input.stimuli if snakemake.input.get("stimuli") else None

train_feature_network(snakemake.input.folder, snakemake.params.settings,
                      snakemake.params.seed, snakemake.output.weights, stimuli_dir=stimuli)
