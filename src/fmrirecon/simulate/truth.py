"""The ground truth of a simulated subject: what the simulator drew, in one HDF5 file.

:func:`~fmrirecon.simulate.study.simulate_subject` draws a :class:`SubjectTruth` and
writes it with :func:`write_truth`; tests and benchmarks read it back (e.g.
:func:`read_truth_trials`) to score what the pipeline recovers.

Layout (HDF5 at ``truth_path``)
-------------------------------
``voxel_ijk`` int32 (n_brain, 3)
    Brain voxels (indices in the BOLD grid); the columns of every per-voxel array.
``is_visual`` bool (n_brain,)
``baseline`` float32 (n_brain,)
    Mean intensity of each voxel.
``trial_response`` float32 (n_trials, n_brain)
    Noise-free peak response of each trial in percent signal change (0 outside
    visual voxels). It is the amplitude of the trial's regressor (boxcar of the
    trial duration convolved with the Glover HRF, scaled to a peak of 1).
``trials/``
    Columns ``task`` (str), ``run`` (int), ``onset``, ``duration`` (float, s),
    ``stim_file`` (str, relative to ``stimuli/``): one entry per ``trial_response``
    row, ordered by task (train, test, imagery), run, onset.
``hrf_peak``, ``hrf_ratio`` float32 (n_brain,), only with ``hrf_peak_range``
    Each voxel's HRF (:func:`~fmrirecon.simulate.bold.double_gamma_hrf`); its
    trial regressors are scaled to a peak of 1, so ``trial_response`` keeps its
    meaning.
``shared_loadings`` float32 (n_components, n_brain), only with ``shared_noise_components``
    Spatial maps of the shared low-rank noise (its time courses are new each run).
``runs/<task>_run-<nn>/translation`` float32 (n_vols, 3)
    Head translation (mm, x y z) of each volume; the image content moved by
    ``translation / voxel_size`` voxels (attributes ``task``, ``run``, ``n_vols``).
``model/``
    The encoding model of the visual voxels (in the order of ``is_visual``):
    ``rf_center`` (n_visual, 2; x, y as fractions of the image side, y downwards),
    ``rf_size`` (Gaussian sigma, same unit), ``exponent``, ``weights``
    (n_visual, n_features; attribute ``features`` names the columns), ``gain``;
    plus ``stim_file`` and ``stim_response`` (n_stimuli, n_visual) — the perceptual
    response to every stimulus.
``higher/``, only with ``higher_area``
    The higher visual area (:class:`~fmrirecon.simulate.higher.HigherArea`): ``index``
    (its voxels, into the visual voxels; their ``model/`` rows are unused), ``mean``,
    ``scale``, ``weights`` (n_units, n_higher), ``offset``, ``exponent``, ``gain``;
    attributes ``layer`` and ``fraction``. ``model/stim_response`` holds its responses.
attributes
    ``seed`` (the subject's seed), ``study_seed``, ``subject``, ``tr``,
    ``affine``, ``shape``, ``signal_psc``, ``noise_psc``, ``imagery_gain``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from .encoding import Brain, EncodingModel
from .higher import HigherArea


@dataclass
class SubjectTruth:
    """What the simulator drew for one subject (the arrays of its truth file)."""

    brain: Brain
    model: EncodingModel
    stim_files: list
    stim_response: np.ndarray
    trials: pd.DataFrame
    response: np.ndarray
    hrf_params: np.ndarray | None
    loadings: np.ndarray | None
    area: HigherArea | None


def write_truth(truth_path: str | Path, truth: SubjectTruth, motions: dict, attrs: dict,
                higher_area: dict | None = None) -> None:
    """Write one subject's ground truth (layout in the module docstring).

    Parameters
    ----------
    truth_path : path
        The HDF5 file (its folder is created if needed).
    truth : SubjectTruth
        What was drawn.
    motions : dict
        ``{"<task>_run-<nn>": (task, run, translation)}`` of every run written.
    attrs : dict
        The file's attributes (``seed``, ``subject``, ``tr``...).
    higher_area : dict, optional
        The ``simulate.higher_area`` settings (``layer``, ``fraction``), with an area.
    """
    truth_path = Path(truth_path)
    brain, model, area, trials = truth.brain, truth.model, truth.area, truth.trials
    truth_path.parent.mkdir(parents=True, exist_ok=True)
    text = h5py.string_dtype()
    with h5py.File(truth_path, "w") as f:
        f.create_dataset("voxel_ijk", data=brain.voxel_ijk.astype(np.int32))
        f.create_dataset("is_visual", data=brain.is_visual)
        ii, jj, kk = brain.voxel_ijk.T
        f.create_dataset("baseline", data=brain.baseline[ii, jj, kk])
        f.create_dataset("trial_response", data=truth.response, compression="lzf")
        g = f.create_group("trials")
        g.create_dataset("task", data=trials["task"].to_numpy(dtype=object), dtype=text)
        g.create_dataset("run", data=trials["run"].to_numpy(dtype=np.int32))
        g.create_dataset("onset", data=trials["onset"].to_numpy(dtype=np.float64))
        g.create_dataset("duration", data=trials["duration"].to_numpy(dtype=np.float64))
        g.create_dataset("stim_file", data=trials["stim_file"].to_numpy(dtype=object), dtype=text)
        g = f.create_group("runs")
        for key, (task, number, translation) in motions.items():
            d = g.create_group(key).create_dataset("translation", data=translation)
            d.attrs.update({"task": task, "run": number, "n_vols": len(translation), "unit": "mm"})
        g = f.create_group("model")
        for name in ("rf_center", "rf_size", "exponent", "weights", "gain"):
            g.create_dataset(name, data=getattr(model, name))
        g["weights"].attrs["features"] = list(model.feature_names)
        g.create_dataset("stim_file", data=np.asarray(truth.stim_files, dtype=object), dtype=text)
        g.create_dataset("stim_response", data=truth.stim_response, compression="lzf")
        if truth.hrf_params is not None:
            f.create_dataset("hrf_peak", data=truth.hrf_params[:, 0].astype(np.float32))
            f.create_dataset("hrf_ratio", data=truth.hrf_params[:, 1].astype(np.float32))
        if truth.loadings is not None:
            f.create_dataset("shared_loadings", data=truth.loadings)
        if area is not None:
            g = f.create_group("higher")
            for name in ("index", "mean", "scale", "weights", "offset", "exponent", "gain"):
                g.create_dataset(name, data=getattr(area, name))
            g.attrs.update({"layer": higher_area["layer"], "fraction": higher_area["fraction"]})
        f.attrs.update(attrs)


def read_truth_trials(truth_path: str | Path) -> pd.DataFrame:
    """The ``trials`` table of a ground-truth file, one row per ``trial_response`` row."""
    with h5py.File(truth_path, "r") as f:
        g = f["trials"]
        return pd.DataFrame({
            "task": g["task"].asstr()[()],
            "run": g["run"][()],
            "onset": g["onset"][()],
            "duration": g["duration"][()],
            "stim_file": g["stim_file"].asstr()[()],
        })
