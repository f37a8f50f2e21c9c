"""Snakemake script: train the simulated brain's network and compute its stimulus features."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.simulate.higher import brain_features

p = snakemake.params
brain_features(snakemake.input.stimuli, p.higher, p.seed, p.image_size, p.channels,
               snakemake.output.weights, snakemake.output.features)
