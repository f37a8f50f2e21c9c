"""Fixed image-feature models an encoder's linear read-out can sit on.

An encoding model predicts each voxel from image features. Early visual voxels are
best predicted by local luminance and contrast (Kay et al. 2008's Gabor-energy model),
not by the deep layers of a network trained on other images; higher areas by deep
features. Each backbone here maps images (n, C, S, S) in [0, 1] to named feature maps,
with the interface of :class:`fmrirecon.features.FeatureExtractor` (``layers``,
``layer_shapes``, called on a batch, frozen), so that
:class:`fmrirecon.methods.selfsup.BackboneEncoder` reads any of them:

- ``pixel``: the pixels themselves (a receptive-field model on luminance);
- ``gabor``: phase-invariant Gabor energy, 4 orientations x 2 spatial frequencies, on
  the grey-level image, pooled over 2 x 2 pixels;
- ``perceptual``: hidden layers of the perceptual network (built by the method).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

#: Backbones an encoder may be built on (``perceptual`` is the method's own network).
BACKBONES = ("pixel", "gabor", "perceptual")


class PixelBackbone(nn.Module):
    """The image itself as one feature map, ``pixels`` (C, S, S)."""

    def __init__(self, image_size: int, channels: int):
        super().__init__()
        self.layers = ["pixels"]
        self.shape = (channels, image_size, image_size)
        self.provenance = "pixels"

    def layer_shapes(self) -> dict:
        return {"pixels": self.shape}

    def forward(self, x):
        return {"pixels": x}


def gabor_bank(wavelengths=(3.0, 6.0), n_orientations: int = 4) -> torch.Tensor:
    """Quadrature pairs of Gabor filters, (2 * n_filters, 1, k, k): even then odd.

    The envelope's sd is half the wavelength (about one octave of bandwidth); the even
    filters have zero mean, so uniform regions give no energy.
    """
    filters = []
    size = int(2 * math.ceil(max(wavelengths)) + 1)
    yy, xx = np.mgrid[:size, :size] - size // 2
    for lam in wavelengths:
        sd = 0.5 * lam
        envelope = np.exp(-(xx ** 2 + yy ** 2) / (2 * sd ** 2))
        for k in range(n_orientations):
            theta = math.pi * k / n_orientations
            u = xx * math.cos(theta) + yy * math.sin(theta)
            even = envelope * np.cos(2 * math.pi * u / lam)
            even -= envelope * even.sum() / envelope.sum()
            odd = envelope * np.sin(2 * math.pi * u / lam)
            filters.append((even / np.abs(even).sum(), odd / np.abs(odd).sum()))
    bank = [f[0] for f in filters] + [f[1] for f in filters]
    return torch.tensor(np.stack(bank)[:, None], dtype=torch.float32)


class GaborBackbone(nn.Module):
    """Phase-invariant Gabor energy (n_filters, S/2, S/2), as ``gabor``."""

    def __init__(self, image_size: int, channels: int, wavelengths=(3.0, 6.0),
                 n_orientations: int = 4):
        super().__init__()
        self.register_buffer("bank", gabor_bank(wavelengths, n_orientations))
        self.n_filters = len(wavelengths) * n_orientations
        self.layers = ["gabor"]
        self.side = image_size // 2
        self.provenance = (f"Gabor energy, {n_orientations} orientations x wavelengths "
                           f"{', '.join(f'{w:g}' for w in wavelengths)} px")

    def layer_shapes(self) -> dict:
        return {"gabor": (self.n_filters, self.side, self.side)}

    def forward(self, x):
        grey = x.mean(1, keepdim=True)
        out = F.conv2d(grey, self.bank, padding=self.bank.shape[-1] // 2)
        even, odd = out[:, :self.n_filters], out[:, self.n_filters:]
        energy = torch.sqrt(even ** 2 + odd ** 2 + 1e-8)
        return {"gabor": F.adaptive_avg_pool2d(energy, self.side)}


def build_backbone(name: str, image_size: int, channels: int, perceptual=None) -> nn.Module:
    """The backbone ``name`` (see :data:`BACKBONES`); ``perceptual`` is a callable
    returning the method's perceptual network on its encoder layers."""
    if name == "pixel":
        return PixelBackbone(image_size, channels)
    if name == "gabor":
        return GaborBackbone(image_size, channels)
    if name == "perceptual":
        return perceptual()
    raise ValueError(f"encoder backbone {name!r}: expected one of {', '.join(BACKBONES)}")
