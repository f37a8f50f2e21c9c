# Unpaired data the methods learn from: procedural image sets (config unpaired.images),
# written once and read by any method setting or generator.train_folder that names
# them as unpaired:<name>.

from fmrirecon.methods import METHODS as _IMPLEMENTATIONS

UNPAIRED = RESULTS / "unpaired"
UNPAIRED_PREFIX = "unpaired:"


def unpaired_folder(value):
    """The folder a setting names: unpaired:<name> is a procedural set, else a path."""
    if isinstance(value, str) and value.startswith(UNPAIRED_PREFIX):
        name = value[len(UNPAIRED_PREFIX):]
        if name not in config["unpaired"]["images"]:
            raise ValueError(
                f"{value}: no set {name!r} in config['unpaired']['images'] "
                f"(sets: {', '.join(sorted(config['unpaired']['images'])) or 'none'})"
            )
        return UNPAIRED / name
    return value


def unpaired_settings(settings):
    """Method settings naming a procedural set (unpaired:<name>), as {key: folder}."""
    return {key: unpaired_folder(value) for key, value in settings.items()
            if isinstance(value, str) and value.startswith(UNPAIRED_PREFIX)}


# Any implementation may read a procedural set in any of its folder settings.
for _implementation in _IMPLEMENTATIONS:
    METHOD_FILES.setdefault(_implementation, []).append(unpaired_settings)


rule procedural_images:
    output:
        directory(UNPAIRED / "{name}"),
    params:
        spec=lambda wc: config["unpaired"]["images"][wc.name],
        size=config["images"]["size"],
    log:
        LOGS / "procedural_images" / "{name}.log",
    benchmark:
        BENCHMARKS / "procedural_images" / "{name}.tsv",
    conda:
        "../../envs/fmri.yaml"
    script:
        "../scripts/procedural_images.py"
