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
    device : str
        Where the ridge solver runs (``"auto"``: a GPU when visible).
    seed : int
    """

    name = "pca"

    #: Components kept, chosen on held-out training pairs (:mod:`fmrirecon.validation`).
    VALIDATION_SEARCH = {"n_components": [5, 10, 20, 50]}

    @classmethod
    def validation_fit_settings(cls, settings, search):
        """One fit with the most components searched: fewer are its truncations."""
        most = max(search.get("n_components", [0]))
        return {**settings, "n_components": max(most, settings.get("n_components", 50))}

    def __init__(self, *, n_components: int = 50, alphas=None, n_folds: int = 5,
                 device: str = "auto", seed: int = 0, **params):
        super().__init__(seed=seed, **params)
        self.n_components = n_components
        self.alphas = DEFAULT_ALPHAS if alphas is None else np.asarray(alphas)
        self.n_folds = n_folds
        self.device = device

    def fit(self, betas, images, groups=None):
        """Fit PCA on the training images and the ridge map from ``betas`` to it."""
        self.image_shape_ = images.shape[1:]
        pixels = images.reshape(len(images), -1)
        n_components = min(self.n_components, len(images) - 1, pixels.shape[1])
        self.pca_ = PCA(n_components=n_components, random_state=self.seed).fit(pixels)
        targets = self.pca_.transform(pixels)
        self.decoder_ = RidgeDecoder(self.alphas, self.n_folds, device=getattr(self, "device", "auto"),
                                     seed=self.seed)
        self.decoder_.fit(betas, targets, groups=groups)
        return self

    def encode_targets(self, images):
        """PCA coefficients of ``images`` (n, H, W, C), shape (n, n_components): the
        true targets of the ``ident2_latent`` metric (the baseline's own space)."""
        return self.pca_.transform(np.asarray(images).reshape(len(images), -1))

    def decode(self, betas):
        """Decoded PCA coefficients, shape (n, n_components)."""
        return self.decoder_.predict(betas)

    def reconstruct(self, betas, n_components: int | None = None):
        """Images drawn by the inverse PCA of the decoded coefficients (the first
        ``n_components`` of them when given: the others set to 0)."""
        coefficients = self.decode(betas)
        if n_components is not None:
            coefficients = coefficients.copy()
            coefficients[:, int(n_components):] = 0
        pixels = self.pca_.inverse_transform(coefficients)
        return np.clip(pixels, 0, 1).reshape(len(betas), *self.image_shape_).astype(np.float32)

    def reconstruct_with(self, betas, overrides):
        """Fewer components are a truncation of this fit (each has its own ridge map)."""
        if set(overrides) - {"n_components"}:
            return None
        return self.reconstruct(betas, overrides.get("n_components"))
