"""Feature inversion: images (or a generator's latents) optimised to match features.

Every image of a batch is optimised at once (Adam, cosine-decayed step), under one of
two image priors: :class:`PixelPrior` (pixels, with total variation and jitter) or
:class:`GeneratorPrior` (the input of a deep generator network, with a Gaussian pull
toward the latents' start).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class PixelPrior:
    """Optimise pixels.

    Parameters
    ----------
    lr : float
        Adam step size (cosine-decayed to 1% of it).
    init : ndarray (n, H, W, C) or (H, W, C), optional
        Starting pixels (default: 0.5 plus small seeded noise).
    """

    lr: float = 0.05
    init: np.ndarray | None = None


@dataclass
class GeneratorPrior:
    """Optimise the latents of a deep generator network (Shen et al.'s DGN prior).

    Parameters
    ----------
    generator : callable
        Maps latents (n, d) to images (n, C', H', W') in [0, 1].
    lr : float
        Adam step size on the latents.
    weight : float
        Weight of the Gaussian prior on the latents, centred on their start: the mean
        squared distance of each latent from its starting value.
    init : ndarray, shape (n, d), optional
        Starting latents, and the centre of their prior (default: zeros, the
        generator's own prior).
    latent_dim : int, optional
        Latent size of ``generator`` (default: its ``latent_dim`` attribute).
    """

    generator: Callable
    lr: float = 0.05
    weight: float = 0.0
    init: np.ndarray | None = None
    latent_dim: int | None = None


def _fit_to_shape(images, height: int, width: int, channels: int):
    """Generator output (n, C', H', W') resized and channel-converted to (n, C, H, W)."""
    from torch.nn import functional as F

    if images.shape[1] != channels:
        if channels == 1:
            images = images.mean(1, keepdim=True)
        elif images.shape[1] == 1:
            images = images.expand(-1, channels, -1, -1)
        else:
            raise ValueError(f"generator gives {images.shape[1]} channels, images have {channels}")
    if images.shape[-2:] != (height, width):
        images = F.interpolate(images, size=(height, width), mode="bilinear",
                               align_corners=False, antialias=images.shape[-1] > width)
    return images


def _latent_dim(generator, latent_dim):
    from torch import nn

    if latent_dim:
        return int(latent_dim)
    if getattr(generator, "latent_dim", None):
        return int(generator.latent_dim)
    for module in generator.modules() if isinstance(generator, nn.Module) else []:
        if isinstance(module, nn.Linear):
            return module.in_features
    raise ValueError("generator: cannot tell its latent size; set latent_dim")


def _start(prior, n: int, image_shape, device, gen):
    """The optimised tensor, its step size, the image it draws, and its anchor."""
    import torch

    height, width, channels = image_shape
    if isinstance(prior, GeneratorPrior):
        generator = prior.generator
        if hasattr(generator, "requires_grad_"):
            generator.requires_grad_(False)
            generator.eval()
        d = _latent_dim(generator, prior.latent_dim)
        if prior.init is None:
            anchor = torch.zeros(n, d)
        else:
            anchor = torch.as_tensor(np.asarray(prior.init, dtype=np.float32))
            if anchor.shape != (n, d):
                raise ValueError(f"latent_init: shape {tuple(anchor.shape)}, expected {(n, d)}")
        anchor = anchor.to(device)
        param = anchor.clone().requires_grad_(True)
        return param, prior.lr, lambda: _fit_to_shape(generator(param).to(device), height, width,
                                                      channels), anchor
    if prior.init is None:
        start = 0.5 + 0.01 * torch.randn(n, channels, height, width, generator=gen)
    else:
        init = np.asarray(prior.init, dtype=np.float32)
        start = torch.from_numpy(np.broadcast_to(init, (n, height, width, channels)).copy())
        start = start.permute(0, 3, 1, 2)
    param = start.clamp(0, 1).to(device).requires_grad_(True)
    return param, prior.lr, lambda: param, None


def invert_features(targets: dict, extractor, image_shape: tuple[int, int, int],
                    prior: PixelPrior | GeneratorPrior | None = None, *,
                    units: dict | None = None, layer_weights: dict | None = None,
                    iterations: int = 200, tv_weight: float = 0.0, jitter: int = 0,
                    seed: int = 0, progress: bool = True) -> np.ndarray:
    """Images whose features match ``targets``: batched optimisation over all images.

    Parameters
    ----------
    targets : dict of str to ndarray, shape (n, n_units)
        Flattened features per layer (a subset of ``extractor.layers``), e.g. decoded.
    extractor : fmrirecon.features.FeatureExtractor
    image_shape : (H, W, C)
    prior : PixelPrior or GeneratorPrior, optional
        What is optimised (default ``PixelPrior()``).
    units : dict of str to ndarray of int, optional
        Which flattened units of each layer ``targets`` holds (all when absent).
    layer_weights : dict of str to float, optional
        Relative weight of each layer (default equal); normalised to sum to one. Each
        layer's squared error is divided by the squared norm of its target per image,
        so that layers of different size and scale count as weighted.
    iterations : int
    tv_weight : float
        Weight of the total-variation prior on the drawn image (mean squared neighbour
        difference).
    jitter : int
        Random shift (pixels, each axis) of the image at each iteration: a
        translation-robustness prior (Mahendran & Vedaldi 2015; Shen et al. 2019).
    seed : int
    progress : bool
        Show a tqdm bar on stderr.

    Returns
    -------
    ndarray, shape (n, H, W, C)
        float32 in [0, 1].
    """
    import torch
    from tqdm.auto import tqdm

    prior = PixelPrior() if prior is None else prior
    unknown = [name for name in targets if name not in extractor.layers]
    if unknown:
        raise ValueError(f"target layers {unknown} are not layers of the extractor {extractor.layers}")
    device = extractor.device
    names = list(targets)
    t = {name: torch.as_tensor(np.asarray(targets[name]), dtype=torch.float32, device=device)
         for name in names}
    n = len(t[names[0]])
    idx = {name: torch.as_tensor(units[name], device=device)
           for name in names if units is not None and units.get(name) is not None}
    raw = np.array([1.0 if layer_weights is None else float(layer_weights.get(name, 0.0))
                    for name in names])
    if raw.sum() <= 0 or np.any(raw < 0):
        raise ValueError(f"layer_weights: need non-negative weights with a positive sum, got {raw}")
    weights = dict(zip(names, raw / raw.sum()))
    norms = {name: (t[name] ** 2).sum(1).clamp_min(1e-8) for name in names}

    gen = torch.Generator(device="cpu").manual_seed(seed)
    param, step, draw, anchor = _start(prior, n, image_shape, device, gen)
    pixels = isinstance(prior, PixelPrior)
    opt = torch.optim.Adam([param], lr=step)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, iterations), eta_min=step * 0.01)
    bar = tqdm(range(iterations), desc="dir " + ("pixels" if pixels else "generator"),
               file=sys.stderr, disable=not progress, mininterval=5)
    for _ in bar:
        images = draw()
        shown = images
        if jitter:
            dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=gen).tolist()
            shown = torch.roll(images, shifts=(dy, dx), dims=(2, 3))
        feats = extractor(shown)
        loss_per_image = torch.zeros(n, device=device)
        for name in names:
            f = feats[name].flatten(1)
            if name in idx:
                f = f[:, idx[name]]
            loss_per_image = loss_per_image + weights[name] * ((f - t[name]) ** 2).sum(1) / norms[name]
        if tv_weight:
            tv = ((images[..., 1:, :] - images[..., :-1, :]) ** 2).flatten(1).mean(1) + \
                 ((images[..., :, 1:] - images[..., :, :-1]) ** 2).flatten(1).mean(1)
            loss_per_image = loss_per_image + tv_weight * tv
        if not pixels and prior.weight:
            loss_per_image = loss_per_image + prior.weight * ((param - anchor) ** 2).mean(1)
        # A sum, not a mean: each image's gradient does not depend on how many there are.
        loss = loss_per_image.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if pixels:
            with torch.no_grad():
                param.clamp_(0, 1)
        bar.set_postfix(loss=loss.item() / n, refresh=False)
    with torch.no_grad():
        out = draw().clamp(0, 1)
    return out.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)


class _torch_threads:
    """Set torch's CPU threads inside a block (no-op for None), restoring them after."""

    def __init__(self, threads: int | None):
        self.threads = threads

    def __enter__(self):
        import torch

        self.previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(int(self.threads))

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.previous)
