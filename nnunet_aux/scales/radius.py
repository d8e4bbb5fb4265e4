"""Local vessel radius at centreline voxels (Sadikine et al., Eq. 1)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.spatial import cKDTree

from ..errors import InputError
from ..validation import check_choice, check_positive_int

#: Sub-voxel corrections understood by :func:`local_radii`.
RADIUS_CORRECTIONS = ("none", "half_voxel", "outer_face")


def centreline_directions(centres_mm: np.ndarray, *, reach_mm: float, max_points: int = 13) -> np.ndarray:
    """Local direction of a centreline at each of its voxels.

    The direction at a voxel is the principal axis of the centreline voxels within
    ``reach_mm`` of it (at most ``max_points`` of them, the voxel itself included).
    Where fewer than two voxels are in reach (an isolated voxel), there is no
    direction and the zero vector is returned.

    Parameters
    ----------
    centres_mm : ndarray, shape (k, 3)
        Physical coordinates (mm) of the centreline voxels of one vessel component.
    reach_mm : float
        Neighbourhood radius in mm; a few voxels.
    max_points : int, optional
        Largest number of neighbours used per voxel.

    Returns
    -------
    directions : ndarray of float64, shape (k, 3)
        Unit vectors (sign arbitrary), or zero vectors.

    Examples
    --------
    >>> line = np.array([[0, 0, x] for x in range(5)], dtype=float)
    >>> np.abs(centreline_directions(line, reach_mm=2.0)).round(6).tolist()[2]
    [0.0, 0.0, 1.0]
    """
    centres = np.asarray(centres_mm, dtype=np.float64).reshape(-1, 3)
    directions = np.zeros_like(centres)
    if len(centres) < 2:
        return directions
    k = int(min(max_points, len(centres)))
    distance, index = cKDTree(centres).query(centres, k=k, distance_upper_bound=reach_mm)
    near = np.isfinite(distance)
    # Missing neighbours are reported with index len(centres): point them at the voxel
    # itself and give them zero weight.
    index = np.where(near, index, np.arange(len(centres))[:, None])
    weight = near.astype(np.float64)
    count = weight.sum(axis=1)
    points = centres[index]
    mean = (points * weight[..., None]).sum(axis=1) / count[:, None]
    centred = (points - mean[:, None, :]) * weight[..., None]
    scatter = np.einsum("nki,nkj->nij", centred, centred)
    _, vectors = np.linalg.eigh(scatter)
    principal = vectors[:, :, -1]
    has_direction = count >= 2
    directions[has_direction] = principal[has_direction]
    return directions


def local_radii(
    centres_mm: np.ndarray,
    surface_mm: np.ndarray,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    m_neighbours: int = 8,
    correction: str = "outer_face",
    directions: np.ndarray | None = None,
) -> np.ndarray:
    """Local radius at each centreline point from its ``m`` nearest surface voxels.

    Eq. 1 of [1]_: ``sigma_k = max_{p <= m} ||gamma_k - omega^p||`` where
    ``omega^1, ..., omega^m`` are the ``m`` surface voxels nearest to the centreline
    voxel ``gamma_k``. With fewer than ``m`` surface voxels, all of them are used.

    The paper estimates ``sigma_k`` "in the orthogonal cross-section with centroid
    ``gamma_k``". Given the centreline ``directions``, the distances are measured in
    that cross-section: only the part of ``omega^p - gamma_k`` perpendicular to the
    centreline counts. This matters for thin vessels, where almost every voxel is a
    surface voxel and the ``m`` nearest ones include voxels further along the
    vessel: their full distance measures the vessel's length, not its radius, and
    made vessels one voxel thick look thicker than vessels two voxels thick.

    Distances between voxel centres underestimate the radius: the surface voxels lie
    *inside* the vessel, up to one voxel from its boundary, and the nearest ones are
    the innermost. ``correction`` measures to a point further out instead:

    ``"none"``
        Voxel centre to voxel centre, as written in Eq. 1.
    ``"half_voxel"``
        Adds half a voxel along the direction ``u`` from the centreline voxel to the
        surface voxel, ``0.5 * ||u * spacing||``.
    ``"outer_face"`` (default)
        Measures to the far side of the surface voxel: adds its half-extent along
        ``u``, ``0.5 * sum_i |u_i| spacing_i``, which is the distance from the voxel
        centre to the plane that touches the voxel's outer corner (or face) and is
        perpendicular to ``u``. On rasterised tubes 3 to 6 voxels in radius (isotropic
        grid) this is the least biased of the three (about -3 % against about -8 %
        and -20 %).

    When the centreline voxel is itself a surface voxel (distance 0, as in a vessel
    one voxel thick), the direction is undefined and half the smallest spacing is
    added by both corrections.

    Parameters
    ----------
    centres_mm : ndarray, shape (k, 3)
        Physical coordinates (mm) of the centreline voxels.
    surface_mm : ndarray, shape (s, 3)
        Physical coordinates (mm) of the surface voxels, ``s >= 1``.
    spacing : sequence of 3 float, optional
        Voxel size in mm (for the correction).
    m_neighbours : int, optional
        Number ``m`` of nearest surface voxels (the paper uses 8).
    correction : {"outer_face", "half_voxel", "none"}, optional
        Sub-voxel correction, see above.
    directions : ndarray, shape (k, 3), optional
        Unit centreline direction at each centre (:func:`centreline_directions`);
        zero rows, or None, measure full distances.

    Returns
    -------
    radii : ndarray of float64, shape (k,)
        Local radius in mm of each centreline voxel.

    References
    ----------
    .. [1] A. Sadikine, B. Badic, J.-P. Tasu, V. Noblet, P. Ballet, D. Visvikis and
           P.-H. Conze, "Scale-specific auxiliary multi-task contrastive learning for
           deep liver vessel segmentation", ISBI 2023, Sect. 2.1, Eq. 1.

    Examples
    --------
    A centre with surface voxels 2 mm away along the axes of a 1 mm grid:

    >>> surface = np.array([[0, 0, 2], [0, 2, 0], [0, 0, -2], [0, -2, 0]], dtype=float)
    >>> local_radii(np.zeros((1, 3)), surface, m_neighbours=4, correction="none")
    array([2.])
    >>> local_radii(np.zeros((1, 3)), surface, m_neighbours=4)
    array([2.5])

    Measured across a vessel running along the first axis, a surface voxel 3 mm
    further along it counts with its 1 mm radial distance only:

    >>> surface = np.array([[0, 0, 1], [3, 1, 0]], dtype=float)
    >>> along = np.array([[1.0, 0, 0]])
    >>> local_radii(np.zeros((1, 3)), surface, correction="none", directions=along)
    array([1.])
    """
    check_choice(correction, RADIUS_CORRECTIONS, "correction")
    m_neighbours = check_positive_int(m_neighbours, "m_neighbours")
    if np.asarray(surface_mm).size == 0:
        raise InputError("need at least one surface voxel")
    return _local_radii(centres_mm, surface_mm, spacing=spacing, m_neighbours=m_neighbours, correction=correction,
                        directions=directions)


def _local_radii(centres_mm: np.ndarray, surface_mm: np.ndarray, *, spacing: Sequence[float], m_neighbours: int,
                 correction: str, directions: np.ndarray | None) -> np.ndarray:
    """:func:`local_radii`; inputs are trusted (validated by :func:`local_radii` or
    :func:`~nnunet_aux.scales.decompose_vessels`; at least one surface voxel)."""
    centres = np.asarray(centres_mm, dtype=np.float64).reshape(-1, 3)
    surface = np.asarray(surface_mm, dtype=np.float64).reshape(-1, 3)
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    if len(centres) == 0:
        return np.zeros(0)
    k = int(min(m_neighbours, len(surface)))
    distance, index = cKDTree(surface).query(centres, k=k)
    distance = distance.reshape(len(centres), k)
    index = index.reshape(len(centres), k)
    offset = surface[index] - centres[:, None, :]
    if directions is not None:
        axis = np.asarray(directions, dtype=np.float64).reshape(len(centres), 1, 3)
        offset = offset - (offset * axis).sum(axis=2, keepdims=True) * axis
        distance = np.linalg.norm(offset, axis=2)
    if correction == "none":
        return distance.max(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = np.abs(offset) / distance[..., None]
    if correction == "half_voxel":
        extra = 0.5 * np.linalg.norm(unit * spacing_arr, axis=2)
    else:
        extra = 0.5 * (unit * spacing_arr).sum(axis=2)
    extra[distance <= 1e-9 * spacing_arr.min()] = 0.5 * spacing_arr.min()
    return (distance + extra).max(axis=1)
