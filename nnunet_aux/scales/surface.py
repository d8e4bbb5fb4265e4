"""Vessel surface: the voxels of the vessel wall (the set Omega of Sadikine et al., Sect. 2.1)."""

from __future__ import annotations

import numpy as np

from ._voxel_graph import FACE_OFFSETS, VoxelLookup


def surface_flags(coords: np.ndarray, shape: tuple[int, ...], *, border_is_surface: bool = False) -> np.ndarray:
    """Which voxels of a coordinate list lie on the vessel surface.

    A vessel voxel is a surface voxel when one of its 6 face neighbours is background.
    The volume border is not a vessel wall: a vessel cut by the field of view goes on
    outside it, so a neighbour outside the volume counts as vessel unless
    ``border_is_surface`` is True.

    Parameters
    ----------
    coords : ndarray of int, shape (n, 3)
        Indices of all vessel voxels (no duplicates).
    shape : tuple of 3 int
        Shape of the volume.
    border_is_surface : bool, optional
        Count the outside of the volume as background.

    Returns
    -------
    flags : ndarray of bool, shape (n,)
    """
    coords = np.asarray(coords, dtype=np.int64)
    missing = VoxelLookup(coords, shape).find(FACE_OFFSETS) < 0
    if not border_is_surface:
        # A face neighbour outside the volume is not background.
        for k, offset in enumerate(FACE_OFFSETS):
            axis = int(np.flatnonzero(offset)[0])
            edge = 0 if offset[axis] < 0 else shape[axis] - 1
            missing[coords[:, axis] == edge, k] = False
    return missing.any(axis=1)


def vessel_surface(mask: np.ndarray, *, border_is_surface: bool = False) -> np.ndarray:
    """Surface voxels of a binary vessel mask.

    The surface ``Omega`` of [1]_ is the set of vessel voxels that have a background
    voxel among their 6 face neighbours (the inner boundary of the mask).

    Parameters
    ----------
    mask : (M, N, P) ndarray of bool
        Binary vessel mask.
    border_is_surface : bool, optional
        If False (default), the outside of the volume counts as vessel: a vessel cut
        by the border of the field of view gets no wall on the cut.

    Returns
    -------
    surface : (M, N, P) ndarray of bool
        True on surface voxels.

    References
    ----------
    .. [1] A. Sadikine, B. Badic, J.-P. Tasu, V. Noblet, P. Ballet, D. Visvikis and
           P.-H. Conze, "Scale-specific auxiliary multi-task contrastive learning for
           deep liver vessel segmentation", ISBI 2023, Sect. 2.1.

    Examples
    --------
    >>> mask = np.zeros((3, 5, 5), dtype=bool)
    >>> mask[:, 1:4, 1:4] = True          # a 3 x 3 rod along the first axis
    >>> vessel_surface(mask)[1].astype(int)
    array([[0, 0, 0, 0, 0],
           [0, 1, 1, 1, 0],
           [0, 1, 0, 1, 0],
           [0, 1, 1, 1, 0],
           [0, 0, 0, 0, 0]])
    >>> int(vessel_surface(mask, border_is_surface=True)[0].sum())   # the cut end is a wall
    9
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3D, got {mask.ndim} dimensions")
    mask = mask.astype(bool, copy=False)
    coords = np.argwhere(mask)
    surface = np.zeros(mask.shape, dtype=bool)
    flags = surface_flags(coords, mask.shape, border_is_surface=border_is_surface)
    surface[tuple(coords[flags].T)] = True
    return surface
