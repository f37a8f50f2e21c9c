"""Losses of the self-supervised method, and the SNR weights of its voxel loss."""

from __future__ import annotations

import hashlib

import numpy as np


def total_variation(images):
    """Mean absolute difference of neighbouring pixels (n, C, H, W) -> scalar."""
    dy = (images[:, :, 1:, :] - images[:, :, :-1, :]).abs().mean()
    dx = (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().mean()
    return dx + dy


def _feature_corr_loss(a, b):
    """1 - Pearson r of each sample's flattened features, averaged over samples."""
    a = a.flatten(1)
    b = b.flatten(1)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    r = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-8)
    return (1 - r).mean()


def voxel_loss(pred, target, weights, cosine_weight: float = 0.5):
    """SNR-weighted MSE plus ``cosine_weight`` * (1 - weighted cosine) per sample.

    ``weights`` (V,) has mean 1; voxels without signal get ~0 and are ignored.
    """
    mse = ((pred - target) ** 2 * weights).mean()
    if cosine_weight == 0:
        return mse
    sw = weights.sqrt()
    p, t = pred * sw, target * sw
    cos = (p * t).sum(1) / (p.norm(dim=1) * t.norm(dim=1) + 1e-8)
    return mse + cosine_weight * (1 - cos).mean()


class ImageLoss:
    """Pixel MSE + perceptual (deep-feature correlation) + total variation.

    Parameters
    ----------
    extractor : torch.nn.Module or None
        A :class:`fmrirecon.features.FeatureExtractor`; None disables the perceptual term.
    pixel, perceptual, tv : float
        Weights of the terms.
    """

    def __init__(self, extractor, pixel: float, perceptual: float, tv: float):
        self.extractor = extractor
        self.pixel, self.perceptual, self.tv = pixel, perceptual, tv

    def __call__(self, pred, target):
        loss = self.pixel * ((pred - target) ** 2).mean()
        if self.perceptual and self.extractor is not None:
            fp, ft = self.extractor(pred), self.extractor(target)
            per = sum(_feature_corr_loss(fp[k], ft[k].detach()) for k in fp) / len(fp)
            loss = loss + self.perceptual * per
        if self.tv:
            loss = loss + self.tv * total_variation(pred)
        return loss


def snr_weights(betas: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Per-voxel weights from the training images shown more than once.

    The NSD noise ceiling for single trials (:func:`fmrirecon.reliability.noise_ceiling`
    with ``n_average=1``) is the fraction of a voxel's variance that is signal; weights
    are that fraction (plus 1e-3) scaled to mean 1. Uniform weights when fewer than 3
    images repeat.
    """
    from ...reliability import MIN_REPEATED_STIMULI, noise_ceiling

    ids = np.array([hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest() for im in images])
    _, counts = np.unique(ids, return_counts=True)
    if (counts >= 2).sum() < MIN_REPEATED_STIMULI:
        return np.ones(betas.shape[1], dtype=np.float32)
    frac = np.nan_to_num(noise_ceiling(betas, ids, n_average=1) / 100.0, nan=0.0)
    w = frac + 1e-3
    return (w / w.mean()).astype(np.float32)

