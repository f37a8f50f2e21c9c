"""Snakemake script: the aggregated report."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.stages import report

report(snakemake.input.summaries, snakemake.input.grids, snakemake.input.histories,
       snakemake.params.config,
       snakemake.output.html, snakemake.output.metrics)
