"""Plain pixel ridge: decode every pixel directly from the voxels.

The reference decoder of the reconstruction literature (e.g. Miyawaki et al. 2008's
single-scale linear decoders, Thirion et al. 2006): one ridge regression per pixel,
standardised voxels, no image prior. Unlike the PCA baseline it is not confined to
the span of the training images, so it can draw images unlike any training image.
"""

from __future__ import annotations

import numpy as np

from ..decoding import DEFAULT_ALPHAS, RidgeDecoder
from .base import ReconstructionMethod


class PixelRidgeReconstruction(ReconstructionMethod):
    """Ridge from voxels to pixels, one cross-validated penalty per pixel.

    Parameters
    ----------
    alphas : list of float, optional
        Ridge penalties searched (per pixel, by :class:`~fmrirecon.decoding.RidgeDecoder`).
    n_folds : int
        Cross-validation folds for the penalty (whole runs left out when given).
    device : str
        Where the ridge solver runs (``"auto"``: a GPU when visible).
    seed : int
    """

    name = "ridge"

    def __init__(self, *, alphas=None, n_folds: int = 5, device: str = "auto", seed: int = 0,
                 **params):
        super().__init__(seed=seed, **params)
        self.alphas = DEFAULT_ALPHAS if alphas is None else np.asarray(alphas)
        self.n_folds = n_folds
        self.device = device

    def fit(self, betas, images, groups=None):
        """Fit one ridge map per pixel (and channel) of ``images``."""
        self.image_shape_ = images.shape[1:]
        self.decoder_ = RidgeDecoder(self.alphas, self.n_folds, device=getattr(self, "device", "auto"),
                                     seed=self.seed)
        self.decoder_.fit(betas, images.reshape(len(images), -1), groups=groups)
        return self

    def decode(self, betas):
        """Decoded pixels, shape (n, H * W * C), not clipped."""
        return self.decoder_.predict(betas)

    def reconstruct(self, betas):
        """The decoded pixels clipped to [0, 1], shape (n, H, W, C)."""
        pixels = np.clip(self.decode(betas), 0, 1)
        return pixels.reshape(len(betas), *self.image_shape_).astype(np.float32)
