# Deep-network features for deep image reconstruction ("dir" methods) and the
# perceptual loss and semantic read-outs of "selfsup" methods.
#
# No pretrained weights can be downloaded offline: with `train_network` in a dir or
# selfsup method's settings, e.g.
#   train_network: {folder: ../shared/data/images/cifar10_test, column: class_name, epochs: 10}
# the small CNN is first trained locally and its checkpoint becomes the method's
# `weights` (dir) or `perceptual_weights` (selfsup); methods training the same network
# share one checkpoint. Otherwise those keys are a checkpoint path, a torchvision
# weights name, or null (seeded random initialisation); the report says which.

from fmrirecon.features import network_training, trained_network_file

FEATURES = OUT / "features"
# The dir entries of the config (an entry may be an alias: method: dir).
DIR_METHODS = [m for m in METHODS if implementation(m, method_settings(m)) == "dir"]


METHOD_FILES.setdefault("dir", []).append(lambda settings: trained_network_file(settings, FEATURES))
METHOD_FILES.setdefault("selfsup", []).append(
    lambda settings: trained_network_file(settings, FEATURES, "selfsup")
)


def _network_training(network):
    """The train_network settings of ``network``, its folder resolved (unpaired:<name>)."""
    settings = dict(network_training(config["methods"], network))
    settings["folder"] = str(unpaired_folder(settings["folder"]))
    return settings


rule train_feature_network:
    input:
        folder=lambda wc: _network_training(wc.network)["folder"],
        stimuli=lambda wc: excluded_stimuli(wc.network),
    output:
        weights=FEATURES / "{network}_weights.pt",
        provenance=FEATURES / "{network}_weights.pt.json",
    params:
        settings=lambda wc: _network_training(wc.network),
        seed=config["seed"],
    threads: 2
    resources:
        gpu=1,
    log:
        LOGS / "train_feature_network" / "{network}.log",
    benchmark:
        BENCHMARKS / "train_feature_network" / "{network}.tsv",
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/train_feature_network.py"


rule extract_features:
    input:
        unpack(lambda wc: method_files(wc)),
        stimuli=STIMULI,
    output:
        FEATURES / "stimuli_desc-{method}_features.h5",
    params:
        settings=lambda wc: {
            k: v for k, v in method_parameters(wc).items() if k not in ("method", "train_network")
        },
        images=config["images"],
    threads: 2
    resources:
        gpu=1,
    log:
        LOGS / "extract_features" / "stimuli_desc-{method}.log",
    benchmark:
        BENCHMARKS / "extract_features" / "stimuli_desc-{method}.tsv",
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/extract_features.py"
