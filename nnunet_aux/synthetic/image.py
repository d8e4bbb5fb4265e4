"""CT-like intensities for a synthetic organ with vessels and tumours."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter1d

from ..validation import check_spacing
from .organ import Ellipsoid, smooth_random_field
from .rasterize import FWHM_PER_SIGMA
from .tree import _check_shape


def organ_fraction(
    organ: Ellipsoid,
    shape: Sequence[int],
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    seed: int | np.random.Generator | None = None,
    roughness: float = 0.15,
) -> np.ndarray:
    """Soft organ mask: an ellipsoid with a smoothly perturbed surface.

    Parameters
    ----------
    organ : Ellipsoid
        The organ's ellipsoid (mm).
    shape : sequence of 3 int
        Grid shape.
    spacing : sequence of 3 float, optional
        Voxel size in mm.
    seed : int or numpy.random.Generator, optional
        Random seed or generator for the surface perturbation.
    roughness : float, optional
        Amplitude of the perturbation of the normalised radius (0: exact ellipsoid).

    Returns
    -------
    fraction : ndarray of float32
        1 inside, 0 outside, a ramp about one voxel wide across the surface;
        ``fraction >= 0.5`` is the organ mask.

    Examples
    --------
    >>> f = organ_fraction(Ellipsoid((5, 5, 5), (4, 4, 4)), (11, 11, 11), roughness=0)
    >>> float(f[5, 5, 5]), float(f[5, 5, 0]), float(f[5, 5, 1])
    (1.0, 0.0, 0.5)
    """
    shape = _check_shape(shape)
    spacing = np.asarray(check_spacing(spacing))
    centre = np.asarray(organ.centre_mm)
    axes = np.asarray(organ.semi_axes_mm)
    z2, y2, x2 = (((np.arange(n) * s - c) / a).astype(np.float32) ** 2
                  for n, s, c, a in zip(shape, spacing, centre, axes))
    rho = z2[:, None, None] + (y2[:, None] + x2[None, :])[None]
    np.sqrt(rho, out=rho)
    # fraction = 1/2 - k (rho + roughness * field - 1), a ramp about one voxel wide:
    # the normalised radius changes by 1 over about mean(axes) mm.
    k = np.float32(np.mean(axes) / np.prod(spacing) ** (1 / 3))
    rho *= -k
    rho += np.float32(0.5) + k
    if roughness > 0:
        field = smooth_random_field(shape, n_control=3, seed=seed)
        field *= -k * np.float32(roughness)
        rho += field
        del field
    return np.clip(rho, 0, 1, out=rho)


def tumour_blobs(
    organ_mask: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    n_tumours: int | None = None,
    radius_range_mm: tuple[float, float] | None = None,
    seed: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Random lumpy ellipsoidal blobs with centres inside the organ.

    Parameters
    ----------
    organ_mask : ndarray of bool, 3-D
        Where tumour centres may lie.
    spacing : sequence of 3 float, optional
        Voxel size in mm.
    n_tumours : int, optional
        Number of blobs; 1 to 3 at random if not given.
    radius_range_mm : (float, float), optional
        Range of the mean blob radius; defaults to 4-12 % of the organ's smallest
        physical extent, at least two voxels.
    seed : int or numpy.random.Generator, optional
        Random seed or generator.

    Returns
    -------
    tumour : ndarray of bool
        Blob mask, same shape as ``organ_mask``.

    Examples
    --------
    >>> organ = np.zeros((20, 20, 20), bool); organ[5:15, 5:15, 5:15] = True
    >>> t = tumour_blobs(organ, n_tumours=1, radius_range_mm=(3, 3), seed=0)
    >>> bool(40 < t.sum() < 250)
    True
    """
    organ_mask = np.asarray(organ_mask, dtype=bool)
    if organ_mask.ndim != 3:
        raise ValueError(f"organ_mask must be 3-D, got shape {organ_mask.shape}")
    spacing = np.asarray(check_spacing(spacing))
    rng = np.random.default_rng(seed)
    tumour = np.zeros(organ_mask.shape, dtype=bool)
    if not organ_mask.any():
        return tumour
    if n_tumours is None:
        n_tumours = int(rng.integers(1, 4))
    if radius_range_mm is None:
        # Organ size: its smallest bounding-box side, in mm.
        sides = [np.flatnonzero(organ_mask.any(axis=tuple(a for a in range(3) if a != k))) for k in range(3)]
        size = min((side[-1] - side[0] + 1) * s for side, s in zip(sides, spacing))
        radius_range_mm = (max(0.04 * size, 2 * spacing.max()), max(0.12 * size, 3 * spacing.max()))
    for _ in range(n_tumours):
        centre = _random_voxel(organ_mask, rng) * spacing
        radius = rng.uniform(*radius_range_mm)
        axes = radius * rng.uniform(0.75, 1.3, 3)
        rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        # Lumps: a few random low-frequency waves on the normalised radius.
        waves = rng.normal(size=(3, 3))
        phases = rng.uniform(0, 2 * np.pi, 3)
        reach = axes.max() * 1.3
        lo = np.maximum(np.ceil((centre - reach) / spacing), 0).astype(int)
        hi = np.minimum(np.floor((centre + reach) / spacing), np.asarray(organ_mask.shape) - 1).astype(int)
        grids = np.meshgrid(*(np.arange(lo[k], hi[k] + 1) * spacing[k] - centre[k] for k in range(3)),
                            indexing="ij")
        p = np.stack(grids, axis=-1) @ rotation / axes
        rho = np.linalg.norm(p, axis=-1) + 0.1 * np.sin(p @ waves.T + phases).sum(axis=-1)
        box = tuple(slice(lo[k], hi[k] + 1) for k in range(3))
        tumour[box] |= rho <= 1
    return tumour


def ct_image(
    organ_fraction: np.ndarray,
    vessel_fraction: np.ndarray,
    tumour: np.ndarray | None = None,
    *,
    seed: int | np.random.Generator | None = None,
    parenchyma_hu: float = 100.0,
    vessel_hu: float | None = None,
    tumour_hu: float = 40.0,
    outside_hu: float = -50.0,
    noise_hu: float = 20.0,
    bias_gain: float = 0.08,
    bias_offset_hu: float = 10.0,
    vessel_hu_range: tuple[float, float] = (180.0, 200.0),
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    psf_fwhm_mm: float = 0.0,
    noise_fwhm_mm: float = 0.0,
) -> np.ndarray:
    """Contrast-enhanced CT-like intensities (HU) of an organ with vessels and tumours.

    Tissues are mixed by their soft volume fractions (partial volume): outside the
    organ a smooth field around ``outside_hu`` (+-50 HU, fat and muscle), parenchyma,
    hypodense tumours, bright vessels on top. An optional in-plane Gaussian blur (the
    scanner's point-spread function) follows, then a smooth multiplicative gain and
    additive offset (scanner and contrast inhomogeneity), then Gaussian noise, white or
    correlated in-plane (the noise texture of filtered back projection).

    Parameters
    ----------
    organ_fraction : ndarray of float, 3-D
        Organ volume fraction in ``[0, 1]``.
    vessel_fraction : ndarray of float, 3-D
        Vessel volume fraction in ``[0, 1]``.
    tumour : ndarray of bool, 3-D, optional
        Tumour mask.
    seed : int or numpy.random.Generator, optional
        Random seed or generator.
    parenchyma_hu, tumour_hu, outside_hu : float, optional
        Tissue intensities.
    vessel_hu : float, optional
        Vessel intensity; drawn uniformly from ``vessel_hu_range`` if not given.
    noise_hu : float, optional
        Standard deviation of the noise (per voxel, also when correlated).
    bias_gain : float, optional
        Standard deviation of the smooth multiplicative gain around 1.
    bias_offset_hu : float, optional
        Standard deviation of the smooth additive offset.
    vessel_hu_range : (float, float), optional
        Range of the vessel intensity drawn when ``vessel_hu`` is not given.
    spacing : sequence of 3 float, optional
        Voxel size in mm; used by the in-plane blur and noise correlation.
    psf_fwhm_mm : float, optional
        FWHM (mm) of the in-plane Gaussian point-spread function; 0 for none.
    noise_fwhm_mm : float, optional
        FWHM (mm) of the in-plane Gaussian that correlates the noise; 0 for white noise.

    Returns
    -------
    image : ndarray of float32
        Intensities in HU.

    Examples
    --------
    >>> organ = np.ones((8, 8, 8), np.float32)
    >>> vessel = np.zeros_like(organ); vessel[:, 3:5, 3:5] = 1
    >>> img = ct_image(organ, vessel, seed=0, noise_hu=0, bias_gain=0, bias_offset_hu=0, vessel_hu=190)
    >>> float(img[0, 0, 0]), float(img[0, 3, 3])
    (100.0, 190.0)
    """
    organ_fraction = np.asarray(organ_fraction, dtype=np.float32)
    vessel_fraction = np.asarray(vessel_fraction, dtype=np.float32)
    if organ_fraction.ndim != 3 or organ_fraction.shape != vessel_fraction.shape:
        raise ValueError(f"organ_fraction {organ_fraction.shape} and vessel_fraction {vessel_fraction.shape} "
                         "must be 3-D arrays of one shape")
    if tumour is not None and np.shape(tumour) != organ_fraction.shape:
        raise ValueError(f"tumour has shape {np.shape(tumour)}, expected {organ_fraction.shape}")
    spacing = np.asarray(check_spacing(spacing))
    rng = np.random.default_rng(seed)
    if vessel_hu is None:
        vessel_hu = float(rng.uniform(*vessel_hu_range))
    image = _mix_tissues(organ_fraction, vessel_fraction, tumour, rng, parenchyma_hu=parenchyma_hu,
                         vessel_hu=vessel_hu, tumour_hu=tumour_hu, outside_hu=outside_hu)
    if psf_fwhm_mm > 0:
        image = _inplane_gaussian(image, psf_fwhm_mm, spacing)
    _add_inhomogeneity(image, rng, bias_gain, bias_offset_hu)
    if noise_hu > 0:
        image += _noise(image.shape, rng, noise_hu, noise_fwhm_mm, spacing)
    return image


def _mix_tissues(organ_fraction: np.ndarray, vessel_fraction: np.ndarray, tumour: np.ndarray | None,
                 rng: np.random.Generator, *, parenchyma_hu: float, vessel_hu: float, tumour_hu: float,
                 outside_hu: float) -> np.ndarray:
    """Tissues mixed by volume fraction: outside texture, parenchyma, tumours, vessels on top.

    In place, to keep full-size temporaries few.
    """
    image = smooth_random_field(organ_fraction.shape, n_control=5, seed=rng)
    image *= np.float32(25.0)
    image += np.float32(outside_hu)
    organ_part = np.float32(parenchyma_hu) - image
    organ_part *= organ_fraction
    image += organ_part
    del organ_part
    if tumour is not None:
        image[tumour] = tumour_hu
    flat = image.reshape(-1)
    in_vessel = np.flatnonzero(vessel_fraction)
    share = vessel_fraction.reshape(-1)[in_vessel]
    flat[in_vessel] += share * (np.float32(vessel_hu) - flat[in_vessel])
    return image


def _add_inhomogeneity(image: np.ndarray, rng: np.random.Generator, gain_sd: float, offset_sd_hu: float) -> None:
    """Smooth multiplicative gain around 1, then smooth additive offset (scanner and contrast), in place."""
    if gain_sd > 0:
        gain = smooth_random_field(image.shape, n_control=3, seed=rng)
        gain *= np.float32(gain_sd)
        gain += np.float32(1.0)
        image *= gain
        del gain
    if offset_sd_hu > 0:
        offset = smooth_random_field(image.shape, n_control=3, seed=rng)
        offset *= np.float32(offset_sd_hu)
        image += offset


def _noise(shape: tuple[int, ...], rng: np.random.Generator, sd_hu: float, fwhm_mm: float,
           spacing: np.ndarray) -> np.ndarray:
    """Gaussian noise of standard deviation ``sd_hu`` per voxel, white or correlated in-plane."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    if fwhm_mm > 0:
        # Smoothing white noise divides its SD by the kernel's L2 norm; undo that.
        noise = _inplane_gaussian(noise, fwhm_mm, spacing)
        noise /= np.float32(np.prod([np.linalg.norm(_gaussian_weights(fwhm_mm, s)) for s in spacing[1:]]))
    noise *= np.float32(sd_hu)
    return noise


def _inplane_gaussian(volume: np.ndarray, fwhm_mm: float, spacing: np.ndarray) -> np.ndarray:
    """Gaussian smoothing of each slice (axes y and x) with the given FWHM in mm."""
    for axis in (1, 2):
        volume = gaussian_filter1d(volume, fwhm_mm / FWHM_PER_SIGMA / spacing[axis], axis=axis, mode="nearest")
    return volume


def _gaussian_weights(fwhm_mm: float, spacing: float) -> np.ndarray:
    """The discrete kernel :func:`scipy.ndimage.gaussian_filter1d` applies."""
    sigma = fwhm_mm / FWHM_PER_SIGMA / spacing
    radius = int(4.0 * sigma + 0.5)
    delta = np.zeros(2 * radius + 1)
    delta[radius] = 1.0
    return gaussian_filter1d(delta, sigma, mode="constant")


def _random_voxel(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Index of a random voxel of a non-empty mask (rejection sampling, no index list)."""
    for _ in range(1000):
        index = rng.integers(0, mask.shape)
        if mask[tuple(index)]:
            return index
    return np.array(np.unravel_index(rng.choice(np.flatnonzero(mask)), mask.shape))
