# Deep-network features for deep image reconstruction ("dir" methods).
#
# No pretrained weights can be downloaded offline: with `train_network` in a dir
# method's settings, e.g.
#   train_network: {folder: ../shared/data/images/cifar10_test, column: class_name, epochs: 10}
# the small CNN is first trained locally and its checkpoint becomes the method's
# `weights`. Otherwise `weights` is a checkpoint path, a torchvision weights name, or
# null (seeded random initialisation); the report says which.

FEATURES = OUT / "features"
# The dir entries of the config (an entry may be an alias: method: dir).
DIR_METHODS = [m for m in METHODS if method_settings(m).get("method", m) == "dir"]


def _trained_network(settings):
    """The checkpoint a dir entry trains, as {parameter: path}, or {}."""
    if not settings.get("train_network"):
        return {}
    return {"weights": FEATURES / f"{settings.get('network', 'smallconv')}_weights.pt"}


METHOD_FILES.setdefault("dir", []).append(_trained_network)


def _network_training(wildcards):
    """train_network of the first dir entry training this network."""
    for m in DIR_METHODS:
        settings = method_settings(m)
        if settings.get("train_network") and settings.get("network", "smallconv") == wildcards.network:
            return settings["train_network"]
    raise ValueError(f"config['methods']: no dir method trains network {wildcards.network!r}")


rule train_feature_network:
    input:
        folder=lambda wc: _network_training(wc)["folder"],
    output:
        weights=FEATURES / "{network}_weights.pt",
        provenance=FEATURES / "{network}_weights.pt.json",
    params:
        settings=_network_training,
        seed=config["seed"],
    threads: 2
    resources:
        gpu=1,
    log:
        LOGS / "train_feature_network" / "{network}.log",
    conda:
        "../../envs/fmrirecon.yaml"
    script:
        "../scripts/train_feature_network.py"


rule extract_features:
    input:
        unpack(lambda wc: method_files(wc)),
        stimuli=STIMULI,
    output:
        FEATURES / "stimuli_desc-{method}_features.h5",
    params:
        settings=lambda wc, input: {
            k: v for k, v in method_parameters(wc, input).items() if k not in ("method", "train_network")
        },
        images=config["images"],
    threads: 2
    resources:
        gpu=1,
    log:
        LOGS / "extract_features" / "stimuli_desc-{method}.log",
    conda:
        "../../envs/fmrirecon.yaml"
    script:
        "../scripts/extract_features.py"
