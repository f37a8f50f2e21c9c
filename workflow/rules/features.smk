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

from fmrirecon.methods import network_training

FEATURES = OUT / "features"


rule train_feature_network:
    input:
        folder=lambda wc: resolve_folder(
            network_training(config["methods"], wc.network)["folder"], UNPAIRED_SETS, UNPAIRED
        ),
        stimuli=lambda wc: excluded_stimuli(wc.network),
    output:
        weights=FEATURES / "{network}_weights.pt",
        provenance=FEATURES / "{network}_weights.pt.json",
    log:
        LOGS / "train_feature_network" / "{network}.log",
    benchmark:
        BENCHMARKS / "train_feature_network" / "{network}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        settings=lambda wc: {
            **network_training(config["methods"], wc.network),
            "folder": str(
                resolve_folder(network_training(config["methods"], wc.network)["folder"], UNPAIRED_SETS, UNPAIRED)
            ),
        },
        seed=config["seed"],
    script:
        "../scripts/train_feature_network.py"
