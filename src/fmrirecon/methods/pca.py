"""Pixel-PCA baseline: decode the principal components of the stimulus pixels.

The baseline of VanRullen & Reddy (2019) and of most reconstruction papers: PCA on the
training images' pixels, a ridge map from voxels to the PCA coefficients, and the
inverse PCA transform of the decoded coefficients as the reconstruction.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA

from ..decoding import DEFAULT_ALPHAS, RidgeDecoder
from .base import ReconstructionMethod


class PCAReconstruction(ReconstructionMethod):
    """Ridge from voxels to pixel-PCA coefficients; the inverse PCA draws the image.

    Parameters
    ----------
    n_components : int
        PCA components kept (capped by the number of training images).
    alphas : list of float, optional
        Ridge penalties searched per component.
    n_folds : int
        Cross-validation folds for the penalty.
    seed : int
    """

    name = "pca"

    def __init__(self, *, n_components: int = 50, alphas=None, n_folds: int = 5,
                 seed: int = 0, **params):
        super().__init__(seed=seed, **params)
        self.n_components = n_components
        self.alphas = DEFAULT_ALPHAS if alphas is None else np.asarray(alphas)
        self.n_folds = n_folds

    def fit(self, betas, images, groups=None):
        """Fit PCA on the training images and the ridge map from ``betas`` to it."""
        self.image_shape_ = images.shape[1:]
        pixels = images.reshape(len(images), -1)
        n_components = min(self.n_components, len(images) - 1, pixels.shape[1])
        self.pca_ = PCA(n_components=n_components, random_state=self.seed).fit(pixels)
        targets = self.pca_.transform(pixels)
        self.decoder_ = RidgeDecoder(self.alphas, self.n_folds, seed=self.seed)
        self.decoder_.fit(betas, targets, groups=groups)
        return self

    def encode_targets(self, images):
        """PCA coefficients of ``images`` (n, H, W, C), shape (n, n_components): the
        true targets of the ``ident2_latent`` metric (the baseline's own space)."""
        return self.pca_.transform(np.asarray(images).reshape(len(images), -1))

    def decode(self, betas):
        """Decoded PCA coefficients, shape (n, n_components)."""
        return self.decoder_.predict(betas)

    def reconstruct(self, betas):
        """Images drawn by the inverse PCA of the decoded coefficients."""
        pixels = self.pca_.inverse_transform(self.decode(betas))
        return np.clip(pixels, 0, 1).reshape(len(betas), *self.image_shape_).astype(np.float32)
