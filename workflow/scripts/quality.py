"""Snakemake script: the data-quality summary and figures of one subject."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.stages import quality

quality(snakemake.input.betas, snakemake.input.trials, snakemake.input.voxels, snakemake.output.summary,
        {key: getattr(snakemake.output, key) for key in snakemake.params.figures},
        snakemake.params.runs, snakemake.params.glm, snakemake.params.train_tasks)
