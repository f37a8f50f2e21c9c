"""A library of hemodynamic response functions and single-trial regressors built from it.

GLMsingle (Prince et al. 2022, eLife 11:e77599) picks each voxel's HRF from 20 HRFs
derived from the Natural Scenes Dataset. Those are not distributed with nilearn and
we cannot download them, so the library here is a principled substitute: nilearn's
Glover double-gamma HRF stretched in time so that the peaks span 4-7 s (the range
of the NSD library). Stretching moves the peak, the width and the undershoot
together, as later HRFs are also broader in real data.
"""

from __future__ import annotations

import numpy as np
from nilearn.glm.first_level import glover_hrf

__all__ = ["hrf_library", "canonical_hrf", "trial_regressors", "GLOVER_PEAK"]

#: Length of every HRF kernel (s).
TIME_LENGTH = 32.0
#: Time step of the kernels (s); trial boxcars are built on this grid.
DT = 0.05
_GLOVER = glover_hrf(1.0, oversampling=int(round(1 / DT)), time_length=TIME_LENGTH)
_GLOVER_T = np.arange(len(_GLOVER)) * DT
#: Time to peak (s) of nilearn's Glover HRF.
GLOVER_PEAK = float(_GLOVER_T[np.argmax(_GLOVER)])


def _stretched(peak: float) -> np.ndarray:
    """Glover HRF stretched in time to peak at ``peak`` s, on the :data:`DT` grid, unit peak."""
    stretch = peak / GLOVER_PEAK
    h = np.interp(_GLOVER_T / stretch, _GLOVER_T, _GLOVER, right=0.0)
    return h / h.max()


def hrf_library(n_hrfs: int = 20, peak_range: tuple[float, float] = (4.0, 7.0)) -> tuple[np.ndarray, np.ndarray]:
    """``n_hrfs`` double-gamma HRFs with peaks evenly spaced over ``peak_range``.

    Parameters
    ----------
    n_hrfs : int, default=20
        Number of HRFs (GLMsingle's library has 20).
    peak_range : (float, float), default=(4.0, 7.0)
        First and last time to peak (s).

    Returns
    -------
    hrfs : ndarray, shape (n_hrfs, n_samples)
        Kernels sampled every :data:`DT` s from 0 to :data:`TIME_LENGTH` s, each
        scaled to a peak of 1.
    peaks : ndarray, shape (n_hrfs,)
        Time to peak of each HRF (s), increasing.
    """
    n_hrfs = int(n_hrfs)
    low, high = (float(p) for p in peak_range)
    if n_hrfs < 1 or not 0 < low <= high:
        raise ValueError(f"need n_hrfs >= 1 and 0 < peak_range[0] <= peak_range[1], got {n_hrfs}, {peak_range}")
    peaks = np.linspace(low, high, n_hrfs) if n_hrfs > 1 else np.array([(low + high) / 2])
    return np.stack([_stretched(p) for p in peaks]), peaks


def canonical_hrf() -> np.ndarray:
    """nilearn's Glover HRF on the library's grid, unit peak (the LSA model's HRF)."""
    return _GLOVER / _GLOVER.max()


def trial_regressors(hrf: np.ndarray, onsets, durations, frame_times) -> np.ndarray:
    """One regressor per trial: its boxcar convolved with ``hrf``, at ``frame_times``.

    Each regressor is scaled so that its peak in continuous time is 1, so a beta is
    the peak response in the data's units (the simulator's convention) whatever the
    HRF and trial duration.

    Parameters
    ----------
    hrf : ndarray, shape (n_samples,)
        Kernel sampled every :data:`DT` s (a row of :func:`hrf_library`).
    onsets, durations : array-like, shape (n_trials,)
        In seconds.
    frame_times : ndarray, shape (n_scans,)
        Acquisition time of each volume (s).

    Returns
    -------
    ndarray, shape (n_scans, n_trials)
    """
    onsets = np.asarray(onsets, dtype=float)
    durations = np.asarray(durations, dtype=float)
    frame_times = np.asarray(frame_times, dtype=float)
    out = np.zeros((len(frame_times), len(onsets)))
    kernels = {}
    for i, (onset, duration) in enumerate(zip(onsets, durations)):
        n_box = max(1, int(round(duration / DT)))
        if n_box not in kernels:  # one kernel per distinct duration
            kernel = np.convolve(np.ones(n_box), hrf)
            kernels[n_box] = kernel / kernel.max()
        kernel = kernels[n_box]
        out[:, i] = np.interp(frame_times - onset, np.arange(len(kernel)) * DT, kernel,
                              left=0.0, right=0.0)
    return out
