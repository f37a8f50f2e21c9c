"""The networks features come from: smallconv or a torchvision classifier, and the
frozen, differentiable :class:`FeatureExtractor` of named layers."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Layers of the networks used in the reconstruction literature: post-ReLU outputs of
# the conv layers and the fully connected layers (Shen et al. 2019 use VGG19 conv1_1..fc8).
DEFAULT_LAYERS = {
    "smallconv": ["relu1", "relu2", "relu3", "relu4", "fc5"],
    "alexnet": ["features.1", "features.4", "features.7", "features.9", "features.11",
                "classifier.2", "classifier.5", "classifier.6"],
    "vgg16": ["features.3", "features.8", "features.15", "features.22", "features.29",
              "classifier.1", "classifier.4", "classifier.6"],
    # conv1_1, conv1_2, conv2_1, ..., conv5_4, fc6, fc7, fc8 (post-ReLU)
    "vgg19": ["features.1", "features.3", "features.6", "features.8", "features.11",
              "features.13", "features.15", "features.17", "features.20", "features.22",
              "features.24", "features.26", "features.29", "features.31", "features.33",
              "features.35", "classifier.1", "classifier.4", "classifier.6"],
    "resnet18": ["relu", "layer1", "layer2", "layer3", "layer4", "fc"],
    "resnet50": ["relu", "layer1", "layer2", "layer3", "layer4", "fc"],
}
# Input size the torchvision ImageNet classifiers were trained at.
TORCHVISION_INPUT_SIZE = 224
SMALLCONV_INPUT_SIZE = 32


class SmallConv(nn.Module):
    """A small CNN (3 conv blocks, 2 fully connected layers) for CPU demos.

    Its node names (``conv1``, ``relu1``, ..., ``relu4``, ``fc5``) are what
    :class:`FeatureExtractor` takes as layers. The adaptive pooling before the fully
    connected layers lets it take any input size; it is trained at 32 x 32.

    Parameters
    ----------
    num_classes : int
        Units of the last layer.
    width : int
        Channels of the first conv layer (doubled in each later block).
    """

    def __init__(self, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(2 * width, 4 * width, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.pool3 = nn.AdaptiveAvgPool2d(4)
        self.fc4 = nn.Linear(4 * width * 16, 128)
        self.relu4 = nn.ReLU()
        self.fc5 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.pool3(self.relu3(self.conv3(x)))
        x = self.relu4(self.fc4(torch.flatten(x, 1)))
        return self.fc5(x)


def _read_checkpoint(path: Path) -> tuple[dict, dict]:
    """The state_dict at ``path`` and the metadata of its sidecar ``<path>.json``."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: network checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for bad files
        raise ValueError(f"{path}: not a torch state_dict ({err})") from err
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state_dict, got {type(state).__name__}")
    sidecar = Path(str(path) + ".json")
    meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    return state, meta


def build_network(network: str, weights: str | None = None, seed: int = 0,
                  num_classes: int | None = None) -> tuple[nn.Module, str]:
    """A network and a sentence saying where its weights came from.

    Parameters
    ----------
    network : str
        ``"smallconv"`` or a torchvision classification model name (``get_model``).
    weights : str or None
        None: seeded random initialisation. A path to an existing file: a state_dict
        (e.g. from :func:`train_small_network`). Otherwise a torchvision weights name
        (``"DEFAULT"``, ``"IMAGENET1K_V1"``, ``"AlexNet_Weights.IMAGENET1K_V1"``), which
        needs the weights cached or an internet connection.
    seed : int
        Seed of the random initialisation (the global torch RNG is left untouched).
    num_classes : int, optional
        Output units of ``smallconv`` (default: from the checkpoint, else 10).

    Returns
    -------
    model : torch.nn.Module
    provenance : str
    """
    import torchvision

    # A path (existing file, or a checkpoint suffix) means a local state_dict.
    checkpoint = weights is not None and (Path(weights).is_file()
                                          or Path(weights).suffix in (".pt", ".pth", ".ckpt"))
    state, meta = _read_checkpoint(Path(weights)) if checkpoint else (None, {})

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if network == "smallconv":
            if num_classes is None:
                num_classes = state["fc5.weight"].shape[0] if state and "fc5.weight" in state else 10
            width = state["conv1.weight"].shape[0] if state and "conv1.weight" in state else 16
            model = SmallConv(num_classes=num_classes, width=width)
        else:
            if network not in torchvision.models.list_models():
                raise ValueError(
                    f"network {network!r}: not 'smallconv' nor a torchvision model "
                    f"(see torchvision.models.list_models())"
                )
            if weights is None or checkpoint:
                model = torchvision.models.get_model(network, weights=None)
            else:
                try:
                    model = torchvision.models.get_model(network, weights=weights)
                except Exception as err:  # noqa: BLE001 - URLError, ValueError, ...
                    raise RuntimeError(
                        f"weights {weights!r} of {network}: cannot load ({err}). Pretrained "
                        f"weights need an internet connection or the torch hub cache; offline, "
                        f"use weights=None (random init) or a local checkpoint path"
                    ) from err

    if checkpoint:
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"{weights}: does not fit network {network!r} ({err})") from err
        provenance = meta.get("provenance") or f"{network}, weights from local checkpoint {weights}"
    elif weights is None:
        provenance = (f"{network}, random init (seed {seed}): no pretrained weights available "
                      f"offline, features are those of an untrained network")
    else:
        provenance = f"{network}, pretrained torchvision weights {weights}"
    return model, provenance


class FeatureExtractor(nn.Module):
    """Activations of named layers of a frozen network, differentiable in the input.

    Parameters
    ----------
    network : str
        A torchvision model name (``torchvision.models.get_model``) or ``"smallconv"``.
    layers : list of str, optional
        Node names (as in ``torchvision.models.feature_extraction.get_graph_node_names``);
        default: :data:`DEFAULT_LAYERS` of the network.
    weights : str, optional
        None (seeded random init), a torchvision weights name such as ``"DEFAULT"``
        (fails offline with a clear message), or a path to a local state_dict.
    device : str or torch.device
    seed : int
        Seed of the random initialisation.
    input_size : int, optional
        Side the images are resized to; default 224 for torchvision networks, 32 for
        smallconv. Images of that size are not resized.

    Attributes
    ----------
    provenance : str
        Where the weights came from, for the report.
    layers : list of str
    """

    def __init__(self, network: str = "alexnet", layers: list[str] | None = None,
                 weights: str | None = None, device="cpu", seed: int = 0,
                 input_size: int | None = None):
        super().__init__()
        from torchvision.models.feature_extraction import (create_feature_extractor,
                                                           get_graph_node_names)

        model, self.provenance = build_network(network, weights, seed=seed)
        model.eval()
        if layers is None:
            if network not in DEFAULT_LAYERS:
                raise ValueError(f"network {network!r}: no default layers; give layers "
                                 f"(node names from get_graph_node_names)")
            layers = DEFAULT_LAYERS[network]
        layers = list(layers)
        if not layers:
            raise ValueError("layers: empty list")
        nodes = get_graph_node_names(model)[1]
        unknown = [name for name in layers if name not in nodes]
        if unknown:
            raise ValueError(f"layers {unknown} are not nodes of {network}; "
                             f"known nodes include {nodes[:40]}")
        self.network = network
        self.weights = weights
        self.seed = seed
        self.layers = layers
        self.input_size = input_size or (SMALLCONV_INPUT_SIZE if network == "smallconv"
                                         else TORCHVISION_INPUT_SIZE)
        self.body = create_feature_extractor(model, return_nodes=layers)
        self.body.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.device = torch.device(device)
        self.to(self.device)
        self.eval()

    def train(self, mode: bool = True) -> "FeatureExtractor":
        """Keep the network in eval mode (frozen dropout and batch norm) always."""
        return super().train(False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Gray to RGB, resize to the input size and ImageNet-normalise (n, C, H, W)."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images: expected (n, C, H, W) with C 1 or 3, got {tuple(images.shape)}")
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if images.shape[-2:] != (self.input_size, self.input_size):
            smaller = images.shape[-1] > self.input_size
            images = F.interpolate(images, size=(self.input_size, self.input_size),
                                   mode="bilinear", align_corners=False, antialias=smaller)
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Activations of :attr:`layers` for images (n, C, H, W) in [0, 1]."""
        out = self.body(self.preprocess(images.to(self.device, torch.float32)))
        return OrderedDict((name, out[name]) for name in self.layers)

    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of one image's activations at each layer."""
        with torch.no_grad():
            out = self(torch.zeros(1, 3, self.input_size, self.input_size, device=self.device))
        return {name: tuple(value.shape[1:]) for name, value in out.items()}
