"""Choosing the compute device and seeding torch, in one place for every method."""

from __future__ import annotations

import random

import numpy as np


def select_device(preference: str = "auto"):
    """The torch device to use: ``"auto"`` takes a CUDA GPU when one is visible.

    Parameters
    ----------
    preference : {"auto", "cpu", "cuda", "cuda:N"}
    """
    import torch

    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {preference!r} requested but no CUDA GPU is visible")
    return device


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch so that a config gives the same numbers."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
