"""Snakemake script: the aggregated report."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.stages import report

p = snakemake.params
betas = dict(zip(p.subjects, snakemake.input.betas))
report(p.evaluations, p.config, snakemake.output.html, snakemake.output.metrics, field=p.field,
       quality=p.quality, curves=p.curves, classifications=p.classifications, validation=p.validation,
       betas_paths=betas if p.step_reliability else None, benchmark_dir=p.benchmarks,
       what_ran=p.what_ran, defaults=p.defaults, run_info=p.run_info, repository=p.repository)
