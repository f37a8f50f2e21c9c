"""Snakemake script: simulate one subject's BIDS runs and ground truth."""

from fmrirecon.logs import log_to

log_to(snakemake.log[0])

from fmrirecon.simulate import simulate_subject

# with simulate.higher_area, the brain network's features of the stimuli
simulate_subject(snakemake.params.sim, snakemake.params.bids_dir, snakemake.wildcards.subject,
                 snakemake.output.truth, brain_features=snakemake.input.get("brain_features"))
