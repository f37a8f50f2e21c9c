"""Snakemake script: the field's metric table of every method of one subject's split."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.stages import field_metrics

field_metrics(dict(zip(snakemake.params.methods, snakemake.input.recons)), snakemake.input.trials,
              snakemake.params.stimuli, snakemake.params.images, snakemake.params.settings,
              snakemake.params.n_boot, snakemake.params.seed, snakemake.output.metrics, snakemake.output.summary)
