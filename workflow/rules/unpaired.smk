# Unpaired data the methods learn from: procedural image sets (config unpaired.images),
# written once and read by any method setting or generator.train_folder that names
# them as unpaired:<name> (fmrirecon.procedural.resolve_folder).

from fmrirecon.methods import METHODS as IMPLEMENTATIONS, get_method
from fmrirecon.procedural import resolve_folder

UNPAIRED = RESULTS / "unpaired"
UNPAIRED_SETS = config["unpaired"]["images"]


rule procedural_images:
    output:
        directory(UNPAIRED / "{name}"),
    log:
        LOGS / "procedural_images" / "{name}.log",
    benchmark:
        BENCHMARKS / "procedural_images" / "{name}.tsv"
    conda:
        "../../envs/fmri.yaml"
    params:
        spec=lambda wc: UNPAIRED_SETS[wc.name],
        size=config["images"]["size"],
    script:
        "../scripts/procedural_images.py"
