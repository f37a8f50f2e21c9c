"""Snakemake script: one NSD subject's betas, trials and stimuli."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.nsd import import_nsd

import_nsd(snakemake.params.spec, int(snakemake.wildcards.subject), snakemake.output.betas,
           snakemake.output.trials, snakemake.output.stimuli)
