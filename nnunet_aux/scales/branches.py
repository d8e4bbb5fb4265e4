"""Split a skeleton into branches and measure their radii (Sadikine et al., Eq. 2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from ..errors import InputError
from ..validation import check_non_negative
from ._voxel_graph import adjacency_edges, connected_groups


@dataclass(frozen=True, eq=False)
class SkeletonBranches:
    """Branches of one skeleton, as returned by :func:`split_branches`.

    Attributes
    ----------
    branch : ndarray of int64, shape (k,)
        Branch index ``0..n_branches - 1`` of each skeleton voxel; -1 for voxels of
        pruned spurs.
    radius_mm : ndarray of float64, shape (n_branches,)
        Branch radius: median of the local radii of its voxels (Eq. 2).
    length_mm : ndarray of float64, shape (n_branches,)
        Length of the branch along the skeleton.
    junction : ndarray of bool, shape (k,), optional
        Whether each skeleton voxel is a junction voxel of the pruned skeleton (more
        than two live skeleton neighbours); None if not known.
    """

    branch: np.ndarray
    radius_mm: np.ndarray
    length_mm: np.ndarray
    junction: np.ndarray | None = None

    @property
    def n_branches(self) -> int:
        return int(self.radius_mm.size)


def split_branches(
    skeleton: np.ndarray,
    local_radius_mm: np.ndarray,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    min_branch_length: float = 1.0,
    max_pruning_rounds: int = 10,
) -> SkeletonBranches:
    """Cut a skeleton at its junctions into branches and give each its radius.

    A skeleton voxel with more than two skeleton voxels among its 26 neighbours is a
    junction voxel. Removing the junction voxels leaves simple chains (and loops):
    the branches ``B_j`` of [1]_. The radius of a branch is the median of the local
    radii of its voxels (Eq. 2 of [1]_); junction voxels are left out of the median
    because their local radius mixes the branches that meet there. Each group of
    touching junction voxels is then given to the thickest branch it touches (at a
    bifurcation, the parent), or becomes a branch of its own when it touches none.

    Thinning leaves spurs: short side chains caused by bumps of the voxelised wall,
    which would count as small branches and pull the quantile thresholds down.
    A branch attached to a single junction (a terminal branch, or a small loop or
    voxel triangle at a junction) whose length, the steps to the junction included,
    is shorter than ``min_branch_length`` times the largest local radius at that
    junction is removed from the skeleton, and the split is redone, up to
    ``max_pruning_rounds`` times. The vessel voxels around a removed spur later go to
    the nearest remaining branch. A genuine side branch runs at least the parent's
    radius from the parent's centreline before it leaves the parent, so a setting
    of 1 removes only stubs that hardly stick out of the parent.

    Parameters
    ----------
    skeleton : ndarray of int, shape (k, 3)
        Indices of the skeleton voxels, ``k >= 1``.
    local_radius_mm : ndarray of float, shape (k,)
        Local radius of each skeleton voxel (Eq. 1, :func:`local_radii`).
    spacing : sequence of 3 float, optional
        Voxel size in mm.
    min_branch_length : float, optional
        Spur length limit in units of the local radius at the junction; 0 keeps all
        branches.
    max_pruning_rounds : int, optional
        Pruning can expose new spurs (two spurs meeting at a junction of their own);
        the split is repeated at most this many times.

    Returns
    -------
    branches : SkeletonBranches

    References
    ----------
    .. [1] A. Sadikine, B. Badic, J.-P. Tasu, V. Noblet, P. Ballet, D. Visvikis and
           P.-H. Conze, "Scale-specific auxiliary multi-task contrastive learning for
           deep liver vessel segmentation", ISBI 2023, Sect. 2.1, Eq. 2.

    Examples
    --------
    A T-shaped skeleton: a bar of 9 voxels and a stem of 4 below its middle.

    >>> bar = [(0, 0, x) for x in range(9)]
    >>> stem = [(0, y, 4) for y in range(1, 5)]
    >>> skeleton = np.array(bar + stem)
    >>> radius = np.array([2.0] * 9 + [1.0] * 4)
    >>> split = split_branches(skeleton, radius, min_branch_length=0)
    >>> split.n_branches, split.radius_mm.tolist()
    (3, [2.0, 2.0, 1.0])
    >>> split_branches(skeleton, radius, min_branch_length=3).n_branches  # stem is a spur
    1
    """
    skeleton = np.asarray(skeleton, dtype=np.int64)
    radius = np.asarray(local_radius_mm, dtype=np.float64)
    if skeleton.ndim != 2 or skeleton.shape[1] != 3 or len(skeleton) == 0:
        raise InputError(f"skeleton must be a non-empty (k, 3) array, got shape {skeleton.shape}")
    if radius.shape != (len(skeleton),):
        raise InputError(f"local_radius_mm must have shape ({len(skeleton)},), got {radius.shape}")
    min_branch_length = check_non_negative(min_branch_length, "min_branch_length")
    return _split_branches(skeleton, radius, spacing=spacing, min_branch_length=min_branch_length,
                           max_pruning_rounds=max_pruning_rounds)


def _split_branches(skeleton: np.ndarray, radius: np.ndarray, *, spacing: Sequence[float], min_branch_length: float,
                    max_pruning_rounds: int = 10) -> SkeletonBranches:
    """:func:`split_branches`; inputs are trusted (validated by :func:`split_branches` or
    :func:`~nnunet_aux.scales.decompose_vessels`: a non-empty int64 (k, 3) skeleton, float radii)."""
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    local = skeleton - skeleton.min(axis=0)
    first, second = adjacency_edges(local, tuple(local.max(axis=0) + 1))
    edge_length = np.linalg.norm((local[first] - local[second]) * spacing_arr, axis=1)

    alive = np.ones(len(skeleton), dtype=bool)
    for _ in range(max_pruning_rounds if min_branch_length > 0 else 0):
        parts = _Partition(alive, first, second, edge_length)
        spurs = parts.spurs(radius, min_branch_length)
        if spurs.size == 0:
            break
        alive[np.isin(parts.segment, spurs)] = False
    parts = _Partition(alive, first, second, edge_length)
    branch, branch_radius = parts.branches(radius)
    return SkeletonBranches(branch=branch, radius_mm=branch_radius,
                            length_mm=_branch_lengths(branch, first, second, edge_length, branch_radius.size),
                            junction=parts.junction)


class _Partition:
    """Junction groups and simple chains of the live part of a skeleton graph."""

    def __init__(self, alive: np.ndarray, first: np.ndarray, second: np.ndarray, edge_length: np.ndarray) -> None:
        n = alive.size
        live = alive[first] & alive[second]
        f, s, length = first[live], second[live], edge_length[live]
        self.degree = np.bincount(f, minlength=n) + np.bincount(s, minlength=n)
        self.junction = alive & (self.degree > 2)
        self.plain = alive & ~self.junction
        self.segment, self.n_segments = _group(self.plain, f, s)
        self.cluster, self.n_clusters = _group(self.junction, f, s)
        # Edges from a chain voxel to a junction voxel tie segments to clusters.
        cross = (self.plain[f] & self.junction[s]) | (self.junction[f] & self.plain[s])
        chain_end = np.where(self.plain[f], f, s)[cross]
        junction_end = np.where(self.plain[f], s, f)[cross]
        pairs = np.unique(self.segment[chain_end] * max(self.n_clusters, 1) + self.cluster[junction_end])
        self.touch_segment = pairs // max(self.n_clusters, 1)
        self.touch_cluster = pairs % max(self.n_clusters, 1)
        # Chain length, the step to the junction included.
        inner = self.plain[f] & self.plain[s]
        self.segment_length = (np.bincount(self.segment[f[inner]], weights=length[inner], minlength=self.n_segments)
                               + np.bincount(self.segment[chain_end], weights=length[cross],
                                             minlength=self.n_segments))

    def spurs(self, radius: np.ndarray, min_branch_length: float) -> np.ndarray:
        """Indices of the segments to prune: short ones hanging from a single junction."""
        n_touch = np.bincount(self.touch_segment, minlength=self.n_segments)
        cluster_radius = np.zeros(max(self.n_clusters, 1))
        np.maximum.at(cluster_radius, self.cluster[self.junction], radius[self.junction])
        attached = np.zeros(self.n_segments, dtype=np.int64)
        attached[self.touch_segment] = self.touch_cluster
        hanging = n_touch == 1
        limit = min_branch_length * cluster_radius[attached]
        return np.flatnonzero(hanging & (self.segment_length < limit))

    def branches(self, radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Branch index of every voxel (-1 if not alive) and branch radii."""
        segment_radius = grouped_median(radius[self.plain], self.segment[self.plain], self.n_segments)
        branch = np.where(self.plain, self.segment, -1)
        # Each junction group joins the thickest segment it touches...
        owner = np.full(self.n_clusters, -1)
        if self.touch_segment.size:
            order = np.lexsort((-segment_radius[self.touch_segment], self.touch_cluster))
            clusters, firsts = np.unique(self.touch_cluster[order], return_index=True)
            owner[clusters] = self.touch_segment[order][firsts]
        # ... or becomes a branch of its own (a skeleton made only of junction voxels).
        lonely = np.flatnonzero(owner < 0)
        owner[lonely] = self.n_segments + np.arange(lonely.size)
        lonely_radius = grouped_median(radius[self.junction], self.cluster[self.junction], self.n_clusters)[lonely]
        branch[self.junction] = owner[self.cluster[self.junction]]
        return branch, np.concatenate([segment_radius, lonely_radius])


def _group(member: np.ndarray, first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected groups among ``member`` voxels: index per voxel (-1 for others), count."""
    inside = member[first] & member[second]
    _, group = connected_groups(member.size, first[inside], second[inside])
    result = np.full(member.size, -1, dtype=np.int64)
    if not member.any():
        return result, 0
    unique, result[member] = np.unique(group[member], return_inverse=True)
    return result, int(unique.size)


def grouped_median(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Median of ``values`` within each group ``0..n_groups - 1`` (0 for empty groups)."""
    values = np.asarray(values, dtype=np.float64)
    groups = np.asarray(groups, dtype=np.int64)
    counts = np.bincount(groups, minlength=n_groups)
    result = np.zeros(n_groups)
    if values.size == 0:
        return result
    ordered = values[np.lexsort((values, groups))]
    start = np.cumsum(counts) - counts
    full = counts > 0
    low = start[full] + (counts[full] - 1) // 2
    high = start[full] + counts[full] // 2
    result[full] = 0.5 * (ordered[low] + ordered[high])
    return result


def _branch_lengths(branch: np.ndarray, first: np.ndarray, second: np.ndarray, edge_length: np.ndarray,
                    n_branches: int) -> np.ndarray:
    """Skeleton length per branch, measured on a minimum spanning tree of the skeleton.

    The spanning tree drops the redundant edges of the small voxel triangles found at
    junctions. An edge between two branches counts half to each.
    """
    live = (branch[first] >= 0) & (branch[second] >= 0)
    n = branch.size
    graph = sparse.coo_matrix((edge_length[live], (first[live], second[live])), shape=(n, n))
    tree = csgraph.minimum_spanning_tree(graph).tocoo()
    a, b = branch[tree.row], branch[tree.col]
    return (np.bincount(a, weights=0.5 * tree.data, minlength=n_branches)
            + np.bincount(b, weights=0.5 * tree.data, minlength=n_branches))
