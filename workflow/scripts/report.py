"""Snakemake script: the aggregated report."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.stages import report

betas = dict(zip(snakemake.params.subjects, snakemake.input.betas))
report(snakemake.input.summaries, snakemake.input.grids, snakemake.input.histories,
       snakemake.params.config, snakemake.output.html, snakemake.output.metrics,
       betas if snakemake.params.step_reliability else None, snakemake.input.classifications,
       {"generator (VAE-GAN)": p for p in snakemake.input.generator_curves},
       benchmark_dir=snakemake.params.benchmarks)
