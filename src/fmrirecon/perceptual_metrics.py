"""The field's metric table: PixCorr, SSIM and six network metrics as the NSD papers compute them.

The reconstruction papers on the Natural Scenes Dataset (Ozcelik & VanRullen 2023,
"Brain-Diffuser"; Scotti et al. 2023/2024, "MindEye" / "MindEye2"; and their successors)
report one table of eight numbers. This module computes that table with the papers'
resolutions, layers and distances, so that numbers can be set beside theirs:

=============  =======================  ==========  ====================================
column         network (weights)        input px    score
=============  =======================  ==========  ====================================
PixCorr        none                     425         Pearson r of the RGB pixels
SSIM           none                     425         grayscale SSIM (Gaussian, sigma 1.5)
AlexNet(2)     AlexNet IMAGENET1K_V1    256         2-way ident., ``features.4``
AlexNet(5)     AlexNet IMAGENET1K_V1    256         2-way ident., ``features.11``
Inception      Inception-v3 IMAGENET1K  342         2-way ident., ``avgpool``
CLIP           CLIP ViT-L/14 (OpenAI)   224         2-way ident., image embedding
EffNet-B       EfficientNet-B1 V2       255         correlation distance, ``avgpool``
SwAV           SwAV ResNet-50           224         correlation distance, ``avgpool``
=============  =======================  ==========  ====================================

Images are resized (bilinear, antialiased, the shorter side to the size above) and
normalised with the network's mean and standard deviation (ImageNet's; CLIP's own).
2-way identification: for each reconstruction, the fraction of the other test images
whose features correlate less with the reconstruction's features than its own image's
do (Pearson r of the flattened features; ties count half; chance 0.5). Correlation
distance: ``1 - r`` between the features of a reconstruction and of its own image
(lower is better). Definitions follow the evaluation code released with MindEye
(``utils.py``, ``two_way_identification``) and Brain-Diffuser
(``eval_metrics.py``).

Weights cannot be downloaded here: each network reads a file the user has on disk, by
default where the standard tools cache it (torchvision's and torch.hub's
``$TORCH_HOME/hub/checkpoints/``, OpenAI CLIP's ``~/.cache/clip/``). Where a file is
missing the metric is not computed and the table says "no weights" (never a value from
an untrained network).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from PIL import Image

from .evaluation import (_check_pair, _child_rng, _interval, correlation_matrix,
                         identification_2way, nearest_training_image, mean_image_baseline,
                         shuffled_scores, ssim, summarise)

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: Resolution of the pixel metrics in the papers (the NSD images are 425 x 425).
PIXEL_SIZE = 425

#: The networks: architecture, where its weights are cached by default, input
#: normalisation and what the weights are.
NETWORKS = {
    "alexnet": {"arch": "alexnet", "file": "alexnet-owt-7be5be79.pth", "cache": "torch",
                "norm": (IMAGENET_MEAN, IMAGENET_STD),
                "weights": "torchvision AlexNet_Weights.IMAGENET1K_V1"},
    "inception": {"arch": "inception_v3", "file": "inception_v3_google-0cc3c7bd.pth",
                  "cache": "torch", "norm": (IMAGENET_MEAN, IMAGENET_STD),
                  "weights": "torchvision Inception_V3_Weights.IMAGENET1K_V1"},
    "clip": {"arch": "clip", "file": "ViT-L-14.pt", "cache": "clip", "norm": (CLIP_MEAN, CLIP_STD),
             "weights": "OpenAI CLIP ViT-L/14 (the clip package's ViT-L-14.pt)"},
    "efficientnet": {"arch": "efficientnet_b1", "file": "efficientnet_b1-c27df63c.pth",
                     "cache": "torch", "norm": (IMAGENET_MEAN, IMAGENET_STD),
                     "weights": "torchvision EfficientNet_B1_Weights.IMAGENET1K_V2"},
    "swav": {"arch": "resnet50", "file": "swav_800ep_pretrain.pth.tar", "cache": "torch",
             "norm": (IMAGENET_MEAN, IMAGENET_STD),
             "weights": "SwAV ResNet-50, 800 epochs (torch.hub facebookresearch/swav)"},
}

#: The columns of the table: key -> label, network, input size, layer, score.
#: score: "pixcorr", "ssim", "ident" (2-way identification, higher is better) or
#: "distance" (correlation distance, lower is better).
FIELD_METRICS = {
    "pixcorr": {"label": "PixCorr", "network": None, "size": PIXEL_SIZE, "layer": None, "score": "pixcorr"},
    "ssim": {"label": "SSIM", "network": None, "size": PIXEL_SIZE, "layer": None, "score": "ssim"},
    "alexnet2": {"label": "AlexNet(2)", "network": "alexnet", "size": 256, "layer": "features.4", "score": "ident"},
    "alexnet5": {"label": "AlexNet(5)", "network": "alexnet", "size": 256, "layer": "features.11", "score": "ident"},
    "inception": {"label": "Inception", "network": "inception", "size": 342, "layer": "avgpool", "score": "ident"},
    "clip": {"label": "CLIP", "network": "clip", "size": 224, "layer": "image embedding", "score": "ident"},
    "effnet": {"label": "EffNet-B", "network": "efficientnet", "size": 255, "layer": "avgpool", "score": "distance"},
    "swav": {"label": "SwAV", "network": "swav", "size": 224, "layer": "avgpool", "score": "distance"},
}


def torch_hub_dir() -> Path:
    """torch.hub's folder, as ``torch.hub.get_dir()`` finds it (``$TORCH_HOME/hub``,
    else ``$XDG_CACHE_HOME/torch/hub``, else ``~/.cache/torch/hub``), without importing
    torch (seconds that a run without network weights need not spend)."""
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(os.path.expanduser(home)) / "hub"


def default_weights_path(network: str) -> Path:
    """Where the standard tools cache the weights of ``network`` (see :data:`NETWORKS`).

    torchvision and torch.hub: ``<torch hub dir>/checkpoints/<file>`` (honours
    ``$TORCH_HOME``, :func:`torch_hub_dir`); OpenAI CLIP: ``~/.cache/clip/<file>``.
    """
    spec = NETWORKS[network]
    if spec["cache"] == "clip":
        return Path(os.path.expanduser("~/.cache/clip")) / spec["file"]
    return torch_hub_dir() / "checkpoints" / spec["file"]


def weights_status(paths: Mapping[str, str | None] | None = None) -> dict[str, dict]:
    """Which networks have weights on disk.

    Parameters
    ----------
    paths : mapping, optional
        network -> weights file; ``None`` or absent: :func:`default_weights_path`.

    Returns
    -------
    dict
        network -> ``{"path": str, "found": bool, "weights": str}``.
    """
    paths = dict(paths or {})
    unknown = set(paths) - set(NETWORKS)
    if unknown:
        raise ValueError(f"networks {sorted(unknown)}: not among {sorted(NETWORKS)}")
    out = {}
    for name, spec in NETWORKS.items():
        path = Path(os.path.expanduser(str(paths[name]))) if paths.get(name) else default_weights_path(name)
        out[name] = {"path": str(path), "found": path.is_file(), "weights": spec["weights"]}
    return out


def _cpu_float32(model) -> None:
    """Make OpenAI's TorchScript CLIP run on the CPU in float32.

    The archive was traced on a GPU in half precision: its graphs hold "cuda" device
    constants and casts to float16. As the ``clip`` package does when it loads the
    archive on a CPU, these constants are replaced by a CPU device and float32.
    """
    import torch

    device_holder = torch.jit.trace(lambda: torch.ones([]).to(torch.device("cpu")), example_inputs=[])
    device_node = [n for n in device_holder.graph.findAllNodes("prim::Constant") if "Device" in repr(n)][-1]
    float_holder = torch.jit.trace(lambda: torch.ones([]).float(), example_inputs=[])
    float_node = float_holder.graph.findNode("aten::to").inputsAt(1).node()

    def value(node):
        # a constant node's value, across torch versions (no node["value"] any more)
        return getattr(node, node.kindOf("value"))("value")

    def graphs(module):
        out = [module.graph] if hasattr(module, "graph") else []
        if hasattr(module, "forward1"):
            out.append(module.forward1.graph)
        return out

    def patch(module):
        for graph in graphs(module):
            for node in graph.findAllNodes("prim::Constant"):
                if "value" in node.attributeNames() and str(value(node)).startswith("cuda"):
                    node.copyAttributes(device_node)
            for node in graph.findAllNodes("aten::to"):
                inputs = list(node.inputs())
                for i in (1, 2):  # dtype is the second or third input; 5 is float16
                    if i < len(inputs) and inputs[i].node().kind() == "prim::Constant" \
                            and "value" in inputs[i].node().attributeNames() and value(inputs[i].node()) == 5:
                        inputs[i].node().copyAttributes(float_node)

    model.apply(patch)
    patch(model.encode_image)
    model.float()


def load_network(network: str, path: str | Path, device: str = "cpu"):
    """The network ``network`` with the weights at ``path``, in eval mode on ``device``,
    as a function images -> {layer: features} (features back on the CPU).

    torchvision architectures are built by :func:`fmrirecon.features.build_network`
    from the state dict; SwAV's checkpoint (a DataParallel state dict with its
    projection head) keeps the ResNet-50 trunk; CLIP is OpenAI's TorchScript archive,
    whose ``encode_image`` gives the embedding.
    """
    import torch
    from torchvision.models.feature_extraction import create_feature_extractor

    path = Path(path)
    layers = sorted({m["layer"] for m in FIELD_METRICS.values() if m["network"] == network})
    if network == "clip":
        try:
            model = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as err:  # noqa: BLE001 - torch raises many types for bad files
            raise ValueError(f"{path}: not a CLIP TorchScript archive ({err})") from err
        if not hasattr(model, "encode_image"):
            raise ValueError(f"{path}: the archive has no encode_image (not a CLIP model)")
        # OpenAI's archive runs on the CPU once patched (a GPU run would need it unpatched)
        _cpu_float32(model)
        return lambda x: {"image embedding": model.encode_image(x.cpu()).float()}
    if network == "swav":
        import torchvision

        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        state = {k.removeprefix("module."): v for k, v in state.items()}
        model = torchvision.models.resnet50(weights=None)
        missing, _ = model.load_state_dict(state, strict=False)
        # the trunk must be complete; SwAV has no classifier (fc) and a projection head
        trunk_missing = [k for k in missing if not k.startswith("fc.")]
        if trunk_missing:
            raise ValueError(f"{path}: not a SwAV ResNet-50 checkpoint (missing {trunk_missing[:3]}...)")
    else:
        from .features import build_network

        model, _ = build_network(NETWORKS[network]["arch"], weights=str(path))
        if network == "inception":
            # torchvision's pretrained Inception-v3 maps ImageNet-normalised input to
            # its own normalisation (transform_input=True when weights are given)
            model.transform_input = True
    extractor = create_feature_extractor(model.eval(), return_nodes=layers).eval().to(device)
    return lambda x: {k: v.float().cpu() for k, v in extractor(x.to(device)).items()}


def _to_tensor(images: np.ndarray):
    import torch

    x = torch.as_tensor(np.asarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
    return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Images ``(n, H, W, C)`` with the shorter side resized to ``size``, channels kept.

    Bilinear, antialiased when shrinking: what torchvision's ``Resize`` does to tensors
    (the papers' transform), computed with PIL on float images so that no network
    library is loaded for the pixel metrics.
    """
    images = np.asarray(images, dtype=np.float32)
    n, h, w, c = images.shape
    scale = size / min(h, w)
    new_h, new_w = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    if scale == 1:
        return images.copy()
    out = np.empty((n, new_h, new_w, c), dtype=np.float32)
    for i in range(n):
        for k in range(c):
            band = Image.fromarray(images[i, :, :, k], mode="F")
            out[i, :, :, k] = np.asarray(band.resize((new_w, new_h), Image.Resampling.BILINEAR))
    return out


def network_features(images: np.ndarray, network, size: int, norm,
                     batch_size: int = 16) -> dict[str, np.ndarray]:
    """Features of every layer of ``network`` (from :func:`load_network`), flattened.

    Images are resized to ``size`` and normalised with ``norm`` = (mean, std).
    """
    import torch
    from torchvision.transforms.functional import InterpolationMode, normalize
    from torchvision.transforms.functional import resize as tv_resize

    out: dict[str, list] = {}
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = _to_tensor(images[start:start + batch_size])
            x = tv_resize(x, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
            x = normalize(x, list(norm[0]), list(norm[1]))
            for layer, value in network(x).items():
                out.setdefault(layer, []).append(value.flatten(1).cpu().numpy().astype(np.float64))
    return {layer: np.concatenate(parts) for layer, parts in out.items()}


def _scores(kind: str, recon_feats, true_feats) -> np.ndarray:
    sim = correlation_matrix(recon_feats, true_feats)
    if kind == "ident":
        return identification_2way(sim)
    return 1.0 - np.diag(sim)  # correlation distance of each pair


def _shuffled_distance(recon_feats, true_feats) -> np.ndarray:
    # each reconstruction's correlation distance to every other image, averaged
    sim = correlation_matrix(recon_feats, true_feats)
    n = len(sim)
    return 1.0 - (sim.sum(axis=1) - np.diag(sim)) / max(n - 1, 1)


def field_metrics(
    recons: Mapping[str, np.ndarray],
    true: np.ndarray,
    stim_files,
    train_images: np.ndarray | None = None,
    networks: Mapping[str, str | None] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    n_shuffles: int = 2,
    device: str = "auto",
) -> tuple[pd.DataFrame, dict]:
    """The field's table for several methods on the same test images, with baselines.

    Parameters
    ----------
    recons : mapping
        method -> reconstructions ``(n, H, W, C)`` in [0, 1], all of the same images.
    true : ndarray, shape (n, H, W, C)
        The images shown.
    stim_files : sequence of str
        Their stimulus files.
    train_images : ndarray, shape (m, H, W, C), optional
        The training images: the mean-image and retrieval baselines (as in
        :func:`fmrirecon.evaluation.evaluate`: retrieval is the training image nearest
        to each reconstruction by pixel correlation at the native resolution).
    networks : mapping, optional
        network -> weights file (``None``: the standard cache, :func:`weights_status`).
    n_boot : int
        Bootstrap resamples (over images) of the 95% intervals.
    seed : int
        Seed of the bootstrap and of the shuffled SSIM partners.
    n_shuffles : int
        Wrong partners per image of the shuffled SSIM baseline (SSIM at 425 px is slow;
        every other baseline and metric is exact).
    device : str
        Torch device of the networks (``auto``: a GPU when one is visible); torch is
        imported only when a network has weights.

    Returns
    -------
    per_image : DataFrame
        Long table: ``method``, ``stim_file``, ``metric``, ``value`` and one column per
        baseline (``mean_image``, ``retrieval``, ``shuffled``).
    summary : dict
        ``{"metrics": FIELD_METRICS, "networks": weights_status(...) plus "provenance"
        or "error", "methods": {method: {metric: {"mean", "ci_low", "ci_high", "chance",
        "baselines"}}}}``; a metric whose network has no weights is absent from the
        methods' entries. ``chance`` is 0.5 for identification and the shuffled baseline
        otherwise.
    """
    if not recons:
        raise ValueError("field_metrics: no reconstructions")
    stim_files = np.asarray([str(s) for s in stim_files])
    for method, recon in recons.items():
        _check_pair(recon, true)
    if len(stim_files) != len(true):
        raise ValueError(f"{len(stim_files)} stim_files for {len(true)} images")
    true = np.asarray(true, dtype=np.float64)
    status = weights_status(networks)
    # 1. the images scored; 2. pixel metrics; 3. network metrics; 4. the table
    sets = _image_sets(recons, true, train_images)
    values = _pixel_scores(sets, true, seed, n_shuffles)
    _network_scores(sets, true, status, device, values)
    return _field_table(recons, values, stim_files, status, n_boot, seed)


def _image_sets(recons, true, train_images) -> dict:
    """``(method, kind) -> images``: each method, and the baselines (the mean image
    once, retrieval per method)."""
    sets = {(m, "method"): np.asarray(r, dtype=np.float64) for m, r in recons.items()}
    if train_images is not None:
        train_images = np.asarray(train_images, dtype=np.float64)
        mean = mean_image_baseline(train_images, len(true))
        for m, r in recons.items():
            sets[(m, "mean_image")] = mean
            sets[(m, "retrieval")] = train_images[nearest_training_image(r, train_images)]
    return sets


def _pixel_scores(sets: dict, true, seed: int, n_shuffles: int) -> dict:
    """``(method, kind, metric) -> per-image values`` of PixCorr and SSIM at
    :data:`PIXEL_SIZE`, with each method's shuffled baseline."""
    values: dict[tuple[str, str, str], np.ndarray] = {}
    big_true = resize(true, PIXEL_SIZE)
    cache: dict[int, np.ndarray] = {}  # by id: the mean image is shared by every method
    for (m, kind), images in sets.items():
        key = id(images)
        big = cache.setdefault(key, resize(images, PIXEL_SIZE))
        values[(m, kind, "pixcorr")] = np.diag(correlation_matrix(big, big_true)).copy()
        values[(m, kind, "ssim")] = ssim(np.clip(big, 0, 1), np.clip(big_true, 0, 1))
        if kind == "method":
            values[(m, "shuffled", "pixcorr")] = shuffled_scores(big, big_true, "pixcorr")
            values[(m, "shuffled", "ssim")] = shuffled_scores(
                np.clip(big, 0, 1), np.clip(big_true, 0, 1), "ssim", n_shuffles,
                _child_rng(seed, f"field_shuffled_{m}"))
    return values


def _network_scores(sets: dict, true, status: dict, device: str, values: dict) -> None:
    """Add the metrics of every network with weights to ``values``; record each
    network's provenance, or its error, in ``status``."""
    for name, spec in NETWORKS.items():
        if not status[name]["found"]:
            log.info("%s: no weights at %s; its columns say so", name, status[name]["path"])
            continue
        if device == "auto" or device.startswith("cuda"):
            from .torchkit import select_device

            device = str(select_device(device))
        try:
            network = load_network(name, status[name]["path"], device)
        except (ValueError, RuntimeError, OSError) as err:
            status[name]["error"] = str(err)
            log.warning("%s: %s", name, err)
            continue
        metrics = {k: v for k, v in FIELD_METRICS.items() if v["network"] == name}
        size = {v["size"] for v in metrics.values()}.pop()
        true_feats = network_features(true, network, size, spec["norm"])
        feats: dict[int, dict] = {}
        for (m, kind), images in sets.items():
            if id(images) not in feats:
                feats[id(images)] = network_features(images, network, size, spec["norm"])
            here = feats[id(images)]
            for key, metric in metrics.items():
                layer = metric["layer"]
                values[(m, kind, key)] = _scores(metric["score"], here[layer], true_feats[layer])
                if kind == "method" and metric["score"] == "distance":
                    values[(m, "shuffled", key)] = _shuffled_distance(here[layer], true_feats[layer])
        status[name]["provenance"] = f"{spec['weights']} from {status[name]['path']}"
        log.info("%s: features from %s", name, status[name]["path"])


def _field_table(recons, values: dict, stim_files, status: dict, n_boot: int,
                 seed: int) -> tuple[pd.DataFrame, dict]:
    """The long per-image table and the summary of :func:`field_metrics`."""
    rows, summary = [], {"metrics": FIELD_METRICS, "networks": status, "methods": {}}
    for m in recons:
        entries = {}
        for key, metric in FIELD_METRICS.items():
            if (m, "method", key) not in values:
                continue
            own = values[(m, "method", key)]
            entry = summarise(own, 0.5 if metric["score"] == "ident" else None, n_boot,
                              _child_rng(seed, f"field_{m}_{key}"))
            entry["baselines"] = {
                b: _interval(values[(m, b, key)], n_boot, _child_rng(seed, f"field_{m}_{key}_{b}"))
                for b in ("mean_image", "retrieval", "shuffled") if (m, b, key) in values
            }
            if entry["chance"] is None and "shuffled" in entry["baselines"]:
                entry["chance"] = entry["baselines"]["shuffled"]["mean"]
            entries[key] = entry
            rows.append(pd.DataFrame({
                "method": m, "stim_file": stim_files, "metric": key, "value": own,
                **{b: values.get((m, b, key), np.full(len(own), np.nan))
                   for b in ("mean_image", "retrieval", "shuffled")},
            }))
        summary["methods"][m] = entries
    return pd.concat(rows, ignore_index=True), summary
