"""Snakemake script: train the simulated brain's network and compute its stimulus features."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.simulate.higher import brain_features

sim = snakemake.params.sim
brain_features(snakemake.input.stimuli, sim["higher_area"], sim["seed"], sim["image_size"],
               sim["channels"], snakemake.output.weights, snakemake.output.features)
