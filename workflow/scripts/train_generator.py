"""Snakemake script: train the VAE-GAN generator of the latent method."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.generative import train_generator

train_generator(snakemake.input.stimuli, snakemake.input.folders, snakemake.params.settings,
                snakemake.params.images, snakemake.params.seed, snakemake.output.model,
                snakemake.output.curves)
