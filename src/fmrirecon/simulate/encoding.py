"""Ground-truth brain, voxel encoding model and BOLD time series of a simulated subject.

The model is a classic population receptive field (pRF) model with a compressive
spatial summation (CSS) nonlinearity:

- the brain is an ellipsoid of voxels with a smoothly varying baseline intensity
  (about 1000) on a near-zero background;
- ``n_visual`` voxels at the posterior pole are "visual". Each has a 2-D Gaussian
  receptive field whose centre maps smoothly from the voxel's position (left
  hemisphere sees the right visual field, dorsal voxels see the lower field) plus
  jitter, and whose size grows away from the pole;
- a visual voxel's drive is a weighted sum of RF-pooled image features: local
  contrast energy, luminance (ON) and darkness (OFF) and, for colour images,
  red-green and blue-yellow opponent signals; the response is ``gain * drive **
  exponent`` with ``exponent`` in [0.5, 0.8];
- gains are calibrated on the stimulus set so a voxel's mean evoked response is
  ``signal_psc`` (times a voxel-specific factor) percent of its baseline.

Responses are amplitudes in percent signal change (PSC) of the *peak* of a trial's
evoked response; :mod:`fmrirecon.simulate.bold` turns them into BOLD time series
(trial regressors, drifts, thermal noise, head motion).

An option (off by default) replaces the isotropic contrast energy by oriented
Gabor energy (``features="gabor"``): phase-invariant complex-cell energy at
:data:`GABOR_ORIENTATIONS` orientations and :data:`GABOR_WAVELENGTHS` spatial
frequencies, RF-pooled, with a per-voxel orientation and frequency tuning, the
Gabor-wavelet pyramid model of Kay et al. (2008). It is a mid-level image-feature
model: voxels carry no explicit luminance of each pixel, only pooled local
structure, luminance and darkness.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

#: Nominal baseline intensity of the brain (thermal noise is relative to it).
BASELINE = 1000.0

#: Names of the columns of :attr:`EncodingModel.weights` (default feature set).
FEATURES = ("contrast", "on", "off", "red_green", "blue_yellow")

#: Orientations (degrees) and wavelengths (fractions of the image side) of the
#: Gabor-energy feature set.
GABOR_ORIENTATIONS = (0, 45, 90, 135)
GABOR_WAVELENGTHS = (1 / 8, 1 / 4)

#: Names of the columns of :attr:`EncodingModel.weights` with ``features="gabor"``.
GABOR_FEATURES = tuple(f"gabor_o{o}_w{i}" for i in range(len(GABOR_WAVELENGTHS))
                       for o in GABOR_ORIENTATIONS) + FEATURES[1:]

#: The feature sets of :func:`draw_model`.
FEATURE_SETS = {"prf": FEATURES, "gabor": GABOR_FEATURES}

#: Drive of a blank (uniform mid-gray) image: any stimulus onset evokes some response.
PEDESTAL = 0.1

#: Range of the voxels' compressive exponents (CSS model), drawn uniformly.
EXPONENT_RANGE = (0.5, 0.8)

# Typical RF-pooled contrast energy of [0, 1] images; divides the feature so its
# weight is comparable with the luminance weights.
_CONTRAST_SCALE = 0.08

# Gabor envelope sigma in wavelengths (a bandwidth of about 1.4 octaves, as V1 cells).
_GABOR_SIGMA = 0.5

# Typical Gabor energy of [0, 1] images at each wavelength of GABOR_WAVELENGTHS
# (unit-norm filters); divides the features so their weights compare with the others.
_GABOR_SCALE = (0.15, 0.45)


def gabor_energy(lum: np.ndarray) -> np.ndarray:
    """Phase-invariant Gabor energy maps of grayscale images.

    Parameters
    ----------
    lum : ndarray, shape (n, H, W)
        Luminance in [0, 1].

    Returns
    -------
    ndarray, shape (n, len(GABOR_WAVELENGTHS) * len(GABOR_ORIENTATIONS), H, W)
        ``sqrt(even ** 2 + odd ** 2)`` of a quadrature pair of zero-mean Gabor
        filters of unit L2 norm, wavelength-major then orientation, divided by the
        typical energy of images at that wavelength (so values are about 1, as for
        the default contrast feature).
    """
    lum = np.asarray(lum, dtype=np.float32)
    n, h, w = lum.shape
    out = np.empty((n, len(GABOR_WAVELENGTHS) * len(GABOR_ORIENTATIONS), h, w), np.float32)
    k = 0
    for frac, scale in zip(GABOR_WAVELENGTHS, _GABOR_SCALE):
        wavelength = frac * w
        sigma = _GABOR_SIGMA * wavelength
        r = int(np.ceil(3 * sigma))
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float32)
        envelope = np.exp(-(xx ** 2 + yy ** 2) / (2 * sigma ** 2))
        for theta in np.deg2rad(GABOR_ORIENTATIONS):
            u = xx * np.cos(theta) + yy * np.sin(theta)
            pair = []
            for phase in (np.cos, np.sin):
                kernel = envelope * phase(2 * np.pi * u / wavelength)
                kernel -= envelope * kernel.sum() / envelope.sum()   # zero mean: no DC
                kernel /= np.linalg.norm(kernel)
                pair.append(ndimage.correlate(lum, kernel[None], mode="reflect"))
            out[:, k] = np.sqrt(pair[0] ** 2 + pair[1] ** 2) / scale
            k += 1
    return out


@dataclass
class Brain:
    """Geometry and static intensity of a simulated brain.

    Attributes
    ----------
    affine : ndarray, shape (4, 4)
        Voxel-to-world (mm) transform of the BOLD grid.
    mask : ndarray of bool, shape ``shape``
        Brain voxels.
    baseline : ndarray of float32, shape ``shape``
        Mean intensity (0 outside the brain).
    voxel_ijk : ndarray of int, shape (n_brain, 3)
        Indices of the brain voxels (C order), the column order of every
        per-voxel array of the ground truth.
    is_visual : ndarray of bool, shape (n_brain,)
    """

    affine: np.ndarray
    mask: np.ndarray
    baseline: np.ndarray
    voxel_ijk: np.ndarray
    is_visual: np.ndarray

    @property
    def shape(self) -> tuple:
        return self.mask.shape

    @property
    def voxel_size(self) -> float:
        return float(abs(self.affine[0, 0]))


def grid_affine(shape, voxel_size: float) -> np.ndarray:
    """RAS affine with isotropic ``voxel_size`` and the world origin at the grid centre."""
    affine = np.diag([voxel_size, voxel_size, voxel_size, 1.0])
    affine[:3, 3] = -(np.asarray(shape, dtype=float) - 1) / 2 * voxel_size
    return affine


def _radii(shape) -> np.ndarray:
    """Semi-axes of the brain ellipsoid, in voxels.

    Two voxels of background on each side: room for head motion, and enough for
    the morphological opening of nilearn's ``compute_epi_mask`` not to eat the
    brain where it touches the edge of the grid.
    """
    return np.maximum(np.asarray(shape, dtype=float) / 2 - 2, 1.0)


def make_brain(shape, voxel_size: float, n_visual: int, rng: np.random.Generator) -> Brain:
    """Draw an ellipsoidal brain with a posterior patch of visual voxels.

    Parameters
    ----------
    shape : sequence of 3 int
        BOLD grid (x: left-right, y: posterior-anterior, z: inferior-superior).
    voxel_size : float
        In mm.
    n_visual : int
        Number of visual voxels.
    rng : numpy.random.Generator

    Returns
    -------
    Brain
    """
    shape = tuple(int(s) for s in shape)
    centre = (np.asarray(shape) - 1) / 2
    radii = _radii(shape)
    grid = np.indices(shape).astype(float)
    r2 = sum(((grid[a] - centre[a]) / radii[a]) ** 2 for a in range(3))
    mask = r2 <= 1.0
    voxel_ijk = np.argwhere(mask)
    if n_visual > len(voxel_ijk):
        raise ValueError(
            f"n_visual_voxels={n_visual} exceeds the {len(voxel_ijk)} brain voxels of "
            f"volume_shape {list(shape)}"
        )
    # Smooth multiplicative field (coil sensitivity / tissue) of about +-8%.
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=max(shape) / 6)
    field = (field - field[mask].mean()) / (field[mask].std() + 1e-12)
    gradient = 0.05 * (grid[2] - centre[2]) / max(radii[2], 1)
    baseline = np.where(mask, BASELINE * (1 + 0.08 * field + gradient), 0).astype(np.float32)
    # The occipital pole: the most posterior brain voxels, with a ragged border.
    posterior = voxel_ijk[:, 1] + rng.uniform(0, 1.5, size=len(voxel_ijk))
    is_visual = np.zeros(len(voxel_ijk), dtype=bool)
    is_visual[np.argsort(posterior, kind="stable")[:n_visual]] = True
    return Brain(grid_affine(shape, voxel_size), mask, baseline, voxel_ijk, is_visual)


def make_t1w(brain: Brain, rng: np.random.Generator) -> nib.Nifti1Image:
    """A cheap T1-weighted anatomy at half the BOLD voxel size, same field of view.

    White matter is bright, grey matter darker, a thin CSF rim dark and the
    background zero, with a wobbly grey/white border.
    """
    shape = tuple(2 * s for s in brain.shape)
    # Fine voxel f has its centre at (f + 0.5) / 2 - 0.5 in BOLD voxel units.
    to_bold = np.diag([0.5, 0.5, 0.5, 1.0])
    to_bold[:3, 3] = -0.25
    affine = brain.affine @ to_bold
    coords = np.indices(shape).astype(float) * 0.5 - 0.25
    centre = (np.asarray(brain.shape) - 1) / 2
    radii = _radii(brain.shape)
    r = np.sqrt(sum(((coords[a] - centre[a]) / radii[a]) ** 2 for a in range(3)))
    wobble = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=1.5)
    wobble *= 0.08 / (wobble.std() + 1e-12)
    img = np.zeros(shape, dtype=np.float32)
    img[r <= 1.0] = 250.0                      # CSF
    img[r <= 0.94] = 550.0                     # grey matter
    img[r + wobble <= 0.65] = 850.0            # white matter
    img = ndimage.gaussian_filter(img, 0.6)
    img += rng.normal(0, 12.0, size=shape)
    data = np.clip(np.abs(img), 0, 32767).round().astype(np.int16)
    out = nib.Nifti1Image(data, affine)
    out.header.set_xyzt_units("mm", "sec")
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    return out


@dataclass
class EncodingModel:
    """Receptive fields and feature weights of the visual voxels.

    Image coordinates are fractions of the image side: ``x`` from left to right,
    ``y`` from top to bottom.

    Attributes
    ----------
    rf_center : ndarray, shape (n_visual, 2)
        (x, y) of each RF centre.
    rf_size : ndarray, shape (n_visual,)
        Gaussian sigma of each RF.
    exponent : ndarray, shape (n_visual,)
        Compressive exponent of the CSS nonlinearity.
    weights : ndarray, shape (n_visual, len(FEATURES))
        Non-negative weight of each feature in the drive.
    gain : ndarray, shape (n_visual,)
        PSC per unit of ``drive ** exponent`` (set by :meth:`calibrate`).
    feature_set : {"prf", "gabor"}
        The image features (columns :data:`FEATURE_SETS` ``[feature_set]``).
    """

    rf_center: np.ndarray
    rf_size: np.ndarray
    exponent: np.ndarray
    weights: np.ndarray
    gain: np.ndarray
    feature_set: str = "prf"

    @property
    def feature_names(self) -> tuple:
        """Names of the columns of :attr:`weights`."""
        return FEATURE_SETS[self.feature_set]

    def features(self, images: np.ndarray) -> np.ndarray:
        """RF-pooled features of each image for each voxel.

        Parameters
        ----------
        images : ndarray, shape (n, H, W, C)
            Values in [0, 1], square, C = 1 or 3.

        Returns
        -------
        ndarray, shape (n, n_visual, len(feature_names))
        """
        images = np.asarray(images, dtype=np.float32)
        n, h, w, c = images.shape
        lum = images.mean(axis=-1)
        # Local contrast energy: deviation from the local mean luminance.
        sigma = max(1.0, w / 16)
        local = ndimage.gaussian_filter(lum, sigma=(0, sigma, sigma), mode="reflect")
        energy = np.abs(lum - local)
        if c == 3:
            red_green = images[..., 0] - images[..., 1]
            blue_yellow = images[..., 2] - (images[..., 0] + images[..., 1]) / 2
        else:
            red_green = blue_yellow = np.zeros_like(lum)
        rf = self.rf_weights(h, w)                      # (n_visual, H*W)
        pool = lambda a: a.reshape(n, -1) @ rf.T        # noqa: E731
        lum_v = pool(lum)
        if self.feature_set == "gabor":
            maps = gabor_energy(lum)
            contrast = [pool(maps[:, k]) for k in range(maps.shape[1])]
        else:
            contrast = [pool(energy) / _CONTRAST_SCALE]
        # ON and OFF channels: rectified deviations from mid-gray, so a gray image
        # drives neither and luminance polarity is encoded.
        return np.stack([
            *contrast,
            2 * np.maximum(lum_v - 0.5, 0),
            2 * np.maximum(0.5 - lum_v, 0),
            np.abs(pool(red_green)) / _CONTRAST_SCALE,
            np.abs(pool(blue_yellow)) / _CONTRAST_SCALE,
        ], axis=-1).astype(np.float32)

    def rf_weights(self, h: int, w: int) -> np.ndarray:
        """Receptive fields sampled on an (h, w) pixel grid, each summing to 1."""
        ys = (np.arange(h) + 0.5) / h
        xs = (np.arange(w) + 0.5) / w
        gx = np.exp(-((xs[None, :] - self.rf_center[:, :1]) ** 2) / (2 * self.rf_size[:, None] ** 2))
        gy = np.exp(-((ys[None, :] - self.rf_center[:, 1:]) ** 2) / (2 * self.rf_size[:, None] ** 2))
        rf = (gy[:, :, None] * gx[:, None, :]).reshape(len(self.rf_size), h * w)
        return (rf / (rf.sum(axis=1, keepdims=True) + 1e-12)).astype(np.float32)

    def drive(self, images: np.ndarray) -> np.ndarray:
        """``drive ** exponent`` of each voxel for each image, shape (n, n_visual)."""
        drive = np.einsum("nvf,vf->nv", self.features(images), self.weights)
        return (np.maximum(drive, 0) + PEDESTAL) ** self.exponent

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Noise-free response amplitude (PSC), shape (n, n_visual)."""
        return (self.drive(images) * self.gain).astype(np.float32)

    def calibrate(self, images: np.ndarray, signal_psc: float, rng: np.random.Generator) -> None:
        """Set gains so each voxel's mean response over ``images`` is about ``signal_psc``.

        A log-normal voxel factor (sd 0.3) keeps voxels unequally responsive.
        """
        self.gain = calibrated_gain(self.drive(images).mean(axis=0), signal_psc,
                                    rng).astype(np.float32)


def calibrated_gain(mean_drive: np.ndarray, signal_psc: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Gains giving each voxel a mean response of ``signal_psc`` times a log-normal
    voxel factor (sd 0.3), so voxels are unequally responsive.

    Parameters
    ----------
    mean_drive : ndarray, shape (n_voxels,)
        Each voxel's mean ``drive ** exponent`` over the stimulus set.
    signal_psc : float
    rng : numpy.random.Generator
    """
    factor = np.exp(rng.normal(0, 0.3, size=len(mean_drive)))
    return signal_psc * factor / np.maximum(mean_drive, 1e-6)


def draw_model(brain: Brain, rng: np.random.Generator, channels: int = 1,
               features: str = "prf") -> EncodingModel:
    """Draw receptive fields and weights for the visual voxels of ``brain``.

    Parameters
    ----------
    brain : Brain
    rng : numpy.random.Generator
    channels : {1, 3}
        Colour weights are drawn only for colour stimuli.
    features : {"prf", "gabor"}
        ``"prf"``: isotropic contrast energy, ON, OFF (and colour). ``"gabor"``: the
        contrast weight is spread over oriented Gabor-energy channels by a tuning
        curve around a preferred orientation (von Mises, concentration 1 on the doubled
        angle) and a preferred wavelength, drawn per voxel; ON, OFF and colour as
        ``"prf"``. The default draws are unchanged by the option.

    Returns
    -------
    EncodingModel
        With unit gains; call :meth:`EncodingModel.calibrate`.
    """
    if features not in FEATURE_SETS:
        raise ValueError(f"features must be one of {sorted(FEATURE_SETS)}, got {features!r}")
    ijk = brain.voxel_ijk[brain.is_visual].astype(float)
    n = len(ijk)

    def unit(a):  # position within the visual patch, in [-1, 1] (or [0, 1] for y)
        lo, hi = a.min(), a.max()
        return np.zeros_like(a) if hi == lo else (a - lo) / (hi - lo)

    u = 2 * unit(ijk[:, 0]) - 1          # left (-1) .. right (+1) hemisphere
    v = 2 * unit(ijk[:, 2]) - 1          # ventral (-1) .. dorsal (+1)
    d = unit(ijk[:, 1])                  # distance from the occipital pole
    # Contralateral, inverted retinotopy; RFs grow with "eccentricity" (distance from pole).
    cx = 0.5 - 0.4 * u + rng.normal(0, 0.06, n)
    cy = 0.5 + 0.4 * v + rng.normal(0, 0.06, n)
    centre = np.clip(np.stack([cx, cy], axis=1), 0.03, 0.97)
    size = (0.05 + 0.1 * d) * np.exp(rng.normal(0, 0.25, n))
    exponent = rng.uniform(*EXPONENT_RANGE, n)
    weights = np.zeros((n, len(FEATURES)))
    weights[:, 0] = rng.uniform(0.3, 1.5, n)                 # contrast energy
    # Bimodal ON/OFF preference, so luminance polarity is encoded.
    on = rng.beta(0.5, 0.5, n)
    lum = rng.uniform(0.6, 2.0, n)
    weights[:, 1] = lum * on
    weights[:, 2] = lum * (1 - on)
    if channels == 3:
        weights[:, 3:] = rng.uniform(0, 0.6, (n, 2))
    if features == "gabor":
        # Drawn after the default weights, so the shared draws stay the same.
        orientations = np.deg2rad(np.asarray(GABOR_ORIENTATIONS, dtype=float))
        preferred = rng.uniform(0, np.pi, n)
        tuning_o = np.exp(np.cos(2 * (orientations[None, :] - preferred[:, None])))
        # Smaller RFs (near the pole) prefer the finer scale, with scatter.
        fine = np.clip(1 - unit(size) + rng.normal(0, 0.25, n), 0, 1)
        tuning_w = np.stack([fine, 1 - fine], axis=1)  # wavelengths: fine, coarse
        tuning = (tuning_w[:, :, None] * tuning_o[:, None, :]).reshape(n, -1)
        tuning /= tuning.sum(axis=1, keepdims=True)
        # The tuning spreads the contrast weight over the channels (it sums to 1).
        weights = np.concatenate([weights[:, :1] * tuning, weights[:, 1:]], axis=1)
    return EncodingModel(
        rf_center=centre.astype(np.float32),
        rf_size=size.astype(np.float32),
        exponent=exponent.astype(np.float32),
        weights=weights.astype(np.float32),
        gain=np.ones(n, dtype=np.float32),
        feature_set=features,
    )
