"""Deep-network features of images: the feature space of deep image reconstruction.

One :class:`FeatureExtractor` wraps a torchvision classification network (by name, with
weights from the torchvision weights API or a local checkpoint) or ``"smallconv"``, a
small CNN that runs on a laptop CPU, and returns the activations of named layers
(torchvision's ``create_feature_extractor`` node names). It is differentiable in its
input, so it serves as the loss of pixel optimisation and perceptual losses as well as
for feature extraction. Features are stored in HDF5, one chunked dataset per layer.

No pretrained weights can be downloaded offline; the extractor then runs with a seeded
random initialisation or with a checkpoint trained locally by
:func:`train_small_network`, and its :attr:`FeatureExtractor.provenance` says which.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

log = logging.getLogger(__name__)

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


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """Images (n, H, W, C) as a float tensor (n, C, H, W)."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"images: expected (n, H, W, C), got shape {images.shape}")
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def extract_features(images: np.ndarray, extractor: FeatureExtractor,
                     batch_size: int = 64) -> dict[str, np.ndarray]:
    """Flattened activations of each layer of ``extractor`` for ``images``.

    Parameters
    ----------
    images : ndarray, shape (n, H, W, C)
        Values in [0, 1], C 1 or 3.
    extractor : FeatureExtractor
    batch_size : int

    Returns
    -------
    dict of str to ndarray, shape (n, n_units)
        float32, in the order of ``extractor.layers``.
    """
    tensor = to_tensor(images)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in extractor.layers}
    with torch.no_grad():
        for start in range(0, len(tensor), batch_size):
            out = extractor(tensor[start:start + batch_size])
            for name, value in out.items():
                chunks[name].append(value.flatten(1).cpu().numpy())
    return OrderedDict(
        (name, np.concatenate(parts) if parts else np.zeros((0, 0), np.float32))
        for name, parts in chunks.items()
    )


def write_features(path: str | Path, features: dict[str, np.ndarray],
                   attrs: dict | None = None, dtype=np.float32) -> None:
    """Write features to HDF5: one gzip-compressed dataset per layer, chunked by image.

    Parameters
    ----------
    path : str or Path
    features : dict of str to ndarray, shape (n, n_units)
    attrs : dict, optional
        File attributes (e.g. provenance, network, stimulus names); lists of strings
        and scalars are stored as they are, anything else as JSON.
    dtype : numpy dtype
        Storage type; float16 halves the size at ~3 significant digits.
    """
    import h5py

    names = list(features)
    with h5py.File(path, "w") as f:
        f.attrs["layers"] = names
        for key, value in (attrs or {}).items():
            if isinstance(value, (str, int, float, np.number)) or (
                    isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
                f.attrs[key] = value
            else:
                f.attrs[key] = json.dumps(value)
        for name in names:
            data = np.asarray(features[name], dtype=dtype)
            if data.ndim != 2:
                raise ValueError(f"features[{name!r}]: expected (n, n_units), got {data.shape}")
            # One chunk row per image (capped at ~1 MB) so reading a few images is cheap.
            rows = max(1, min(len(data), (1 << 20) // max(1, data.shape[1] * data.itemsize)))
            f.create_dataset(name.replace("/", "|"), data=data,
                             chunks=(rows, data.shape[1]) if data.size else None,
                             compression="gzip" if data.size else None,
                             shuffle=bool(data.size))


def read_features(path: str | Path, layers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Features written by :func:`write_features` (all layers, or ``layers``), as float32."""
    import h5py

    with h5py.File(path, "r") as f:
        available = [str(name) for name in f.attrs.get("layers", list(f.keys()))]
        wanted = available if layers is None else list(layers)
        missing = [name for name in wanted if name not in available]
        if missing:
            raise KeyError(f"{path}: no layers {missing}; it has {available}")
        return OrderedDict((name, f[name.replace("/", "|")][()].astype(np.float32))
                           for name in wanted)


def read_feature_attrs(path: str | Path) -> dict:
    """The file attributes written by :func:`write_features`."""
    import h5py

    with h5py.File(path, "r") as f:
        out = {}
        for key, value in f.attrs.items():
            if isinstance(value, np.ndarray):
                value = [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]
            elif isinstance(value, bytes):
                value = value.decode()
            out[key] = value
        return out


def load_labelled_images(folder: str | Path, size: int = 32, column: str = "class_name",
                         limit: int | None = None, seed: int = 0,
                         exclude: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray]:
    """RGB images and labels of a folder with a ``labels.tsv`` (columns ``file`` and ``column``).

    Parameters
    ----------
    folder : str or Path
    size : int
        Side of the (centre-cropped, resized) images.
    column : str
        Label column of ``labels.tsv``.
    limit : int, optional
        Keep a random subset of this many images (seeded).
    seed : int
    exclude : sequence of str
        Files (as in ``labels.tsv``) to leave out, e.g. the study's stimuli.

    Returns
    -------
    images : ndarray, shape (n, size, size, 3)
    labels : ndarray of str, shape (n,)
    """
    import pandas as pd

    from .images import load_images

    table_path = Path(folder) / "labels.tsv"
    if not table_path.is_file():
        raise FileNotFoundError(f"{table_path}: labels table not found")
    table = pd.read_csv(table_path, sep="\t")
    for col in ("file", column):
        if col not in table:
            raise ValueError(f"{table_path}: no column {col!r} (has {list(table.columns)})")
    table = table[~table["file"].astype(str).isin(set(exclude))]
    if limit is not None and limit < len(table):
        table = table.sample(n=limit, random_state=seed).sort_index()
    images = load_images([Path(folder) / p for p in table["file"]], size, channels=3)
    return images, table[column].astype(str).to_numpy()


def train_small_network(images, labels, out: str | Path | None = None, *, size: int = 32,
                        epochs: int = 10, batch_size: int = 128, lr: float = 2e-3,
                        width: int = 16, val_fraction: float = 0.1, seed: int = 0,
                        device="cpu", source: str = "a labelled image set") -> tuple[nn.Module, dict]:
    """Train ``smallconv`` to classify a labelled image set, so its features mean something.

    Parameters
    ----------
    images : ndarray (n, H, W, C) in [0, 1], or a folder with ``labels.tsv``
        With a folder, ``labels`` is the label column (e.g. ``"class_name"``).
    labels : array-like of str or int, or str
    out : str or Path, optional
        Where to save the state_dict (``torch.save``); a sidecar ``<out>.json`` holds
        the provenance, classes and held-out accuracy.
    size : int
        Image side when reading a folder.
    epochs, batch_size, lr : training settings (AdamW, cosine schedule, flip augmentation).
    width : int
        Channels of the first conv layer.
    val_fraction : float
        Held-out fraction for the reported accuracy.
    seed : int
    device : str or torch.device
    source : str
        Name of the image set, for the provenance (a folder's name is used by default).

    Returns
    -------
    model : SmallConv
    meta : dict
        ``provenance``, ``classes``, ``val_accuracy``, ``n_train``, ``epochs``.
    """
    from tqdm.auto import tqdm

    if isinstance(images, (str, Path)):
        source = Path(images).name
        images, labels = load_labelled_images(images, size=size, column=labels, seed=seed)
    images = np.asarray(images, dtype=np.float32)
    labels = np.asarray(labels)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    classes, y = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ValueError("labels: need at least two classes to train a network")

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    n_val = int(round(val_fraction * len(images)))
    val, train = order[:n_val], order[n_val:]
    x_all = to_tensor(images)
    if x_all.shape[1] == 1:
        x_all = x_all.expand(-1, 3, -1, -1)
    y_all = torch.from_numpy(y.astype(np.int64))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x_all = (x_all - mean) / std  # same normalisation FeatureExtractor applies

    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallConv(num_classes=len(classes), width=width).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        steps = epochs * int(np.ceil(len(train) / batch_size))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps))
        for epoch in tqdm(range(epochs), desc="train smallconv", unit="epoch"):
            model.train()
            perm = train[rng.permutation(len(train))]
            for start in range(0, len(perm), batch_size):
                idx = perm[start:start + batch_size]
                xb, yb = x_all[idx].to(device), y_all[idx].to(device)
                flip = torch.from_numpy(rng.random(len(idx)) < 0.5).to(device)
                xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(-1), xb)  # cheap augmentation
                loss = F.cross_entropy(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
            log.info("epoch %d: loss %.3f", epoch + 1, loss.item())
    model.eval()
    accuracy = float("nan")
    if n_val:
        with torch.no_grad():
            pred = torch.cat([model(x_all[val[s:s + 512]].to(device)).argmax(1).cpu()
                              for s in range(0, n_val, 512)])
        accuracy = float((pred == y_all[val]).float().mean())
    meta = {
        "provenance": (f"smallconv, trained locally on {source} ({len(train)} images, "
                       f"{len(classes)} classes, {epochs} epochs, seed {seed}; held-out "
                       f"accuracy {accuracy:.1%}, chance {1 / len(classes):.1%}): "
                       f"no pretrained weights available offline"),
        "classes": [str(c) for c in classes],
        "val_accuracy": accuracy,
        "n_train": int(len(train)),
        "n_val": int(n_val),
        "epochs": int(epochs),
        "seed": int(seed),
    }
    log.info(meta["provenance"])
    if out is not None:
        out = Path(out)
        torch.save(model.cpu().state_dict(), out)
        Path(str(out) + ".json").write_text(json.dumps(meta, indent=2) + "\n")
        model.to(device)
    return model, meta


def feature_identification(recon: np.ndarray, true: np.ndarray, extractor: FeatureExtractor,
                           batch_size: int = 64) -> dict[str, np.ndarray]:
    """Exhaustive 2-way identification of reconstructions by the features of each layer.

    Parameters
    ----------
    recon, true : ndarray, shape (n, H, W, C)
        Reconstructions and the images that were shown, in [0, 1].
    extractor : FeatureExtractor

    Returns
    -------
    dict of str to ndarray, shape (n,)
        Per layer, the fraction of other images whose features correlate less with the
        reconstruction's than the true image's do (chance 0.5).
    """
    from .evaluation import correlation_matrix, identification_2way

    a = extract_features(recon, extractor, batch_size)
    b = extract_features(true, extractor, batch_size)
    return OrderedDict((name, identification_2way(correlation_matrix(a[name], b[name])))
                       for name in extractor.layers)


def feature_similarity(recon: np.ndarray, true: np.ndarray, extractor: FeatureExtractor,
                       reference: np.ndarray | None = None, batch_size: int = 64) -> np.ndarray:
    """Similarity of every reconstruction to every true image by their deep features.

    Parameters
    ----------
    recon : ndarray, shape (n, H, W, C)
    true : ndarray, shape (m, H, W, C)
        Images in [0, 1].
    extractor : FeatureExtractor
    reference : ndarray, shape (k, H, W, C), optional
        Images (e.g. the training stimuli) whose feature mean and standard deviation
        z-score every unit first. Raw activations share a large mean pattern that
        makes every image correlate with every other; z-scoring removes it.

    Returns
    -------
    ndarray, shape (n, m)
        Per layer, the Pearson correlation of the (z-scored) features, averaged over the
        extractor's layers: the ``sim`` of :func:`fmrirecon.evaluation.identification_nway`.
    """
    from .evaluation import correlation_matrix

    a = extract_features(recon, extractor, batch_size)
    b = extract_features(true, extractor, batch_size)
    ref = None if reference is None else extract_features(reference, extractor, batch_size)
    sims = []
    for name in extractor.layers:
        x, y = a[name], b[name]
        if ref is not None:
            mean, sd = ref[name].mean(0), ref[name].std(0)
            sd = np.where(sd > 0, sd, 1.0)
            x, y = (x - mean) / sd, (y - mean) / sd
        sims.append(correlation_matrix(x, y))
    return np.mean(sims, axis=0)


def stimulus_table(stimuli_dir: str | Path) -> "pd.DataFrame":
    """``stimuli.tsv`` of a BIDS ``stimuli/`` folder, or a listing of its images.

    Returns a table with at least ``stim_file`` (relative to ``stimuli_dir``).
    """
    import pandas as pd

    from .bids import read_stimuli_table

    stimuli_dir = Path(stimuli_dir)
    table = read_stimuli_table(stimuli_dir)
    if table is not None:
        if "stim_file" not in table:
            raise ValueError(f"{stimuli_dir / 'stimuli.tsv'}: no column 'stim_file'")
        return table
    files = sorted(p.relative_to(stimuli_dir).as_posix() for p in stimuli_dir.rglob("*")
                   if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"))
    if not files:
        raise FileNotFoundError(f"{stimuli_dir}: no stimuli.tsv and no images")
    return pd.DataFrame({"stim_file": files})


def extract_stimulus_features(stimuli_dir: str | Path, settings: dict, images: dict,
                              out_h5: str | Path, device: str = "auto") -> None:
    """Features of every stimulus image of a dataset, written to ``out_h5``.

    Parameters
    ----------
    stimuli_dir : str or Path
        The BIDS ``stimuli/`` folder (its ``stimuli.tsv`` lists the images).
    settings : dict
        ``network``, ``layers``, ``weights``, ``input_size``, ``seed`` (all optional;
        the config's ``methods.dir`` section).
    images : dict
        The config's ``images`` section (``size``, ``channels``).
    out_h5 : str or Path
    device : str
        See :func:`fmrirecon.torchkit.select_device`.
    """
    from .torchkit import select_device
    from .images import load_images

    table = stimulus_table(stimuli_dir)
    pixels = load_images([Path(stimuli_dir) / s for s in table["stim_file"]],
                         images["size"], images["channels"])
    extractor = FeatureExtractor(settings.get("network", "smallconv"), settings.get("layers"),
                                 settings.get("weights"), device=select_device(device),
                                 seed=settings.get("seed", 0), input_size=settings.get("input_size"))
    log.info("features of %d images: %s", len(pixels), extractor.provenance)
    features = extract_features(pixels, extractor)
    attrs = {"provenance": extractor.provenance, "network": extractor.network,
             "weights": str(extractor.weights), "image_size": int(images["size"]),
             "channels": int(images["channels"]),
             "stim_file": [str(s) for s in table["stim_file"]],
             "layer_shapes": {k: list(v) for k, v in extractor.layer_shapes().items()}}
    for column in ("family", "split"):
        if column in table:
            attrs[column] = [str(v) for v in table[column]]
    write_features(out_h5, features, attrs)


def train_feature_network(folder: str | Path, settings: dict, seed: int, out: str | Path,
                          stimuli_dir: str | Path | None = None) -> dict:
    """Train ``smallconv`` on a labelled image folder (config ``train_network`` of a
    ``dir`` or ``selfsup`` method).

    Parameters
    ----------
    folder : str or Path
        Folder with ``labels.tsv`` (columns ``file`` and the label column).
    settings : dict
        ``column`` (default ``class_name``), ``size`` (32), ``epochs`` (10),
        ``limit`` (all images), ``width`` (16), ``batch_size`` (128), ``lr`` (2e-3),
        ``device`` (``"auto"``), ``exclude_stimuli`` (False: with True, the images of
        the stimuli table's ``source_file`` column stay out of training, so a network
        trained on the stimuli's own image set never sees a study image).
    seed : int
    out : str or Path
        The state_dict; its provenance goes to ``<out>.json``.
    stimuli_dir : str or Path, optional
        The study's ``stimuli/`` folder (its ``stimuli.tsv``); needed with
        ``exclude_stimuli``.

    Returns
    -------
    dict
        The training metadata (provenance, held-out accuracy).
    """
    from .torchkit import select_device

    from .bids import read_stimuli_table

    known = {"folder", "column", "size", "epochs", "limit", "width", "batch_size", "lr", "device",
             "exclude_stimuli"}
    unknown = set(settings) - known
    if unknown:
        raise ValueError(f"methods.<name>.train_network: unknown keys {sorted(unknown)}; known {sorted(known)}")
    exclude = []
    if settings.get("exclude_stimuli"):
        table = read_stimuli_table(stimuli_dir) if stimuli_dir else None
        if table is None or "source_file" not in table:
            raise ValueError(f"{Path(str(stimuli_dir)) / 'stimuli.tsv'}: train_network."
                             f"exclude_stimuli needs the stimuli table's source_file column "
                             f"(the stimuli's files in {folder})")
        exclude = table["source_file"].dropna().astype(str).tolist()
    images, labels = load_labelled_images(folder, size=settings.get("size", 32),
                                          column=settings.get("column", "class_name"),
                                          limit=settings.get("limit"), seed=seed, exclude=exclude)
    if exclude:
        log.info("train_network: %d study images left out of %s", len(exclude), folder)
    _, meta = train_small_network(
        images, labels, out, epochs=settings.get("epochs", 10),
        batch_size=settings.get("batch_size", 128), lr=settings.get("lr", 2e-3),
        width=settings.get("width", 16), seed=seed,
        device=select_device(settings.get("device", "auto")),
        source=Path(folder).name + (" without the study's images" if exclude else ""),
    )
    return meta


def network_summary(weights) -> dict:
    """Held-out accuracy of a locally trained network, as a metric entry, or ``{}``.

    Reads the sidecar ``<weights>.json`` written by :func:`train_small_network`; the
    interval is a Wilson 95% interval over the held-out images and chance is one over
    the number of classes. Empty for random or torchvision weights (no sidecar).
    """
    if weights is None:
        return {}
    sidecar = Path(str(weights) + ".json")
    if not sidecar.is_file():
        return {}
    meta = json.loads(sidecar.read_text())
    acc, n_val, classes = meta.get("val_accuracy"), meta.get("n_val"), meta.get("classes") or []
    if acc is None or not n_val or not classes:
        return {}
    from scipy.stats import binomtest

    interval = binomtest(int(round(acc * n_val)), int(n_val)).proportion_ci(0.95, method="wilson")
    return {"mean": float(acc), "ci_low": float(interval.low), "ci_high": float(interval.high),
            "chance": 1.0 / len(classes)}
