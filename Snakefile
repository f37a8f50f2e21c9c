# fmrirecon: BIDS raw data -> preprocessing -> single-trial betas -> decoders ->
# reconstructions -> evaluation -> one report. See README.md and docs/formats.md.

import sys
from pathlib import Path

# The built-in default, unless a config is named on the command line (--configfile):
# then that file alone, over the schema's defaults, is the whole configuration.
if not workflow.config_settings.configfiles:
    if not Path("config.yaml").is_file():
        sys.exit(
            f"Error: no config: {Path.cwd() / 'config.yaml'} not found; run from the repository "
            "(the built-in demo) or name your study's config with --configfile my_study.yaml "
            "(README, 'Your own data')"
        )

    configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/glm.smk"
include: "workflow/rules/decode.smk"
include: "workflow/rules/reconstruct.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/classify.smk"
include: "workflow/rules/unpaired.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/generator.smk"
include: "workflow/rules/quality.smk"
include: "workflow/rules/records.smk"
include: "workflow/rules/report.smk"


report: "workflow/report/workflow.rst"


localrules:
    all,
    derivatives_description,
    report,


rule all:
    default_target: True
    input:
        rules.derivatives_description.output,
        REPORT / "index.html",
