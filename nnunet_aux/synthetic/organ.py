"""Organ-like ellipsoid and smooth random fields for synthetic CT volumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Ellipsoid:
    """Axis-aligned ellipsoid in physical coordinates (mm, ``z, y, x``).

    Attributes
    ----------
    centre_mm : tuple of float
        Centre; voxel ``(0, 0, 0)`` lies at the origin.
    semi_axes_mm : tuple of float
        Semi-axis lengths along ``z, y, x``.
    """

    centre_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]

    def level(self, points_mm: np.ndarray) -> np.ndarray:
        """Normalised squared distance: ``< 1`` inside, ``1`` on the surface.

        Parameters
        ----------
        points_mm : ndarray, shape (..., 3)
            Points in mm.

        Returns
        -------
        level : ndarray, shape (...)
            ``sum(((p - c) / a) ** 2)``.

        Examples
        --------
        >>> Ellipsoid((0, 0, 0), (1, 2, 4)).level(np.array([[0, 0, 4.0], [0, 1, 0]]))
        array([1.  , 0.25])
        """
        p = (np.asarray(points_mm, dtype=np.float64) - self.centre_mm) / self.semi_axes_mm
        return np.sum(p * p, axis=-1)


def random_organ_ellipsoid(
    shape: Sequence[int],
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    seed: int | np.random.Generator | None = None,
) -> Ellipsoid:
    """Draw a liver-like ellipsoid that fills most of a volume.

    The in-plane semi-axes cover 80-95 % of the half extent; along ``z`` the ellipsoid
    may be longer than the volume (a slab through the organ), so organ and vessels
    sometimes touch the top and bottom faces.

    Parameters
    ----------
    shape : sequence of 3 int
        Volume shape ``(nz, ny, nx)``.
    spacing : sequence of 3 float, optional
        Voxel size in mm.
    seed : int or numpy.random.Generator, optional
        Random seed or generator.

    Returns
    -------
    organ : Ellipsoid

    Examples
    --------
    >>> e = random_organ_ellipsoid((10, 20, 20), (2.0, 1.0, 1.0), seed=0)
    >>> bool(e.level(np.array([9.0, 9.5, 9.5])) < 1)
    True
    """
    rng = np.random.default_rng(seed)
    extent = _extent_mm(shape, spacing)
    half = extent / 2
    centre = half * (1 + rng.uniform(-0.05, 0.05, 3))
    axes = half * np.array([rng.uniform(0.9, 1.3), rng.uniform(0.8, 0.95), rng.uniform(0.8, 0.95)])
    return Ellipsoid(tuple(float(c) for c in centre), tuple(float(a) for a in axes))


def smooth_random_field(
    shape: Sequence[int],
    *,
    n_control: int | Sequence[int] = 4,
    seed: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Smooth 3-D random field with zero mean and unit standard deviation.

    A tensor product of 1-D Gaussian bumps spread evenly over each axis, with
    standard-normal weights. It is evaluated as three small matrix products (no
    full-volume interpolation) and standardised with moments computed exactly from
    the bumps, so a 200x512x512 field costs a few tenths of a second.

    Parameters
    ----------
    shape : sequence of 3 int
        Output shape.
    n_control : int or sequence of 3 int, optional
        Number of bumps per axis; more bumps give finer variation.
    seed : int or numpy.random.Generator, optional
        Random seed or generator.

    Returns
    -------
    field : ndarray of float32
        C-contiguous field of the given shape, mean 0 and standard deviation 1.

    Examples
    --------
    >>> f = smooth_random_field((8, 16, 16), seed=0)
    >>> f.shape, f.dtype
    ((8, 16, 16), dtype('float32'))
    >>> bool(abs(f.mean()) < 1e-5 and abs(f.std() - 1) < 1e-4)
    True
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    counts = (int(n_control),) * 3 if np.isscalar(n_control) else tuple(int(c) for c in n_control)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be 3 positive ints, got {shape}")
    if len(counts) != 3 or min(counts) < 1:
        raise ValueError(f"n_control must be a positive int or 3 of them, got {n_control}")
    weights = rng.standard_normal(counts)
    bz, by, bx = (_bumps(n, c) for n, c in zip(shape, counts))
    # Exact volume moments from the 1-D bases: the mean of each basis product
    # factorises, and E[f^2] is a quadratic form with the bases' Gram matrices.
    mean = np.einsum("ijk,i,j,k->", weights, bz.mean(0), by.mean(0), bx.mean(0))
    grams = [b.T @ b / len(b) for b in (bz, by, bx)]
    second = np.einsum("ijk,ia,jb,kc,abc->", weights, *grams, weights)
    std = np.sqrt(max(second - mean**2, 0.0)) or 1.0
    # Contract x, then y, then z, keeping every intermediate C-contiguous.
    field = (weights / std).astype(np.float32) @ bx.T.astype(np.float32)
    field = by.astype(np.float32) @ field
    field = (bz.astype(np.float32) @ field.reshape(counts[0], -1)).reshape(shape)
    field -= np.float32(mean / std)
    return field


def _bumps(n: int, count: int) -> np.ndarray:
    """``(n, count)`` Gaussian bumps evenly spread over ``n`` samples."""
    u = np.linspace(0.0, 1.0, n)[:, None]
    centres = np.linspace(0.0, 1.0, count)[None, :]
    return np.exp(-0.5 * ((u - centres) * count) ** 2)


def _extent_mm(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """Physical distance between the first and last voxel centres on each axis."""
    return (np.asarray(shape, dtype=np.float64) - 1) * np.asarray(spacing, dtype=np.float64)
