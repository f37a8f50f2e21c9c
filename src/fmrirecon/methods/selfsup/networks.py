"""The encoder and decoder networks of the self-supervised method."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    # GroupNorm, not BatchNorm: batch statistics would differ between the paired
    # and unpaired batches and make the cycles see a different network.
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
                         nn.GroupNorm(math.gcd(8, cout), cout), nn.ReLU())


class Encoder(nn.Module):
    """Image (n, C, S, S) in [0, 1] -> standardised voxels (n, V).

    Convolutions down to S/2 (plus the 2 x 2 pooled pixels), then a space-feature
    separable readout (Beliy et al.): each voxel has a spatial map over the S/2 x S/2
    grid and a weight per feature.

    Parameters
    ----------
    image_size, channels, n_voxels : int
    width : int
        Channels of the first conv layer (doubled in the others).
    """

    def __init__(self, image_size: int, channels: int, n_voxels: int, width: int):
        super().__init__()
        self.features = nn.Sequential(_block(channels, width), _block(width, 2 * width, 2),
                                      _block(2 * width, 2 * width))
        self.pixels = nn.AvgPool2d(2)
        side, n_feat = image_size // 2, 2 * width + channels
        self.space = nn.Parameter(torch.randn(n_voxels, side, side) / side)
        self.feature = nn.Parameter(torch.randn(n_voxels, n_feat) / math.sqrt(n_feat))
        self.bias = nn.Parameter(torch.zeros(n_voxels))

    def forward(self, x):
        # The pooled pixels beside the conv features give a linear path: with few
        # pairs, early visual voxels are learnt faster as receptive fields on pixels.
        f = torch.cat([self.features(x), self.pixels(x)], 1)  # (n, F, s, s)
        pooled = torch.einsum("nfhw,vhw->nvf", f, self.space)  # (n, V, F)
        return (pooled * self.feature).sum(-1) + self.bias


class Decoder(nn.Module):
    """Standardised voxels (n, V) -> image (n, C, S, S) in [0, 1].

    A linear map to a (2 width, S/4, S/4) feature map, then two upsampling conv blocks.
    """

    def __init__(self, image_size: int, channels: int, n_voxels: int, width: int):
        super().__init__()
        self.shape = (2 * width, image_size // 4, image_size // 4)
        self.fc = nn.Linear(n_voxels, int(np.prod(self.shape)))
        self.body = nn.Sequential(
            nn.GroupNorm(math.gcd(8, 2 * width), 2 * width), nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="nearest"), _block(2 * width, width),
            nn.Upsample(scale_factor=2, mode="nearest"), _block(width, width),
            nn.Conv2d(width, channels, 3, padding=1), nn.Sigmoid(),
        )

    def latent(self, r):
        """The linear layer's output (n, 2 width (S/4)^2): the decoded target space."""
        return self.fc(r)

    def forward(self, r):
        return self.body(self.fc(r).view(len(r), *self.shape))


class BackboneEncoder(nn.Module):
    """Image (n, C, S, S) in [0, 1] -> standardised voxels (n, V) through a frozen network.

    A linear read-out of the flattened layers of ``backbone`` plus the 2 x 2 pooled
    pixels (as in :class:`Encoder`), fitted in closed form by :meth:`fit`: ridge
    regression with a penalty per voxel chosen by cross-validation (the shared
    :class:`~fmrirecon.decoding.RidgeDecoder`), the usual voxel-wise encoding model.
    With a few hundred noisy pairs this read-out, fitted by gradient descent, fits the
    pairs' noise within a few epochs; the ridge penalty is what keeps it general.

    Parameters
    ----------
    backbone : fmrirecon.features.FeatureExtractor
        Frozen; its ``layers`` are read.
    image_size, channels, n_voxels : int
    """

    def __init__(self, backbone, image_size: int, channels: int, n_voxels: int):
        super().__init__()
        self.backbone = backbone
        self.backbone.requires_grad_(False)
        self.names = list(backbone.layers)
        self.pixels = nn.AvgPool2d(2)
        shapes = backbone.layer_shapes()
        n_feat = sum(int(np.prod(shapes[name])) for name in self.names) \
            + channels * (image_size // 2) ** 2
        self.register_buffer("mean", torch.zeros(n_feat))
        self.register_buffer("scale", torch.ones(n_feat))
        self.register_buffer("weight", torch.zeros(n_feat, n_voxels))
        self.register_buffer("bias", torch.zeros(n_voxels))

    def features(self, x):
        """The read-out's input: flattened layers and pooled pixels, (n, n_features)."""
        out = self.backbone(x)
        return torch.cat([out[name].flatten(1) for name in self.names]
                         + [self.pixels(x).flatten(1)], 1)

    @torch.no_grad()
    def fit(self, images: torch.Tensor, z: np.ndarray, groups=None, seed: int = 0,
            batch: int = 256):
        """Fit the read-out on ``images`` (n, C, S, S) and standardised voxels ``z`` (n, V).

        ``groups`` (e.g. runs) keep a group's trials in one cross-validation fold.
        Returns the :class:`~fmrirecon.decoding.RidgeDecoder` (``best_alphas_``,
        ``cv_scores_``).
        """
        from ...decoding import RidgeDecoder

        ridge = RidgeDecoder(alphas=ENCODER_ALPHAS, device=self.bias.device, seed=seed).fit(
            self.features_of(images, batch), z, groups)
        for name, value in (("mean", ridge.x_mean_), ("scale", ridge.x_scale_),
                            ("weight", ridge.coef_), ("bias", ridge.intercept_)):
            getattr(self, name).copy_(torch.from_numpy(np.asarray(value, dtype=np.float32)))
        return ridge

    @torch.no_grad()
    def features_of(self, images: torch.Tensor, batch: int = 256) -> np.ndarray:
        """:meth:`features` of ``images`` (n, C, S, S) in batches, as numpy."""
        return torch.cat([self.features(images[i:i + batch].to(self.bias.device)).cpu()
                          for i in range(0, len(images), batch)]).numpy()

    def forward(self, x):
        return (self.features(x) - self.mean) / self.scale @ self.weight + self.bias


#: Ridge penalties of the :class:`BackboneEncoder` read-out (tens of thousands of
#: standardised features from a few hundred images: larger than the decoders').
ENCODER_ALPHAS = np.logspace(0, 8, 17)

#: Hidden layers the ``perceptual`` encoder backbone reads by default.
BACKBONE_LAYERS = {"smallconv": ["relu2", "relu3", "relu4"]}



def build_encoder(image_size: int, channels: int, n_voxels: int, width: int,
                  backbone=None) -> nn.Module:
    """An :class:`Encoder`, or a :class:`BackboneEncoder` on a frozen ``backbone``
    (read-out weights from the global torch random state)."""
    if backbone is not None:
        return BackboneEncoder(backbone, image_size, channels, n_voxels)
    return Encoder(image_size, channels, n_voxels, width)


def build_decoder(image_size: int, channels: int, n_voxels: int, width: int) -> Decoder:
    """A :class:`Decoder` (weights from the global torch random state)."""
    return Decoder(image_size, channels, n_voxels, width)

