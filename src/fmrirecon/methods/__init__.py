"""Reconstruction methods: one module each, all behind :class:`ReconstructionMethod`.

A method registers itself by name in :data:`METHODS`; the workflow instantiates it
with the config's ``methods.<name>`` section. Adding a method means adding a module and
one line here.
"""

from __future__ import annotations

import importlib

from .base import EvaluationData, ReconstructionMethod, SettingsError

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


def check_method(name: str, settings: dict | None) -> type[ReconstructionMethod]:
    """The class of the config entry ``methods.<name>``, its settings checked.

    Raises
    ------
    ValueError
        For an unknown implementation; :class:`SettingsError` (one line naming the key
        and its closest match) for an unknown setting.
    """
    cls = get_method(implementation(name, settings))
    cls.check_settings(settings, where=f"config['methods']['{name}']")
    return cls


def input_files(name: str, settings: dict | None, locations: dict) -> dict:
    """Files the config entry ``methods.<name>`` needs beyond the betas, ``{parameter:
    path}`` (see :meth:`ReconstructionMethod.input_files`)."""
    settings = settings or {}
    return get_method(implementation(name, settings)).input_files(settings, locations)


def network_training(methods: dict, network: str) -> dict:
    """The ``train_network`` settings of the config entries that train ``network``.

    Every entry whose method trains a network (:meth:`ReconstructionMethod.trained_network`:
    a ``dir`` entry's ``network``, a ``selfsup`` entry's ``perceptual_network``) shares
    one checkpoint per network, so they must agree on its training settings.

    Parameters
    ----------
    methods : dict
        The config's ``methods`` section.
    network : str
        Network name (``smallconv``).
    """
    found = {}
    for name, settings in methods.items():
        settings = settings or {}
        trained = get_method(implementation(name, settings)).trained_network(settings)
        if trained and trained[0] == network:
            found[name] = trained[1]
    if not found:
        raise ValueError(f"config['methods']: no method trains network {network!r}")
    first = next(iter(found))
    differ = [name for name, training in found.items() if training != found[first]]
    if differ:
        raise ValueError(f"config['methods']: {first} and {', '.join(differ)} train network "
                         f"{network!r} with different train_network settings; they share one "
                         f"checkpoint, so give them the same settings")
    return found[first]


__all__ = ["METHODS", "EvaluationData", "ReconstructionMethod", "SettingsError", "check_method",
           "get_method", "implementation", "input_files", "network_training"]
