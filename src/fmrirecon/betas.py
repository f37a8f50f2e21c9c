"""Single-trial betas on disk: one HDF5 matrix plus a trial table (docs/formats.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

TRIAL_COLUMNS = ["trial", "task", "run", "onset", "duration", "stim_file", "split", "repetition"]
#: Written when the trials come from BIDS events: the session label (run labels repeat
#: across sessions) and the stimulus id as the events name it.
SOURCE_COLUMNS = ["session", "stim_id"]


@dataclass
class Betas:
    """Single-trial responses of one subject.

    Attributes
    ----------
    betas : ndarray, shape (n_trials, n_voxels)
    trials : DataFrame
        One row per beta row (columns ``TRIAL_COLUMNS``).
    voxel_ijk : ndarray, shape (n_voxels, 3)
        Voxel indices in the BOLD grid given by ``affine`` and ``shape``.
    affine, shape
        Geometry of the BOLD grid.
    reliability, noise_ceiling : ndarray, shape (n_voxels,)
        Per-voxel reliability across repeats and NSD-style noise ceiling (percent).
    attrs : dict
        Free provenance (``glm_method``, ``reliability_split``...).
    """

    betas: np.ndarray
    trials: pd.DataFrame
    voxel_ijk: np.ndarray
    affine: np.ndarray
    shape: tuple
    reliability: np.ndarray | None = None
    noise_ceiling: np.ndarray | None = None
    attrs: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.betas.shape[0] != len(self.trials):
            raise ValueError(
                f"{self.betas.shape[0]} beta rows but {len(self.trials)} trials"
            )
        if self.betas.shape[1] != len(self.voxel_ijk):
            raise ValueError(
                f"{self.betas.shape[1]} beta columns but {len(self.voxel_ijk)} voxels"
            )

    def select(self, split: str) -> "Betas":
        """The trials of one split (``train``, ``test`` or ``imagery``)."""
        return self.take((self.trials["split"] == split).to_numpy())

    def take(self, keep) -> "Betas":
        """The trials (rows) where the boolean array ``keep`` is true; voxels unchanged."""
        keep = np.asarray(keep, dtype=bool)
        return Betas(
            self.betas[keep], self.trials[keep].reset_index(drop=True), self.voxel_ijk,
            self.affine, self.shape, self.reliability, self.noise_ceiling, dict(self.attrs),
        )

    def average_repeats(self) -> tuple[np.ndarray, np.ndarray]:
        """Average rows that show the same stimulus.

        Returns
        -------
        betas : ndarray, shape (n_stimuli, n_voxels)
        stim_files : ndarray of str, in order of first appearance
        """
        codes, stim_files = pd.factorize(self.trials["stim_file"])
        sums = np.zeros((len(stim_files), self.betas.shape[1]), dtype=np.float64)
        np.add.at(sums, codes, self.betas)
        counts = np.bincount(codes, minlength=len(stim_files))[:, None]
        return (sums / counts).astype(np.float32), np.asarray(stim_files, dtype=str)


def write_betas(path: str | Path, betas: Betas, trials_path: str | Path) -> None:
    """Write ``betas`` to ``path`` (HDF5) and its trial table to ``trials_path`` (TSV)."""
    with h5py.File(path, "w") as f:
        f.create_dataset("betas", data=np.asarray(betas.betas, dtype=np.float32),
                         chunks=True, compression="lzf")
        f.create_dataset("voxel_ijk", data=np.asarray(betas.voxel_ijk, dtype=np.int32))
        for name in ("reliability", "noise_ceiling"):
            value = getattr(betas, name)
            if value is not None:
                f.create_dataset(name, data=np.asarray(value, dtype=np.float32))
        f.attrs["affine"] = np.asarray(betas.affine, dtype=np.float64)
        f.attrs["shape"] = np.asarray(betas.shape, dtype=np.int64)
        for key, value in betas.attrs.items():
            f.attrs[key] = value
    betas.trials.to_csv(trials_path, sep="\t", index=False, na_rep="n/a")


def _read_trials(path) -> pd.DataFrame:
    trials = pd.read_csv(path, sep="\t", dtype={"stim_file": str, "task": str, "session": str,
                                                "stim_id": str})
    if "session" in trials:
        trials["session"] = trials["session"].fillna("")
    return trials


def read_betas(path: str | Path, trials_path: str | Path) -> Betas:
    """Read betas written by :func:`write_betas`."""
    with h5py.File(path, "r") as f:
        data = {name: f[name][()] for name in ("reliability", "noise_ceiling") if name in f}
        attrs = {k: v for k, v in f.attrs.items() if k not in ("affine", "shape")}
        out = Betas(
            betas=f["betas"][()],
            trials=_read_trials(trials_path),
            voxel_ijk=f["voxel_ijk"][()],
            affine=f.attrs["affine"],
            shape=tuple(int(s) for s in f.attrs["shape"]),
            attrs=attrs,
            **data,
        )
    return out
