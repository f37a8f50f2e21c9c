"""Reconstruction methods: one module each, all behind :class:`ReconstructionMethod`.

A method registers itself by name in :data:`METHODS`; the workflow instantiates it
with the config's ``methods.<name>`` section. Adding a method means adding a module and
one line here.
"""

from __future__ import annotations

import importlib

from .base import EvaluationData, ReconstructionMethod

# name -> "module:Class", imported lazily so a method's heavy dependencies (torch)
# load only when it is used.
METHODS = {
    "pca": "fmrirecon.methods.pca:PCAReconstruction",
    "latent": "fmrirecon.methods.latent:LatentReconstruction",
    "selfsup": "fmrirecon.methods.selfsup:SelfSupervisedReconstruction",
    "dir": "fmrirecon.methods.dir:DeepImageReconstruction",
    "ridge": "fmrirecon.methods.ridge:PixelRidgeReconstruction",
}


def implementation(name: str, settings: dict | None) -> str:
    """The implementation a config entry ``methods.<name>`` runs.

    An entry may name its implementation with ``method:`` so that one implementation
    runs under several names with different settings (e.g. an ablation).
    """
    return (settings or {}).get("method", name)


def get_method(name: str) -> type[ReconstructionMethod]:
    """The class of the reconstruction method called ``name``."""
    try:
        module_name, class_name = METHODS[name].split(":")
    except KeyError:
        raise ValueError(
            f"unknown reconstruction method {name!r}; known: {', '.join(sorted(METHODS))}"
        ) from None
    return getattr(importlib.import_module(module_name), class_name)


__all__ = ["METHODS", "EvaluationData", "ReconstructionMethod", "get_method", "implementation"]
