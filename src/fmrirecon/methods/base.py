"""The one interface every reconstruction method implements."""

from __future__ import annotations

import abc
import inspect
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from .settings import SettingsError, unknown_key_message, validation_settings


@dataclass
class EvaluationData:
    """What a method may use to compute its own metrics after reconstruction.

    Betas are restricted to the decoder's voxels; test (or imagery) betas are
    averaged over repetitions, one row per stimulus.
    """

    split: str
    train_betas: np.ndarray
    train_images: np.ndarray
    train_stim_files: np.ndarray
    test_betas: np.ndarray
    test_images: np.ndarray
    test_stim_files: np.ndarray
    stimuli: pd.DataFrame | None  # stimuli.tsv (stim_file + attributes), if the dataset has one
    noise_ceiling: np.ndarray | None
    seed: int = 0
    n_boot: int = 2000
    #: The method's reconstructions of ``test_betas`` when already drawn (the
    #: workflow's recon file): metrics use them instead of drawing again.
    recon: np.ndarray | None = None


class ReconstructionMethod(abc.ABC):
    """Fit on training betas and images; reconstruct images from test betas.

    Images are float arrays of shape (n, H, W, C) with values in [0, 1]; betas are
    arrays of shape (n, n_voxels). A method never sees test images.

    Parameters
    ----------
    seed : int
        Seed for every random choice the method makes.
    **params
        Method-specific settings, from the config's ``methods.<name>`` section: the
        keyword parameters of the subclass's constructor (:meth:`setting_defaults`).
        An unknown key raises :class:`SettingsError` naming it and its closest match.
    """

    name: ClassVar[str]

    #: The method learns from betas without their images (the test betas, never the
    #: test images); the workflow then passes them to ``fit`` as ``unpaired_betas``.
    uses_unpaired_betas: ClassVar[bool] = False

    #: The method reads an unpaired image folder; the workflow then passes the
    #: ``(family, source_file)`` of the study's stimuli to ``fit`` as
    #: ``unpaired_exclude`` (:func:`fmrirecon.stimuli.stimulus_sources`), to leave out.
    uses_unpaired_images: ClassVar[bool] = False

    #: The method trains iteratively and accepts a ``checkpoint_dir`` parameter; the
    #: workflow gives each subject its own, so an interrupted fit resumes.
    checkpointed: ClassVar[bool] = False

    #: Keys of a method's config section that the workflow reads rather than the
    #: method (``method:`` names the implementation of an alias).
    WORKFLOW_KEYS: ClassVar[tuple] = ("method",)

    def __init__(self, *, seed: int = 0, **params):
        # Every setting a subclass knows is a keyword of its own constructor: whatever
        # reaches here is unknown (a typo must not fall back to a default silently).
        for key in params:
            raise SettingsError(unknown_key_message(f"methods.{self.name}", key,
                                                    self.setting_defaults()))
        self.seed = seed

    @classmethod
    def setting_defaults(cls) -> dict:
        """Every setting of the method with its default: its keyword-only constructor
        parameters besides ``seed`` (methods with a settings table override this)."""
        return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "seed"}

    #: The declared validation search of the method's training choices,
    #: ``{setting: [values]}`` (see :mod:`fmrirecon.validation`); an entry's
    #: ``validation.search`` replaces it.
    VALIDATION_SEARCH: ClassVar[dict] = {}

    @classmethod
    def validation_search(cls, settings: dict) -> dict:
        """The declared search for these settings (default :attr:`VALIDATION_SEARCH`)."""
        return dict(cls.VALIDATION_SEARCH)

    @classmethod
    def ablation(cls, settings: dict) -> dict | None:
        """Settings overrides of the method's own ablation (e.g. no cycles), or None.

        The validation keeps the full model only if it beats this on held-out pairs.
        """
        return None

    @classmethod
    def validation_fit_settings(cls, settings: dict, search: dict) -> dict:
        """Settings of the one validation fit that serves every candidate of ``search``
        (default: ``settings``; e.g. selfsup also trains its ablation decoder)."""
        return dict(settings)

    def reconstruct_with(self, betas: np.ndarray, overrides: dict) -> np.ndarray | None:
        """Images from ``betas`` as this model would draw them with ``overrides``, or
        None when that needs another fit (the validation then refits)."""
        return self.reconstruct(betas) if not overrides else None

    @classmethod
    def input_files(cls, settings: dict, locations: dict) -> dict:
        """Files a config entry with ``settings`` needs beyond the betas, ``{parameter: path}``.

        The workflow makes them inputs of its jobs and passes them as the parameters of
        the same name, so each method says what it needs and no rule knows a method.
        ``locations`` holds the workflow's places: ``features`` (folder of locally
        trained networks), ``generator`` (the generator file), ``unpaired_sets`` and
        ``unpaired_root`` (the config's procedural image sets and their folder). By
        default, settings naming a procedural set (``unpaired:<name>``).
        """
        from ..procedural import procedural_settings

        return procedural_settings(settings, locations["unpaired_sets"], locations["unpaired_root"])

    @classmethod
    def trained_network(cls, settings: dict) -> tuple[str, dict] | None:
        """``(network, train_network settings)`` of a network the workflow trains for
        this entry (the rule ``train_feature_network``), or None."""
        return None

    @classmethod
    def check_settings(cls, settings: dict | None, where: str | None = None) -> None:
        """Raise :class:`SettingsError` naming the first unknown key of ``settings``.

        ``where`` names the config section in the message (default ``methods.<name>``).
        The workflow calls this for every ``methods`` entry before any job runs.
        """
        where = where or f"methods.{cls.name}"
        known = cls.setting_defaults()
        for key, value in (settings or {}).items():
            if key == "validation":
                try:
                    search = validation_settings(value, f"{where}['validation']")["search"] or {}
                except ValueError as err:
                    raise SettingsError(str(err)) from None
                for setting in search:
                    if setting not in known:
                        raise SettingsError(unknown_key_message(
                            f"{where}['validation']['search']", setting, known))
            elif key not in known and key not in cls.WORKFLOW_KEYS:
                raise SettingsError(unknown_key_message(where, key, known))

    @abc.abstractmethod
    def fit(self, betas: np.ndarray, images: np.ndarray,
            groups: np.ndarray | None = None) -> "ReconstructionMethod":
        """Learn the map from training betas to images.

        ``groups`` (n,) labels trials that share noise (their run), so that any
        cross-validation inside the method leaves whole groups out.
        """

    @abc.abstractmethod
    def decode(self, betas: np.ndarray) -> np.ndarray:
        """Predict the method's target space (e.g. PCA coefficients, latents)."""

    @abc.abstractmethod
    def reconstruct(self, betas: np.ndarray) -> np.ndarray:
        """Draw images, shape (n, H, W, C) in [0, 1], from betas."""

    def extra_metrics(self, data: EvaluationData) -> dict:
        """Method-specific metrics (e.g. attribute decoding, decoded-feature accuracy).

        Returns
        -------
        dict
            ``{name: {"mean", "ci_low", "ci_high", "chance"}}``, merged into the
            evaluation summary and the report beside PixCorr and SSIM. By default
            :meth:`target_identification` (empty for methods without
            :meth:`encode_targets`).
        """
        return self.target_identification(data)

    def encode_targets(self, images: np.ndarray) -> np.ndarray | None:
        """The method's decoding targets of ``images``, in the space of :meth:`decode`.

        Defined by methods whose targets are a fixed transform of the image (PCA
        coefficients, generator latents); None otherwise (the default).
        """
        return None

    def target_identification(self, data: EvaluationData) -> dict:
        """Pairwise identification in the method's own target space (``ident2_latent``).

        Each test image's decoded target (:meth:`decode` of its averaged betas) is
        compared by correlation with the true targets (:meth:`encode_targets`) of all
        test images, as VanRullen & Reddy (2019) compared decoded and true latents.

        Returns
        -------
        dict
            ``{"ident2_latent": {"mean", "ci_low", "ci_high", "chance"}}``, or empty
            when the method has no image-transform targets or fewer than 2 test images.
        """
        from ..evaluation import identification_summary

        targets = self.encode_targets(data.test_images)
        if targets is None or len(targets) < 2:
            return {}
        decoded = np.asarray(self.decode(data.test_betas))
        return {"ident2_latent": identification_summary(
            decoded, targets, n_boot=data.n_boot, seed=data.seed, name="ident2_latent")}

    def training_history(self):
        """Per-epoch losses as a DataFrame (columns epoch, phase, losses), or None."""
        return None

    def save(self, path: str | Path) -> None:
        """Write the fitted method to ``path`` (pickle; torch methods may override)."""
        with open(path, "wb") as f:
            pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def load(cls, path: str | Path) -> "ReconstructionMethod":
        """Read a method written by :meth:`save`."""
        with open(path, "rb") as f:
            method = pickle.load(f)
        if not isinstance(method, ReconstructionMethod):
            raise TypeError(f"{path}: not a fitted reconstruction method")
        return method
