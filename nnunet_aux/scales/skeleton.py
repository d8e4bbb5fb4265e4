"""Centreline voxels of one connected vessel component (the skeleton Gamma of Sadikine et al.)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import skeletonize


def component_centreline(coords: np.ndarray, *, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Skeleton voxels of one 26-connected vessel component, never empty.

    The component is thinned with the 3D algorithm of Lee et al. [1]_
    (:func:`skimage.morphology.skeletonize`) inside its own bounding box, padded by
    one background voxel, so that the cost follows the component's size rather than
    the image's. Thinning ignores ``spacing`` (it is a topological operation).

    scikit-image's thinning deletes some components entirely, tubes of even
    thickness among them (a 4 x 4 voxel square tube gives an empty skeleton,
    scikit-image issue #3757). A vessel component must never vanish, so an empty
    skeleton is replaced by the voxels where the component's Euclidean distance
    transform (in mm, using ``spacing``) is largest: the innermost voxels.

    Parameters
    ----------
    coords : ndarray of int, shape (n, 3)
        Indices of the voxels of one 26-connected component, ``n >= 1``.
    spacing : sequence of 3 float, optional
        Voxel size in mm, used by the fallback only.

    Returns
    -------
    skeleton : ndarray of int64, shape (k, 3)
        Indices (in the frame of ``coords``) of the skeleton voxels, ``k >= 1``, a
        subset of ``coords``.

    References
    ----------
    .. [1] T.-C. Lee, R. L. Kashyap and C.-N. Chu, "Building skeleton models via 3-D
           medial surface/axis thinning algorithms", CVGIP: Graphical Models and
           Image Processing, 56(6):462-478, 1994.

    Examples
    --------
    >>> rod = np.argwhere(np.ones((9, 3, 3), dtype=bool))     # a 3 x 3 rod, 9 long
    >>> component_centreline(rod)[:, 1:].tolist() == [[1, 1]] * 9
    True
    >>> square = np.argwhere(np.ones((9, 4, 4), dtype=bool))  # thinning deletes it
    >>> len(component_centreline(square)) > 0
    True
    """
    coords = np.asarray(coords, dtype=np.int64)
    if coords.ndim != 2 or coords.shape[1] != 3 or len(coords) == 0:
        raise ValueError(f"coords must be a non-empty (n, 3) array, got shape {coords.shape}")
    low = coords.min(axis=0)
    # One background voxel on every side: thinning then treats a vessel cut by the
    # image border like any vessel end.
    box = np.zeros(tuple(coords.max(axis=0) - low + 3), dtype=bool)
    box[tuple((coords - low + 1).T)] = True
    thinned = skeletonize(box)
    if not thinned.any():
        depth = ndi.distance_transform_edt(box, sampling=spacing)
        thinned = depth >= depth.max() * (1 - 1e-9)
    # flatnonzero + unravel_index: several times faster than argwhere on a large box.
    skeleton = np.column_stack(np.unravel_index(np.flatnonzero(thinned), box.shape))
    return skeleton - 1 + low
