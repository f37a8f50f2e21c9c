"""The small torch kit every method shares: device, seeds, checkpoints, progress, tensors.

- :func:`select_device`: the device a setting names (``"auto"``: a CUDA GPU when one
  is visible), for every model and for the ridge solver;
- :func:`seed_everything`, :func:`rng_states` / :func:`set_rng_states`: every random
  state a training run draws from (python, numpy, torch CPU and CUDA, and the run's
  own ``torch.Generator``), so that a resumed run continues the same random stream;
- :func:`atomic_save` and :func:`load_checkpoint`: checkpoints written whole or not at
  all, read back only when they were made for the same run (a fingerprint);
- :func:`progress`: a tqdm bar on stderr, or a silent one;
- :func:`images_to_tensor` / :func:`tensor_to_images`: images (n, H, W, C) in numpy
  and (n, C, H, W) tensors, the one conversion every method makes.
"""

from __future__ import annotations

import logging
import os
import random
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def select_device(preference: str = "auto"):
    """The torch device to use: ``"auto"`` takes a CUDA GPU when one is visible.

    Parameters
    ----------
    preference : {"auto", "cpu", "cuda", "cuda:N"} or torch.device
    """
    import torch

    if isinstance(preference, torch.device):
        return preference
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


def rng_states(gen=None) -> dict:
    """Every random state of the process (and of ``gen``, a ``torch.Generator``)."""
    import torch

    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
              "python": random.getstate()}
    if gen is not None:
        states["generator"] = gen.get_state()
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict, gen=None) -> None:
    """Restore the states of :func:`rng_states` (``gen`` too when given)."""
    import torch

    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if gen is not None:
        gen.set_state(states["generator"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def atomic_save(obj, path: str | Path) -> None:
    """``torch.save`` to a temporary file, then rename: an interruption never leaves a
    truncated checkpoint behind."""
    import torch

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, fingerprint, key: str = "fingerprint", device="cpu"):
    """The checkpoint at ``path`` if it was written for ``fingerprint``, else None.

    A checkpoint of another run (other settings or data) cannot continue this one: it
    is ignored with a warning, and the run starts over (and overwrites it).
    """
    import torch

    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # noqa: BLE001 - torch raises many types for bad files
        raise ValueError(f"{path}: unreadable checkpoint ({err}); delete it to start over") from err
    if not isinstance(state, dict) or state.get(key) != fingerprint:
        log.warning("%s was written for other settings or data; starting over", path)
        return None
    return state


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix_str(self, s):
        pass

    def close(self):
        pass


def progress(enabled: bool, total: int, initial: int = 0, desc: str = "", unit: str = "epoch"):
    """A tqdm bar on stderr (or one that shows nothing when ``enabled`` is False)."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr,
                dynamic_ncols=True, mininterval=5.0)


def images_to_tensor(images: np.ndarray):
    """Images (n, H, W, C) -> a float32 tensor (n, C, H, W) (a copy, contiguous)."""
    import torch

    return torch.from_numpy(np.asarray(images, dtype=np.float32).transpose(0, 3, 1, 2).copy())


def tensor_to_images(x) -> np.ndarray:
    """A tensor or array (n, C, H, W) -> float32 numpy images (n, H, W, C)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32).transpose(0, 2, 3, 1)
