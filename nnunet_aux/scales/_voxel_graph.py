"""Neighbourhood queries on lists of voxel coordinates.

The decomposition works on the coordinates of the vessel voxels rather than on dense
arrays, so that its cost follows the number of vessel voxels, not the image size
(a 200 x 512 x 512 volume holds 52 million voxels, a liver vessel tree about 10^5).
Voxels are looked up by a linear key in a grid padded by one voxel on every side:
an offset of +-1 along any axis then never wraps around to another row, and a
neighbour outside the volume falls in the padding, where no key exists.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

#: The 6 face neighbours.
FACE_OFFSETS = np.array([o for o in itertools.product((-1, 0, 1), repeat=3) if sum(map(abs, o)) == 1])

#: Half of the 26 neighbours (lexicographically positive offsets): each undirected
#: edge between two voxels is found exactly once.
FORWARD_OFFSETS = np.array([o for o in itertools.product((-1, 0, 1), repeat=3) if o > (0, 0, 0)])


class VoxelLookup:
    """Find voxels of a coordinate list by position.

    Parameters
    ----------
    coords : ndarray of int, shape (n, 3)
        Voxel indices, all inside ``[0, shape)``.
    shape : tuple of 3 int
        Grid shape.
    """

    def __init__(self, coords: np.ndarray, shape: tuple[int, ...]) -> None:
        self.coords = np.asarray(coords, dtype=np.int64)
        self._strides = np.array([(shape[1] + 2) * (shape[2] + 2), shape[2] + 2, 1], dtype=np.int64)
        keys = (self.coords + 1) @ self._strides
        self._order = np.argsort(keys, kind="stable")
        self._sorted = keys[self._order]
        self._keys = keys

    def find(self, offsets: np.ndarray) -> np.ndarray:
        """Index (row in ``coords``) of each voxel's neighbour at each offset, -1 if absent.

        Returns an int64 array of shape ``(n, len(offsets))``.
        """
        n = self._keys.size
        result = np.full((n, len(offsets)), -1, dtype=np.int64)
        if n == 0:
            return result
        for k, offset in enumerate(np.asarray(offsets, dtype=np.int64)):
            wanted = self._keys + offset @ self._strides
            pos = np.minimum(np.searchsorted(self._sorted, wanted), n - 1)
            hit = self._sorted[pos] == wanted
            result[hit, k] = self._order[pos[hit]]
        return result


def adjacency_edges(coords: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of 26-adjacent voxels, each pair once.

    Returns
    -------
    first, second : ndarray of int64
        Row indices into ``coords`` of the two ends of each edge.
    """
    found = VoxelLookup(coords, shape).find(FORWARD_OFFSETS)
    first, which = np.nonzero(found >= 0)
    return first.astype(np.int64), found[first, which]


def connected_groups(n: int, first: np.ndarray, second: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components of a graph with ``n`` nodes given as an edge list.

    Returns
    -------
    n_groups : int
    group : ndarray of int32, shape (n,)
        Component index ``0..n_groups - 1`` of each node.
    """
    if n == 0:
        return 0, np.zeros(0, dtype=np.int32)
    graph = sparse.coo_matrix((np.ones(first.size, dtype=np.int8), (first, second)), shape=(n, n))
    n_groups, group = csgraph.connected_components(graph, directed=False)
    return int(n_groups), group.astype(np.int32)
