"""A small convolutional VAE-GAN (Larsen et al. 2016): the latent space of the faces study.

VanRullen & Reddy (2019) decode fMRI into the 1024-d latent space of a VAE-GAN trained on
faces. This module holds the three networks (encoder, decoder/generator, discriminator),
sized from the image side and the latent size (DCGAN-like: stride-2 4x4 convolutions down
to 4x4), and a training loop with checkpoints that resume exactly.

Losses, per batch (all per-element means, so weights do not depend on the image size):

- encoder and decoder: pixel MSE + ``feature_weight`` x MSE in the discriminator's last
  hidden layer (Larsen's learned similarity) + ``kl_weight`` x KL / n_pixels +
  ``adv_weight`` x non-saturating GAN loss on reconstructions and prior samples. The
  pixel term is not in Larsen's recipe; at small scale it keeps training stable. For
  speed the encoder also receives the (small) GAN gradient through the reconstructions;
- discriminator: real images vs reconstructions and prior samples.

Every random draw of training (shuffling, flips, reparameterisation noise, prior samples)
comes from one CPU ``torch.Generator`` saved in the checkpoint together with the model,
optimiser and global RNG states, so a resumed run gives the weights of an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..torchkit import (atomic_save, load_checkpoint, rng_states, seed_everything,
                        select_device, set_rng_states)
from ..images import load_images

log = logging.getLogger(__name__)

#: Written in every generator file; :func:`load_generator` checks it.
FORMAT = "fmrirecon-vaegan"
FORMAT_VERSION = 1

#: Columns of the training-curves TSV (one row per epoch).
CURVE_COLUMNS = ("epoch", "pixel", "feature", "kl", "gan_generator", "discriminator",
                 "d_real", "d_fake", "seconds")


# ----------------------------------------------------------------------------- networks

def _n_down(image_size: int) -> int:
    """Stride-2 stages from ``image_size`` down to 4x4 (the size must be 4 * 2**k)."""
    k = math.log2(image_size / 4) if image_size >= 8 else -1
    if k < 1 or k != int(k):
        raise ValueError(f"image_size must be 4 * 2**k >= 8 (8, 16, 32, 64, ...), got {image_size}")
    return int(k)


def generator_side(image_size: int) -> int:
    """The smallest side 4 * 2**k >= 8 that holds ``image_size`` (the generator's side
    for images of that side; e.g. 16 for 10 x 10 patches)."""
    side = 8
    while side < image_size:
        side *= 2
    return side


def _widths(image_size: int, base_channels: int) -> list[int]:
    """Channels after each down-sampling stage (doubling, capped at 8x the base)."""
    return [min(base_channels * 2 ** i, base_channels * 8) for i in range(_n_down(image_size))]


class Encoder(nn.Module):
    """Images (n, C, H, W) in [0, 1] -> posterior ``(mu, logvar)``, each (n, latent_dim)."""

    def __init__(self, image_size: int, channels: int, latent_dim: int, base_channels: int = 32):
        super().__init__()
        layers, c_in = [], channels
        for i, c in enumerate(_widths(image_size, base_channels)):
            layers += [nn.Conv2d(c_in, c, 4, 2, 1, bias=i == 0)]
            if i > 0:
                layers += [nn.BatchNorm2d(c)]
            layers += [nn.LeakyReLU(0.2)]
            c_in = c
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(c_in * 16, 2 * latent_dim)
        self.latent_dim = latent_dim

    def forward(self, x):
        mu, logvar = self.head(self.features(x * 2 - 1)).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)


class Decoder(nn.Module):
    """Latents (n, latent_dim) -> images (n, C, H, W) in [0, 1]: the generator."""

    def __init__(self, image_size: int, channels: int, latent_dim: int, base_channels: int = 32):
        super().__init__()
        widths = _widths(image_size, base_channels)[::-1]
        self.c0 = widths[0]
        self.fc = nn.Sequential(nn.Linear(latent_dim, widths[0] * 16), nn.BatchNorm1d(widths[0] * 16),
                                nn.ReLU())
        layers = []
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels

    def forward(self, z):
        return self.net(self.fc(z).view(len(z), self.c0, 4, 4))


class Discriminator(nn.Module):
    """Images -> ``(logit, hidden)``; ``hidden`` is the layer of the feature-wise loss.

    No batch normalisation: real and generated images go through in one batch.
    """

    def __init__(self, image_size: int, channels: int, base_channels: int = 32):
        super().__init__()
        layers, c_in = [], channels
        for c in _widths(image_size, base_channels):
            layers += [nn.Conv2d(c_in, c, 4, 2, 1), nn.LeakyReLU(0.2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * 16, 1))

    def forward(self, x):
        hidden = self.features(x * 2 - 1)
        return self.head(hidden).squeeze(1), hidden


def build_networks(image_size: int, channels: int, latent_dim: int, base_channels: int = 32):
    """Fresh ``(encoder, decoder, discriminator)`` for the given sizes."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
    return (Encoder(image_size, channels, latent_dim, base_channels),
            Decoder(image_size, channels, latent_dim, base_channels),
            Discriminator(image_size, channels, base_channels))


# ----------------------------------------------------------------------- generator files

def _read(path, device="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: generator weights not found")
    try:
        data = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch raises several types for foreign files
        raise ValueError(f"{path}: not a readable torch file ({err})") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not an fmrirecon VAE-GAN file (train it with "
                         f"fmrirecon.generative.train_vaegan or write format={FORMAT!r})")
    missing = {"config", "encoder", "decoder"} - set(data)
    if missing:
        raise ValueError(f"{path}: generator file lacks {', '.join(sorted(missing))}")
    return data


def generator_config(path) -> dict:
    """``image_size``, ``channels``, ``latent_dim``, ``base_channels`` of a generator file."""
    return dict(_read(path)["config"])


def _network(path, which: str, device):
    data = _read(path, device)
    cfg = data["config"]
    encoder, decoder, _ = build_networks(cfg["image_size"], cfg["channels"], cfg["latent_dim"],
                                         cfg.get("base_channels", 32))
    net = encoder if which == "encoder" else decoder
    try:
        net.load_state_dict(data[which])
    except RuntimeError as err:
        raise ValueError(f"{path}: {which} weights do not match its config ({err})") from err
    return net.to(device).eval()


def load_generator(path, device="cpu") -> Decoder:
    """The trained decoder of a generator file, in eval mode.

    Parameters
    ----------
    path : path
        A file written by :func:`train_vaegan` (or external weights in its format).
    device : str or torch.device

    Returns
    -------
    Decoder
        Maps latents (n, latent_dim) to images (n, C, H, W) in [0, 1]; attributes
        ``latent_dim``, ``image_size``, ``channels``.
    """
    return _network(path, "decoder", select_device(device) if isinstance(device, str) else device)


def load_encoder(path, device="cpu") -> Encoder:
    """The trained encoder of a generator file, in eval mode: images -> ``(mu, logvar)``."""
    return _network(path, "encoder", select_device(device) if isinstance(device, str) else device)


@torch.no_grad()
def encode(encoder: Encoder, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Posterior means (n, latent_dim) of images (n, H, W, C) in [0, 1]."""
    device = next(encoder.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.as_tensor(np.ascontiguousarray(images[start:start + batch_size].transpose(0, 3, 1, 2)),
                            dtype=torch.float32, device=device)
        out.append(encoder(x)[0].cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, encoder.latent_dim), np.float32)


@torch.no_grad()
def decode(decoder: Decoder, latents: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Images (n, H, W, C) in [0, 1] drawn by the decoder from latents (n, latent_dim)."""
    device = next(decoder.parameters()).device
    out = []
    for start in range(0, len(latents), batch_size):
        z = torch.as_tensor(np.asarray(latents[start:start + batch_size]), dtype=torch.float32, device=device)
        out.append(decoder(z).cpu().numpy().transpose(0, 2, 3, 1))
    if not out:
        return np.zeros((0, decoder.image_size, decoder.image_size, decoder.channels), np.float32)
    return np.concatenate(out).astype(np.float32)


# ------------------------------------------------------------------------------ training

def _bce(logits, target: float):
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def _run_epoch(nets, opts, data: torch.Tensor, gen: torch.Generator, batch_size: int,
               device, weights: dict, flip: bool) -> dict:
    """One pass over ``data`` (n, C, H, W); returns the epoch's mean losses."""
    encoder, decoder, disc = nets
    opt_ed, opt_d = opts
    for net in nets:
        net.train()
    n = len(data)
    perm = torch.randperm(n, generator=gen)
    starts = [s for s in range(0, n, batch_size) if min(n, s + batch_size) - s >= 2]  # BN needs 2
    sums = dict.fromkeys(("pixel", "feature", "kl", "gan_generator", "discriminator", "d_real", "d_fake"), 0.0)
    n_pix = data[0].numel()
    for start in starts:
        idx = perm[start:start + batch_size]
        x = data[idx]
        # All noise drawn on CPU from the one generator: identical on CPU and GPU runs.
        if flip:
            flips = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(flips[:, None, None, None], x.flip(3), x)
        eps = torch.randn(len(idx), encoder.latent_dim, generator=gen)
        z_prior = torch.randn(len(idx), encoder.latent_dim, generator=gen)
        x, eps, z_prior = x.to(device), eps.to(device), z_prior.to(device)

        # Encoder + decoder step; the discriminator is frozen (it is only a loss here).
        disc.requires_grad_(False)
        mu, logvar = encoder(x)
        z = mu + eps * torch.exp(0.5 * logvar)
        x_rec = decoder(z)
        x_gen = decoder(z_prior)
        with torch.no_grad():
            _, h_real = disc(x)
        logits, hidden = disc(torch.cat([x_rec, x_gen]))
        h_rec = hidden[:len(x)]
        pixel = F.mse_loss(x_rec, x)
        feature = F.mse_loss(h_rec, h_real)
        kl = -0.5 * torch.mean(torch.sum(1 + logvar - mu ** 2 - logvar.exp(), dim=1)) / n_pix
        gan_g = _bce(logits, 1.0)
        loss = pixel + weights["feature"] * feature + weights["kl"] * kl + weights["adv"] * gan_g
        opt_ed.zero_grad(set_to_none=True)
        loss.backward()
        opt_ed.step()
        disc.requires_grad_(True)

        # Discriminator step: real vs reconstructed and sampled images.
        d_logits, _ = disc(torch.cat([x, x_rec.detach(), x_gen.detach()]))
        d_real, d_fake = d_logits[:len(x)], d_logits[len(x):]
        loss_d = _bce(d_real, 1.0) + _bce(d_fake, 0.0)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        for key, value in (("pixel", pixel), ("feature", feature), ("kl", kl), ("gan_generator", gan_g),
                           ("discriminator", loss_d), ("d_real", torch.sigmoid(d_real).mean()),
                           ("d_fake", torch.sigmoid(d_fake).mean())):
            sums[key] += float(value.detach())
    return {k: v / max(1, len(starts)) for k, v in sums.items()}


def write_curves(history: Sequence[dict], path) -> None:
    """Write the per-epoch losses as a TSV (columns :data:`CURVE_COLUMNS`)."""
    pd.DataFrame(list(history), columns=list(CURVE_COLUMNS)).to_csv(path, sep="\t", index=False)


def train_vaegan(image_paths: list, out_path, *, image_size: int, channels: int, latent_dim: int,
                 epochs: int, batch_size: int, lr: float, seed: int, device="auto",
                 checkpoint_every: int = 1, resume: bool = True, curves_path=None,
                 base_channels: int = 32, kl_weight: float = 0.01, feature_weight: float = 0.1,
                 adv_weight: float = 0.001, flip: bool = True) -> Path:
    """Train the VAE-GAN on images and write the generator file.

    Parameters
    ----------
    image_paths : list of path
        Training images (any size; centre-cropped and resized to ``image_size``).
    out_path : path
        The generator file (``torch.save`` of a dict with ``format``, ``config``,
        ``encoder``, ``decoder``, ``discriminator``, ``history``). The checkpoint is
        ``<out_path>.ckpt`` beside it; it is kept after training so that a longer run
        (more ``epochs``) continues from it.
    image_size : int
        Side in pixels (4 * 2**k: 8, 16, 32, 64, ...).
    channels : {1, 3}
    latent_dim : int
    epochs : int
        Total epochs (a resumed run trains only the missing ones).
    batch_size : int
    lr : float
        Adam learning rate of all three networks (betas 0.5, 0.999 as in DCGAN).
    seed : int
    device : str
        ``"auto"`` takes a GPU when one is visible (see :func:`fmrirecon.torchkit.select_device`).
    checkpoint_every : int
        Epochs between checkpoints.
    resume : bool
        Continue from ``<out_path>.ckpt`` when it exists and was made with the same data
        and settings; otherwise (or when False) train from scratch.
    curves_path : path, optional
        TSV of the losses per epoch (columns :data:`CURVE_COLUMNS`), rewritten at every
        checkpoint.
    base_channels : int
        Width of the first convolution (doubles per stage, capped at 8x).
    kl_weight, feature_weight, adv_weight : float
        Loss weights relative to the pixel MSE (see the module docstring).
    flip : bool
        Random horizontal flips (faces are roughly symmetric).

    Returns
    -------
    Path
        ``out_path``.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_path.with_name(out_path.name + ".ckpt")
    if len(image_paths) < 2:
        raise ValueError(f"train_vaegan: need at least 2 training images, got {len(image_paths)}")
    if epochs < 0 or batch_size < 2 or checkpoint_every < 1:
        raise ValueError("train_vaegan: need epochs >= 0, batch_size >= 2, checkpoint_every >= 1")
    device = select_device(device)
    config = dict(image_size=int(image_size), channels=int(channels), latent_dim=int(latent_dim),
                  base_channels=int(base_channels))
    weights = dict(kl=float(kl_weight), feature=float(feature_weight), adv=float(adv_weight))
    # What must match for a checkpoint to be continued (everything but the epoch count).
    signature = dict(config, weights=weights, batch_size=int(batch_size), lr=float(lr), seed=int(seed),
                     flip=bool(flip), images=[str(p) for p in image_paths])

    log.info("loading %d training images at %d px, %d channel(s)", len(image_paths), image_size, channels)
    images = load_images(list(image_paths), image_size, channels)
    data = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))

    seed_everything(seed)
    nets = build_networks(**config)
    for net in nets:
        net.to(device)
    encoder, decoder, disc = nets
    opt_ed = torch.optim.Adam(list(encoder.parameters()) + list(decoder.parameters()), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(int(seed))
    history, start_epoch = [], 0

    ckpt = load_checkpoint(ckpt_path, signature, key="signature", device=device) if resume else None
    if ckpt is not None and "generator" not in ckpt["rng"]:
        log.warning("%s: written before the shared torch kit; training from scratch", ckpt_path)
        ckpt = None
    if ckpt is not None:
        for net, key in zip(nets, ("encoder", "decoder", "discriminator")):
            net.load_state_dict(ckpt[key])
        opt_ed.load_state_dict(ckpt["opt_ed"])
        opt_d.load_state_dict(ckpt["opt_d"])
        set_rng_states(ckpt["rng"], gen)
        history, start_epoch = list(ckpt["history"]), int(ckpt["epoch"])
        log.info("resuming from %s at epoch %d of %d", ckpt_path, start_epoch, epochs)

    def save_checkpoint(epoch):
        atomic_save({"signature": signature, "epoch": epoch, "history": history,
                      "encoder": encoder.state_dict(), "decoder": decoder.state_dict(),
                      "discriminator": disc.state_dict(), "opt_ed": opt_ed.state_dict(),
                      "opt_d": opt_d.state_dict(), "rng": rng_states(gen)}, ckpt_path)
        if curves_path is not None:
            write_curves(history, curves_path)

    bar = tqdm(range(start_epoch, epochs), initial=start_epoch, total=epochs, desc="VAE-GAN",
               unit="epoch", mininterval=5.0)
    for epoch in bar:
        t0 = time.perf_counter()
        losses = _run_epoch(nets, (opt_ed, opt_d), data, gen, batch_size, device, weights, flip)
        history.append({"epoch": epoch + 1, **losses, "seconds": round(time.perf_counter() - t0, 2)})
        bar.set_postfix(pixel=f"{losses['pixel']:.4f}", d_real=f"{losses['d_real']:.2f}",
                        d_fake=f"{losses['d_fake']:.2f}")
        log.info("epoch %d/%d: %s", epoch + 1, epochs,
                 ", ".join(f"{k}={v:.4g}" for k, v in losses.items()))
        if (epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs:
            save_checkpoint(epoch + 1)
    bar.close()
    if curves_path is not None:
        write_curves(history, curves_path)

    atomic_save({"format": FORMAT, "version": FORMAT_VERSION, "config": config,
                  "encoder": {k: v.cpu() for k, v in encoder.state_dict().items()},
                  "decoder": {k: v.cpu() for k, v in decoder.state_dict().items()},
                  "discriminator": {k: v.cpu() for k, v in disc.state_dict().items()},
                  "epochs": len(history), "seed": int(seed), "n_images": len(image_paths),
                  "history": history}, out_path)
    log.info("wrote %s (%d epochs on %d images)", out_path, len(history), len(image_paths))
    return out_path


# ------------------------------------------------------------------ the workflow's step

_IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def training_image_paths(stimuli_dir=None, folders: Sequence = ()) -> list[Path]:
    """The generator's training images: training stimuli plus unpaired image folders.

    Parameters
    ----------
    stimuli_dir : path, optional
        A BIDS ``stimuli/`` folder. With a ``stimuli.tsv`` that has a ``split`` column,
        only ``train`` rows are used, so the test images stay unseen by the generator;
        otherwise every image of the folder is used.
    folders : sequence of path
        Image folders (``images/`` plus an optional ``labels.tsv`` whose first column
        ``file`` is relative to the folder). Images that some stimulus was drawn from
        (``stimuli.tsv`` columns ``family`` = folder name and ``source_file``) are left
        out: test sources must stay held out, and training sources are already in.

    Returns
    -------
    list of Path
    """
    from ..stimuli import read_stimuli_table, stimulus_sources
    from ..simulate.stimuli import read_folder

    paths, sources = [], set()
    if stimuli_dir is not None:
        stimuli_dir = Path(stimuli_dir)
        table_path = stimuli_dir / "stimuli.tsv"
        table = read_stimuli_table(stimuli_dir)
        if table is not None:
            if "stim_file" not in table:
                raise ValueError(f"{table_path}: no stim_file column")
            sources = stimulus_sources(table)
            if "split" in table:
                table = table[table["split"] == "train"]
            else:
                log.warning("%s: no split column; the generator trains on every stimulus, test included",
                            table_path)
            paths += [stimuli_dir / str(f) for f in table["stim_file"]]
        else:
            log.warning("%s: no stimuli.tsv; the generator trains on every stimulus, test included",
                        stimuli_dir)
            paths += sorted(p for p in stimuli_dir.rglob("*") if p.suffix.lower() in _IMAGE_EXTS)
    for folder in folders:
        folder = Path(folder)
        table = read_folder(folder)
        keep = [f for f in table["file"] if (folder.name, f) not in sources]
        log.info("%s: %d images (%d left out as stimulus sources)", folder, len(keep), len(table) - len(keep))
        paths += [folder / f for f in keep]
    if not paths:
        raise ValueError("no training images for the generator (no stimuli and no train_folder)")
    return paths


def train_generator(stimuli_dir, folders, settings: dict, images: dict, seed: int,
                    out_model, out_curves) -> Path:
    """Train the generator of the ``latent`` method from the workflow's settings.

    Parameters
    ----------
    stimuli_dir : path or None
        The BIDS ``stimuli/`` folder (see :func:`training_image_paths`).
    folders : sequence of path
        Extra unpaired image folders (the config's ``generator.train_folder``).
    settings : dict
        The config's ``generator`` section: ``latent_dim`` (1024), ``epochs`` (30),
        ``batch_size`` (64), ``lr`` (2e-4), ``device`` ("auto"), ``checkpoint_every`` (1),
        ``base_channels`` (32), ``kl_weight``, ``feature_weight``, ``adv_weight``, ``flip``.
    images : dict
        The config's ``images`` section (``size``, ``channels``).
    seed : int
    out_model, out_curves : path
    """
    keys = ("base_channels", "kl_weight", "feature_weight", "adv_weight", "flip")
    extra = {k: settings[k] for k in keys if k in settings}
    paths = training_image_paths(stimuli_dir, folders)
    size = generator_side(images["size"])
    if size != images["size"]:
        log.info("the generator works at %d px (4 * 2**k); the methods resize its %d px images",
                 size, images["size"])
    return train_vaegan(
        paths, out_model, image_size=size, channels=images["channels"],
        latent_dim=settings.get("latent_dim", 1024), epochs=settings.get("epochs", 30),
        batch_size=settings.get("batch_size", 64), lr=settings.get("lr", 2e-4), seed=seed,
        device=settings.get("device", "auto"), checkpoint_every=settings.get("checkpoint_every", 1),
        resume=True, curves_path=out_curves, **extra)
