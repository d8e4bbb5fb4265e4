"""Branching vascular trees with Murray's-law radii, in physical coordinates."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.spatial import cKDTree

from ..validation import check_spacing
from .organ import Ellipsoid, _extent_mm, random_organ_ellipsoid


@dataclass(eq=False)
class Segment:
    """One vessel segment: between two bifurcations, or a bifurcation and a tip.

    Attributes
    ----------
    id : int
        1-based identifier (the value in ``SyntheticCase.segment_id``).
    parent : int
        Id of the parent segment, 0 for the root.
    radius_mm : float
        Constant radius of the segment (hypothesis H of [1]_).
    points_mm : ndarray, shape (N, 3)
        Centreline polyline in mm, ``z, y, x``, voxel ``(0, 0, 0)`` at the origin.
        The first point is the parent's last point (the bifurcation).
    children : tuple of int
        Ids of the two children, empty for a tip.
    generation : int
        Number of bifurcations between the root and this segment (root: 0).
    n_voxels : int
        Voxels labelled with this segment once rasterised (0 until then).

    References
    ----------
    .. [1] Sadikine et al., "Scale-specific auxiliary multi-task contrastive learning
           for deep liver vessel segmentation", ISBI 2023, Sect. 2.1.
    """

    id: int
    parent: int
    radius_mm: float
    points_mm: np.ndarray
    children: tuple[int, ...] = ()
    generation: int = 0
    n_voxels: int = 0

    @property
    def length_mm(self) -> float:
        """Arc length of the centreline in mm."""
        return float(np.linalg.norm(np.diff(self.points_mm, axis=0), axis=1).sum())


def murray_child_radii(radius_mm: float, flow_fraction: float) -> tuple[float, float]:
    """Radii of two children that satisfy Murray's law ``r0^3 = r1^3 + r2^3``.

    Parameters
    ----------
    radius_mm : float
        Parent radius ``r0``.
    flow_fraction : float
        Share of the parent's flow (``r^3``) that goes to the first child, in ``(0, 1)``.

    Returns
    -------
    r1, r2 : float
        ``r0 * f**(1/3)`` and ``r0 * (1 - f)**(1/3)``.

    References
    ----------
    .. [1] C. D. Murray, "The physiological principle of minimum work: I. The vascular
           system and the cost of blood volume", PNAS 12(3):207-214, 1926, Eq. for
           ``f ∝ r^3``.

    Examples
    --------
    >>> r1, r2 = murray_child_radii(2.0, 0.5)
    >>> round(r1, 4), round(r1**3 + r2**3, 4)
    (1.5874, 8.0)
    """
    if not 0 < flow_fraction < 1:
        raise ValueError(f"flow_fraction must lie in (0, 1), got {flow_fraction}")
    return radius_mm * flow_fraction ** (1 / 3), radius_mm * (1 - flow_fraction) ** (1 / 3)


def murray_branching_angles(r0: float, r1: float, r2: float) -> tuple[float, float]:
    """Angles (radians) between parent and children that minimise the work of flow.

    Parameters
    ----------
    r0, r1, r2 : float
        Radii of the parent and the two children.

    Returns
    -------
    theta1, theta2 : float
        Angles between the parent direction and each child direction,
        ``cos(theta1) = (r0^4 + r1^4 - r2^4) / (2 r0^2 r1^2)`` and symmetrically for
        ``theta2``; the thinner child branches off at the larger angle.

    References
    ----------
    .. [1] C. D. Murray, "The physiological principle of minimum work applied to the
           angle of branching of arteries", J. Gen. Physiol. 9(6):835-841, 1926.

    Examples
    --------
    >>> t1, t2 = murray_branching_angles(1.0, 0.5 ** (1 / 3), 0.5 ** (1 / 3))
    >>> round(float(np.degrees(t1)), 1), round(float(np.degrees(t2)), 1)
    (37.5, 37.5)
    """
    c1 = (r0**4 + r1**4 - r2**4) / (2 * r0**2 * r1**2)
    c2 = (r0**4 + r2**4 - r1**4) / (2 * r0**2 * r2**2)
    return float(np.arccos(np.clip(c1, -1, 1))), float(np.arccos(np.clip(c2, -1, 1)))


def default_root_radius(shape: Sequence[int], spacing: Sequence[float], min_radius_mm: float = 0.7) -> float:
    """Root radius that suits a volume's physical size.

    3.5 % of the geometric mean of the physical extent, at least ``2.5 * min_radius_mm``
    (so that a small demo volume still holds a few generations, hence several scales)
    and at most 8 mm (a portal vein).

    Parameters
    ----------
    shape : sequence of 3 int
        Volume shape.
    spacing : sequence of 3 float
        Voxel size in mm.
    min_radius_mm : float, optional
        Smallest radius of the tree.

    Returns
    -------
    radius_mm : float

    Examples
    --------
    >>> round(default_root_radius((48, 96, 96), (1.0, 0.8, 0.8)), 2)
    2.27
    >>> default_root_radius((200, 512, 512), (0.8, 0.7, 0.7))
    8.0
    """
    extent = _extent_mm(shape, spacing)
    return float(min(8.0, max(0.035 * np.prod(extent) ** (1 / 3), 2.5 * min_radius_mm)))


def generate_tree(
    shape: Sequence[int],
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    seed: int | np.random.Generator | None = None,
    organ: Ellipsoid | None = None,
    root_radius_mm: float | None = None,
    min_radius_mm: float = 0.7,
    curved: bool = True,
    max_bend_deg: float = 35.0,
    length_ratio: tuple[float, float] = (3.5, 8.0),
    min_flow_fraction: float = 0.1,
    angle_jitter_deg: float = 10.0,
    max_segments: int = 2000,
    n_tries: int = 12,
) -> list[Segment]:
    """Grow a random bifurcating vessel tree inside an organ-like ellipsoid.

    The root enters through a volume face (or starts just inside the organ) and heads
    towards the organ's centre. Segments are handled thickest first; each one splits
    into two children whose radii follow Murray's law ``r0^3 = r1^3 + r2^3`` with a
    random flow split, at Murray's optimal branching angles plus a random jitter, in a
    random plane. A segment becomes a tip when it is too thin to split (a child would
    fall below ``min_radius_mm``) or when ``n_tries`` random placements of its children
    all leave the organ or the volume, or come closer than one voxel to another
    vessel. A segment's length is its radius times a ratio drawn from
    ``length_ratio`` (never below 3: shorter segments are unrealistic); later placement
    attempts draw shorter children, and children too thin to split again may run up
    to twice the upper ratio, as terminal branches do.

    Parameters
    ----------
    shape : sequence of 3 int
        Volume shape ``(nz, ny, nx)``; centrelines stay inside it.
    spacing : sequence of 3 float, optional
        Voxel size in mm.
    seed : int or numpy.random.Generator, optional
        Random seed or generator; the same seed gives the same tree.
    organ : Ellipsoid, optional
        Region the tree grows in (the root may start outside it). Drawn with
        :func:`random_organ_ellipsoid` if not given.
    root_radius_mm : float, optional
        Radius of the root; :func:`default_root_radius` if not given.
    min_radius_mm : float, optional
        No segment is thinner than this.
    curved : bool, optional
        Smoothly bent centrelines if True, straight ones otherwise.
    max_bend_deg : float, optional
        Largest total turn of a curved segment's direction.
    length_ratio : (float, float), optional
        Range of segment length over radius (uniform); the lower end must be >= 3.
    min_flow_fraction : float, optional
        Smallest share of the parent's flow (``r^3``) the thinner child gets, in
        ``(0, 0.5]``; 0.5 gives symmetric bifurcations.
    angle_jitter_deg : float, optional
        Standard deviation of the random deviation from Murray's angles.
    max_segments : int, optional
        Growth stops at this many segments.
    n_tries : int, optional
        Placement attempts per bifurcation.

    Returns
    -------
    segments : list of Segment
        ``segments[i].id == i + 1``; the root is ``segments[0]``.

    Raises
    ------
    ValueError
        On invalid parameters, or when no root of the requested radius fits in the
        volume.

    References
    ----------
    .. [1] C. D. Murray, "The physiological principle of minimum work: I. The vascular
           system and the cost of blood volume", PNAS 12(3):207-214, 1926.
    .. [2] C. D. Murray, "The physiological principle of minimum work applied to the
           angle of branching of arteries", J. Gen. Physiol. 9(6):835-841, 1926.
    .. [3] P. Jassi and G. Hamarneh, "VascuSynth: Vascular tree synthesis software",
           Insight Journal, 2011.

    Examples
    --------
    >>> tree = generate_tree((48, 96, 96), (1.0, 0.8, 0.8), seed=0)
    >>> root = tree[0]
    >>> root.parent, root.generation
    (0, 0)
    >>> c1, c2 = (tree[i - 1] for i in root.children)
    >>> bool(np.isclose(c1.radius_mm**3 + c2.radius_mm**3, root.radius_mm**3))
    True
    """
    shape = _check_shape(shape)
    spacing = check_spacing(spacing)
    rng = np.random.default_rng(seed)
    if min_radius_mm <= 0:
        raise ValueError(f"min_radius_mm must be positive, got {min_radius_mm}")
    if root_radius_mm is None:
        root_radius_mm = default_root_radius(shape, spacing, min_radius_mm)
    if root_radius_mm < min_radius_mm:
        raise ValueError(f"root_radius_mm ({root_radius_mm}) is smaller than min_radius_mm ({min_radius_mm})")
    lo, hi = length_ratio
    if not 3 <= lo <= hi:
        raise ValueError(f"length_ratio must be (low, high) with 3 <= low <= high, got {length_ratio}")
    if not 0 < min_flow_fraction <= 0.5:
        raise ValueError(f"min_flow_fraction must lie in (0, 0.5], got {min_flow_fraction}")
    if max_segments < 1:
        raise ValueError(f"max_segments must be at least 1, got {max_segments}")
    if organ is None:
        organ = random_organ_ellipsoid(shape, spacing, seed=rng)
    grower = _TreeGrower(
        extent=_extent_mm(shape, spacing),
        organ=organ,
        rng=rng,
        min_radius=float(min_radius_mm),
        bend=np.radians(max_bend_deg) if curved else 0.0,
        length_ratio=(float(lo), float(hi)),
        min_flow_fraction=float(min_flow_fraction),
        angle_jitter=np.radians(angle_jitter_deg),
        gap=float(max(spacing)),
        n_tries=int(n_tries),
    )
    # A root that cannot bifurcate at all makes a poor tree: try a few roots, keep the best.
    best: list[Segment] = []
    for _ in range(10):
        segments = grower.grow(float(root_radius_mm), int(max_segments))
        if len(segments) > len(best):
            best = segments
        if len(best) >= 7 or root_radius_mm < min_radius_mm * 2 ** (1 / 3):
            break
    if not best:
        raise ValueError(f"no root of radius {root_radius_mm:.2f} mm fits in a volume of "
                         f"{_extent_mm(shape, spacing).round(1).tolist()} mm; use a smaller "
                         "root_radius_mm or a larger volume")
    return best


@dataclass
class _TreeGrower:
    """State of one tree growth: geometry, random generator and collision index."""

    extent: np.ndarray
    organ: Ellipsoid
    rng: np.random.Generator
    min_radius: float
    bend: float
    length_ratio: tuple[float, float]
    min_flow_fraction: float
    angle_jitter: float
    gap: float
    n_tries: int
    segments: list[Segment] = field(default_factory=list)
    index: _CentrelineIndex = field(default_factory=lambda: _CentrelineIndex())

    def grow(self, root_radius: float, max_segments: int) -> list[Segment]:
        """Grow one tree from a fresh root; empty if no root fits."""
        self.segments = []
        self.index = _CentrelineIndex()
        root = self._place_root(root_radius)
        if root is None:
            return []
        self._add(root, parent=None)
        # Thickest first, so that large vessels claim the space before small ones.
        queue = [(-root.radius_mm, root.id)]
        while queue and len(self.segments) + 2 <= max_segments:
            _, sid = heapq.heappop(queue)
            parent = self.segments[sid - 1]
            children = self._place_children(parent)
            if children is None:
                continue
            for child in children:
                self._add(child, parent)
                heapq.heappush(queue, (-child.radius_mm, child.id))
        return self.segments

    def _add(self, segment: Segment, parent: Segment | None) -> None:
        segment.id = len(self.segments) + 1
        if parent is not None:
            segment.parent = parent.id
            segment.generation = parent.generation + 1
            parent.children = parent.children + (segment.id,)
        self.segments.append(segment)
        self.index.add(segment.points_mm, segment.radius_mm, segment.id)

    def _place_root(self, radius: float) -> Segment | None:
        c = np.asarray(self.organ.centre_mm)
        a = np.asarray(self.organ.semi_axes_mm)
        for _ in range(50):
            # Entry direction mostly in-plane, as the portal vein enters the liver.
            u = self.rng.normal(size=3) * (0.3, 1.0, 1.0)
            u /= np.linalg.norm(u)
            hilum = c - u * np.sqrt(0.6) / np.linalg.norm(u / a)
            start = hilum
            if self.rng.random() < 0.5:
                # Extend back to the volume face the root comes through.
                with np.errstate(divide="ignore"):
                    t = np.where(u > 0, hilum / u, np.where(u < 0, (hilum - self.extent) / u, np.inf))
                start = np.clip(hilum - u * np.min(t), 0, self.extent)
            outside = np.linalg.norm(hilum - start)
            length = outside + radius * self.rng.uniform(*self.length_ratio)
            points = self._centreline(start, u, length, radius, bend=0.3 * self.bend)
            if self._inside_box(points) and self.organ.level(points[-1]) < 1:
                return Segment(id=1, parent=0, radius_mm=radius, points_mm=points)
        return None

    def _place_children(self, parent: Segment) -> tuple[Segment, Segment] | None:
        r0 = parent.radius_mm
        # The thinner child must stay >= min_radius: f >= (r_min / r0)^3.
        f_low = max(self.min_flow_fraction, (self.min_radius / r0) ** 3)
        if f_low > 0.5:
            return None
        start = parent.points_mm[-1]
        tangent = parent.points_mm[-1] - parent.points_mm[-2]
        tangent /= np.linalg.norm(tangent)
        lo, hi = self.length_ratio
        for attempt in range(self.n_tries):
            # Later attempts draw shorter children, which fit in tighter spots.
            upper = hi - (hi - lo) * attempt / self.n_tries
            r1, r2 = murray_child_radii(r0, self.rng.uniform(f_low, 0.5))
            t1, t2 = murray_branching_angles(r0, r1, r2)
            t1 += self.rng.normal(0, self.angle_jitter)
            t2 += self.rng.normal(0, self.angle_jitter)
            normal = _random_perpendicular(tangent, self.rng)
            # The two children leave on opposite sides of the parent, in one plane.
            d1 = np.cos(t1) * tangent + np.sin(t1) * normal
            d2 = np.cos(t2) * tangent - np.sin(t2) * normal
            children = []
            for r, d in ((r1, d1), (r2, d2)):
                # Terminal branches (too thin to split again) run up to twice as long.
                tip = 2.0 if r < self.min_radius * 2 ** (1 / 3) else 1.0
                length = r * self.rng.uniform(lo, tip * upper)
                points = self._centreline(start, d, length, r, bend=self.bend)
                children.append(Segment(id=0, parent=parent.id, radius_mm=r, points_mm=points))
            first, second = children
            fit = self._fits(first, parent) and self._fits(second, parent)
            if fit and self._apart(first, second, parent):
                return first, second
        return None

    def _fits(self, child: Segment, parent: Segment) -> bool:
        """Whether a child stays in the volume and organ, clear of other vessels."""
        points = child.points_mm
        if not self._inside_box(points) or np.any(self.organ.level(points) > 1):
            return False
        far = self._far_part(child, parent)
        return far.size == 0 or not self.index.collides(far, child.radius_mm + self.gap, exclude=(parent.id,))

    def _apart(self, first: Segment, second: Segment, parent: Segment) -> bool:
        """Whether two siblings keep one gap apart beyond the bifurcation."""
        for a, b in ((first, second), (second, first)):
            far = self._far_part(a, parent)
            if far.size and _min_distance(far, b.points_mm) < a.radius_mm + b.radius_mm + self.gap:
                return False
        return True

    def _far_part(self, child: Segment, parent: Segment) -> np.ndarray:
        """Centreline points beyond the bifurcation, where the child necessarily
        touches its parent and sibling."""
        points = child.points_mm
        arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
        return points[arc > parent.radius_mm + child.radius_mm + self.gap]

    def _inside_box(self, points: np.ndarray) -> bool:
        return bool(np.all(points >= 0) and np.all(points <= self.extent))

    def _centreline(self, start: np.ndarray, direction: np.ndarray, length: float, radius: float,
                    bend: float) -> np.ndarray:
        """Polyline of a given arc length, straight or smoothly bent."""
        # Steps of about half a radius keep the polyline close to a smooth curve.
        n = max(2, int(np.ceil(length / np.clip(radius / 2, 0.25, 2.0))))
        ds = length / n
        d = direction / np.linalg.norm(direction)
        points = np.empty((n + 1, 3))
        points[0] = start
        if bend > 0:
            # Turning rate (rad/mm) of a random total turn, plus a random drift so that
            # curves are not perfect circular arcs.
            turn = self.rng.uniform(0, bend)
            rate = _random_perpendicular(d, self.rng) * turn / length
            drift = turn / length * np.sqrt(ds / length)
        for k in range(n):
            if bend > 0:
                rate = rate + self.rng.normal(0, drift, 3)
                rate -= rate.dot(d) * d
                d = d + rate * ds
                d /= np.linalg.norm(d)
            points[k + 1] = points[k] + d * ds
        return points


class _CentrelineIndex:
    """Centreline points of the segments placed so far, for collision tests.

    A KD-tree over most points plus a short list of recent ones, rebuilt when the
    list grows, so that each test costs a tree query instead of a full scan.
    """

    def __init__(self) -> None:
        self.points = np.empty((0, 3))
        self.radii = np.empty(0)
        self.ids = np.empty(0, dtype=np.int64)
        self.n_indexed = 0
        self.tree: cKDTree | None = None

    def add(self, points: np.ndarray, radius: float, sid: int) -> None:
        self.points = np.concatenate([self.points, points])
        self.radii = np.concatenate([self.radii, np.full(len(points), radius)])
        self.ids = np.concatenate([self.ids, np.full(len(points), sid)])
        if len(self.points) - self.n_indexed > 512:
            self.tree = cKDTree(self.points)
            self.n_indexed = len(self.points)

    def collides(self, points: np.ndarray, reach: float, exclude: tuple[int, ...]) -> bool:
        """Whether any point lies closer than ``reach + r_other`` to another segment."""
        r_max = self.radii.max(initial=0.0)
        candidates = []
        if self.tree is not None:
            hits = self.tree.query_ball_point(points, reach + r_max)
            candidates = [np.unique(np.concatenate([np.asarray(h, dtype=np.int64) for h in hits]))]
        candidates.append(np.arange(self.n_indexed, len(self.points)))
        idx = np.concatenate(candidates)
        idx = idx[~np.isin(self.ids[idx], exclude)]
        if idx.size == 0:
            return False
        dist = np.linalg.norm(points[:, None, :] - self.points[None, idx, :], axis=-1)
        return bool(np.any(dist < reach + self.radii[idx][None, :]))


def _min_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1).min())


def _random_perpendicular(d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit vector perpendicular to ``d``, uniformly distributed around it."""
    v = rng.normal(size=3)
    v -= v.dot(d) / d.dot(d) * d
    return v / np.linalg.norm(v)


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be 3 positive ints, got {shape}")
    return shape
