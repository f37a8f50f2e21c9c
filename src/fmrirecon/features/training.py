"""Training smallconv locally on a labelled image folder (no pretrained weights
offline), and the held-out accuracy of a trained network as a metric."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .io import to_tensor
from .networks import IMAGENET_MEAN, IMAGENET_STD, SmallConv

log = logging.getLogger(__name__)


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

    from ..images import load_images

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
    from ..torchkit import select_device

    from ..stimuli import read_stimuli_table

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
