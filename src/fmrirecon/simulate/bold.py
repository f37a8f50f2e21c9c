"""BOLD time series of a simulated subject: HRFs, trial regressors, noise and motion.

A run's data are the baseline of :class:`~fmrirecon.simulate.encoding.Brain` plus each
trial's response (its amplitude, in percent signal change of the peak, times the
trial regressor: a boxcar of the trial duration convolved with the Glover HRF, scaled
to a peak of 1), slow cosine drifts, AR(1) thermal noise and head motion applied as
sub-voxel translations of every volume (:func:`simulate_run`).

Two options (off by default) make the data harder for a standard GLM, as real data
are: a per-voxel HRF (:func:`draw_hrf_params`, a double gamma whose peak and
undershoot vary between voxels; the regressor keeps a peak of 1) and shared
low-rank noise (:func:`shared_noise`: a few time courses, e.g. physiological,
loaded on smooth spatial maps over the whole brain).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy import ndimage

from .encoding import BASELINE, Brain


def double_gamma_hrf(peak: float, ratio: float, dt: float, time_length: float = 32.0) -> np.ndarray:
    """A double-gamma HRF peaking near ``peak`` s with an undershoot 10 s later.

    ``gamma(t; peak / 0.9 + 1, scale 0.9) - ratio * gamma(t; (peak + 10) / 0.9 + 1,
    scale 0.9)``, sampled every ``dt`` s (the first gamma's mode is ``peak``).
    """
    from scipy.stats import gamma

    t = np.arange(0, time_length, dt)
    b = 0.9
    return gamma.pdf(t, peak / b + 1, scale=b) - ratio * gamma.pdf(t, (peak + 10) / b + 1, scale=b)


def draw_hrf_params(n: int, peak_range, rng: np.random.Generator) -> np.ndarray:
    """Per-voxel HRF parameters: columns ``peak`` (uniform in ``peak_range``, s) and
    undershoot ``ratio`` (uniform in [0.1, 0.4]), rounded to 0.1 s and 0.05 so that
    voxels share a few dozen distinct HRFs (cheap to simulate)."""
    low, high = (float(v) for v in peak_range)
    peak = np.round(rng.uniform(low, high, n), 1)
    ratio = np.round(rng.uniform(0.1, 0.4, n) * 20) / 20
    return np.stack([peak, ratio], axis=1)


def shared_loadings(brain: Brain, n_components: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth spatial maps (n_components, n_brain) of the shared noise, RMS 1 over the brain."""
    out = np.empty((n_components, len(brain.voxel_ijk)), dtype=np.float32)
    ii, jj, kk = brain.voxel_ijk.T
    for c in range(n_components):
        field = ndimage.gaussian_filter(rng.standard_normal(brain.shape), sigma=max(brain.shape) / 8)
        values = field[ii, jj, kk]
        out[c] = values / (np.sqrt((values**2).mean()) + 1e-12)
    return out


def shared_noise(n_vols: int, loadings: np.ndarray, sd_psc: float, rng: np.random.Generator,
                 rho: float = 0.5) -> np.ndarray:
    """Low-rank noise (n_vols, n_brain) in PSC: AR(1) time courses of SD ``sd_psc``
    (new every run) times the fixed ``loadings``."""
    courses = ar1_noise(n_vols, len(loadings), sd_psc, rho, rng)
    return courses @ loadings


def trial_regressors(onsets, duration: float, n_vols: int, tr: float,
                     oversampling: int = 20, hrf: tuple | None = None) -> np.ndarray:
    """Each trial's boxcar convolved with the HRF, sampled at the volumes.

    Volume ``t`` is acquired at time ``t * tr`` (every slice at once). Each regressor
    is scaled so that its peak, in continuous time, is 1. ``hrf`` is None for the
    Glover HRF or ``(peak, ratio)`` of :func:`double_gamma_hrf`.

    Returns
    -------
    ndarray, shape (n_vols, n_trials)
    """
    from nilearn.glm.first_level import glover_hrf

    dt = tr / oversampling
    if hrf is None:
        hrf = glover_hrf(tr, oversampling=oversampling, time_length=32.0)
    else:
        hrf = double_gamma_hrf(hrf[0], hrf[1], dt)
    box = np.ones(max(1, int(round(duration / dt))))
    kernel = np.convolve(box, hrf)
    kernel /= kernel.max()
    kernel_t = np.arange(len(kernel)) * dt
    frame_t = np.arange(n_vols) * tr
    return np.stack(
        [np.interp(frame_t - onset, kernel_t, kernel, left=0.0, right=0.0) for onset in onsets],
        axis=1,
    ) if len(onsets) else np.zeros((n_vols, 0))


def motion_trace(n_vols: int, motion_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Head translations (mm, x/y/z) of each volume: slow random walk plus rare spikes.

    The walk starts from a small offset (the head is never exactly where it was in
    the previous run); spikes last one volume.
    """
    if motion_mm <= 0:
        return np.zeros((n_vols, 3), dtype=np.float32)
    start = rng.normal(0, motion_mm / 2, size=(1, 3))
    walk = np.cumsum(rng.normal(0, motion_mm / 10, size=(n_vols, 3)), axis=0)
    spikes = (rng.random(n_vols) < 0.02)[:, None] * rng.normal(0, 2 * motion_mm, size=(n_vols, 3))
    return (start + walk + spikes).astype(np.float32)


def drift_timeseries(n_vols: int, n_vox: int, drift_psc: float, rng: np.random.Generator,
                     n_cosines: int = 3) -> np.ndarray:
    """Slow drift in PSC: low-frequency cosines (periods >= 2/3 of the run).

    Half of the variance is shared by all voxels (scanner drift), half is
    voxel-specific. The standard deviation over time is about ``drift_psc / 2``, so
    excursions reach about ``drift_psc``. The fastest cosine has a period of 2/3 of
    the run, so a 128 s high-pass filter removes all of it in runs of 192 s or
    more; in shorter runs part of it survives, as in real data.
    """
    t = (np.arange(n_vols) + 0.5) / n_vols
    basis = np.stack([np.cos(np.pi * k * t) for k in range(1, n_cosines + 1)], axis=1)
    basis /= basis.std(axis=0)
    scale = 1 / np.arange(1, n_cosines + 1)                   # slower = larger
    shared = rng.normal(size=(n_cosines, 1)) * scale[:, None]
    own = rng.normal(size=(n_cosines, n_vox)) * scale[:, None]
    coef = np.sqrt(0.5) * shared + np.sqrt(0.5) * own
    coef *= (drift_psc / 2) / np.sqrt((scale ** 2).sum())
    return (basis @ coef).astype(np.float32)


def ar1_noise(n_vols: int, n_vox: int, sd: float, rho: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian AR(1) noise with marginal standard deviation ``sd``."""
    innovations = rng.standard_normal((n_vols, n_vox)).astype(np.float32)
    out = np.empty_like(innovations)
    out[0] = innovations[0]
    scale = np.sqrt(1 - rho ** 2)
    for t in range(1, n_vols):
        out[t] = rho * out[t - 1] + scale * innovations[t]
    return out * sd


def simulate_run(brain: Brain, amplitudes: np.ndarray, onsets, duration: float, tr: float,
                 n_vols: int, noise_psc: float, drift_psc: float, motion_mm: float,
                 rng: np.random.Generator, noise_rho: float = 0.3, hrf_params: np.ndarray | None = None,
                 shared: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Simulate the BOLD volumes of one run.

    Parameters
    ----------
    brain : Brain
    amplitudes : ndarray, shape (n_trials, n_brain)
        Peak response of each trial in each brain voxel (PSC).
    onsets : sequence of float
        Trial onsets (s).
    duration : float
        Trial duration (s).
    tr : float
    n_vols : int
    noise_psc, drift_psc, motion_mm : float
        Thermal noise SD (percent of :data:`BASELINE`), drift size (PSC) and motion
        scale (mm).
    rng : numpy.random.Generator
    noise_rho : float
        AR(1) coefficient of the thermal noise.
    hrf_params : ndarray, shape (n_brain, 2), optional
        Per-voxel HRF ``(peak, ratio)`` (:func:`draw_hrf_params`); None: Glover.
    shared : ndarray, shape (n_vols, n_brain), optional
        Shared noise (PSC) added to the signal (:func:`shared_noise`).

    Returns
    -------
    data : ndarray of float32, shape brain.shape + (n_vols,)
    translation : ndarray of float32, shape (n_vols, 3)
        Head translation (mm) of each volume: the image content is moved by
        ``translation / voxel_size`` voxels along x, y, z.
    """
    n_brain = len(brain.voxel_ijk)
    if hrf_params is None:
        signal = trial_regressors(onsets, duration, n_vols, tr) @ amplitudes  # (T, n_brain)
    else:
        signal = np.zeros((n_vols, n_brain))
        active = np.flatnonzero(np.any(amplitudes != 0, axis=0))
        params, groups = np.unique(hrf_params[active], axis=0, return_inverse=True)
        for g, (peak, ratio) in enumerate(params):  # one design per distinct HRF
            cols = active[groups.ravel() == g]
            signal[:, cols] = trial_regressors(onsets, duration, n_vols, tr, hrf=(peak, ratio)) @ amplitudes[:, cols]
    if shared is not None:
        signal = signal + shared
    signal += drift_timeseries(n_vols, n_brain, drift_psc, rng)
    ii, jj, kk = brain.voxel_ijk.T
    clean = brain.baseline[ii, jj, kk] * (1 + signal / 100)                   # (T, n_brain)
    translation = motion_trace(n_vols, motion_mm, rng)
    shifts = translation / brain.voxel_size
    data = np.zeros(brain.shape + (n_vols,), dtype=np.float32)
    vol = np.zeros(brain.shape, dtype=np.float32)
    for t in range(n_vols):
        vol[ii, jj, kk] = clean[t]
        if np.any(shifts[t]):
            data[..., t] = ndimage.shift(vol, shifts[t], order=1, mode="constant", cval=0.0)
        else:
            data[..., t] = vol
    # Thermal noise is added in the scanner frame, after motion; magnitude images
    # are non-negative (Rician-like background).
    noise = ar1_noise(n_vols, int(np.prod(brain.shape)), noise_psc / 100 * BASELINE, noise_rho, rng)
    data += noise.T.reshape(brain.shape + (n_vols,))
    np.abs(data, out=data)
    return data, translation


def bold_image(data: np.ndarray, affine: np.ndarray, tr: float) -> nib.Nifti1Image:
    """A 4-D int16 NIfTI with mm/s units and the TR as fourth zoom."""
    arr = np.clip(np.round(data), 0, np.iinfo(np.int16).max).astype(np.int16)
    img = nib.Nifti1Image(arr, affine)
    img.header.set_xyzt_units("mm", "sec")
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    img.header.set_zooms(tuple(float(z) for z in zooms) + (float(tr),))
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img
