"""Tests of nnunet_aux.synthetic: trees, rasterisation, images and the case contract."""

import numpy as np
import pytest

from nnunet_aux.scales import quantile_thresholds, scale_of_radius
from nnunet_aux.synthetic import (
    Ellipsoid,
    Segment,
    SyntheticCase,
    default_root_radius,
    generate_case,
    generate_tree,
    murray_branching_angles,
    murray_child_radii,
    rasterize_segments,
    smooth_random_field,
)

SHAPE = (32, 64, 64)
SPACING = (1.0, 0.8, 0.8)


@pytest.fixture(scope="module")
def case() -> SyntheticCase:
    return generate_case(SHAPE, SPACING, seed=0, n_tumours=2)


def _polyline_distance(points_mm: np.ndarray, grid_mm: np.ndarray) -> np.ndarray:
    """Brute-force distance from every grid point to a polyline (the known answer)."""
    best = np.full(grid_mm.shape[:-1], np.inf)
    for a, b in zip(points_mm[:-1], points_mm[1:]):
        ab = b - a
        t = np.clip(((grid_mm - a) @ ab) / ab.dot(ab), 0, 1)
        best = np.minimum(best, np.linalg.norm(grid_mm - (a + t[..., None] * ab), axis=-1))
    return best


def _grid_mm(shape, spacing) -> np.ndarray:
    return np.stack(np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing)), indexing="ij"), axis=-1)


# --- reproducibility, shapes, dtypes -------------------------------------------------


def test_same_seed_same_arrays(case):
    again = generate_case(SHAPE, SPACING, seed=0, n_tumours=2)
    for name in ("image", "mask", "radius_mm", "segment_id", "scale", "tumour", "organ", "thresholds_mm"):
        np.testing.assert_array_equal(getattr(case, name), getattr(again, name), err_msg=name)
    assert len(again.segments) == len(case.segments)
    for s, t in zip(case.segments, again.segments):
        np.testing.assert_array_equal(s.points_mm, t.points_mm)


def test_different_seed_different_arrays(case):
    other = generate_case(SHAPE, SPACING, seed=1, n_tumours=2)
    assert not np.array_equal(case.mask, other.mask)
    assert not np.array_equal(case.image, other.image)


def test_tumours_flag_keeps_the_tree(case):
    without = generate_case(SHAPE, SPACING, seed=0, tumours=False)
    assert not without.tumour.any()
    np.testing.assert_array_equal(without.segment_id, case.segment_id)


def test_shapes_and_dtypes(case):
    expected = {"image": np.float32, "mask": np.bool_, "radius_mm": np.float32, "segment_id": np.int32,
                "scale": np.uint8, "tumour": np.bool_, "organ": np.bool_}
    for name, dtype in expected.items():
        array = getattr(case, name)
        assert array.shape == SHAPE, name
        assert array.dtype == dtype, name
    assert case.spacing == SPACING
    assert case.thresholds_mm.shape == (2,)
    assert case.n_scales == 3
    assert np.isfinite(case.image).all()


# --- tree geometry -------------------------------------------------------------------


def test_segment_ids_parents_and_joints(case):
    segments = case.segments
    assert len(segments) >= 7
    assert [s.id for s in segments] == list(range(1, len(segments) + 1))
    assert segments[0].parent == 0 and segments[0].generation == 0
    for s in segments[1:]:
        parent = segments[s.parent - 1]
        assert s.id in parent.children
        assert s.generation == parent.generation + 1
        # A child starts where its parent ends (the bifurcation).
        np.testing.assert_allclose(s.points_mm[0], parent.points_mm[-1])


def test_murray_law_at_every_bifurcation(case):
    n_bifurcations = 0
    for s in case.segments:
        if not s.children:
            continue
        assert len(s.children) == 2
        r1, r2 = (case.segments[c - 1].radius_mm for c in s.children)
        assert r1 < s.radius_mm and r2 < s.radius_mm
        assert r1**3 + r2**3 == pytest.approx(s.radius_mm**3, rel=1e-9)
        n_bifurcations += 1
    assert n_bifurcations >= 3


def test_radius_range_and_lengths():
    segments = generate_tree((48, 96, 96), (1.0, 0.8, 0.8), seed=3, root_radius_mm=2.5, min_radius_mm=0.6)
    radii = np.array([s.radius_mm for s in segments])
    assert radii.max() == 2.5 == segments[0].radius_mm
    assert radii.min() >= 0.6
    # Several generations, so that small vessels exist.
    assert radii.min() < 1.0
    # No stubby segments: every segment is at least 3 radii long.
    for s in segments:
        assert s.length_mm >= 3 * s.radius_mm


def test_default_root_radius_scales_with_volume():
    small = default_root_radius((48, 96, 96), (1.0, 0.8, 0.8))
    assert 2.0 < small < 4.0
    assert default_root_radius((200, 512, 512), (0.8, 0.7, 0.7)) == 8.0
    assert default_root_radius((8, 8, 8), (1.0, 1.0, 1.0), min_radius_mm=0.7) == pytest.approx(1.75)


def test_tree_stays_in_volume_and_organ():
    shape, spacing = (40, 80, 80), (1.0, 0.8, 0.8)
    organ = Ellipsoid((20.0, 32.0, 32.0), (22.0, 28.0, 28.0))
    segments = generate_tree(shape, spacing, seed=5, organ=organ)
    extent = (np.array(shape) - 1) * spacing
    for s in segments:
        assert np.all(s.points_mm >= 0) and np.all(s.points_mm <= extent + 1e-9)
        if s.parent:  # the root may come from outside the organ
            assert np.all(organ.level(s.points_mm) <= 1)


def test_straight_segments_are_straight():
    for s in generate_tree((32, 64, 64), (1.0, 0.8, 0.8), seed=2, curved=False):
        direction = s.points_mm[-1] - s.points_mm[0]
        offsets = s.points_mm - s.points_mm[0]
        # Every point lies on the chord: cross product with the chord vanishes.
        np.testing.assert_allclose(np.cross(offsets, direction), 0, atol=1e-9)


def test_murray_helpers():
    r1, r2 = murray_child_radii(3.0, 0.2)
    assert r1**3 + r2**3 == pytest.approx(27.0)
    assert r1 < r2
    t1, t2 = murray_branching_angles(3.0, r1, r2)
    assert t1 > t2 > 0  # the thinner child branches off at the larger angle
    with pytest.raises(ValueError, match="flow_fraction"):
        murray_child_radii(1.0, 1.5)


# --- rasterisation -------------------------------------------------------------------


@pytest.mark.parametrize("direction", [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 1)])
def test_straight_tube_volume_with_anisotropic_spacing(direction):
    spacing = (1.5, 0.5, 0.7)
    radius, length = 3.0, 30.0
    u = np.asarray(direction, float) / np.linalg.norm(direction)
    expected = np.pi * radius**2 * length + 4 / 3 * np.pi * radius**3  # cylinder + two half-ball caps
    # A 3 mm tube is only 4 slices thick: one placement miscounts by up to ~10 %, but
    # averaged over random sub-voxel shifts the count is unbiased (lattice points in a
    # randomly shifted body = volume / voxel volume on average).
    rng = np.random.default_rng(0)
    volumes = []
    for _ in range(8):
        centre = 30.0 + rng.uniform(0, 1.5, 3)
        points = np.stack([centre - u * length / 2, centre + u * length / 2])
        ids, frac = rasterize_segments([Segment(1, 0, radius, points)], (41, 121, 87), spacing)
        volumes.append(ids.sum() * np.prod(spacing))
        assert np.array_equal(ids > 0, frac >= 0.5)
    assert np.mean(volumes) == pytest.approx(expected, rel=0.04)


def test_rasterisation_matches_brute_force_distance():
    shape, spacing = (20, 30, 26), (1.5, 0.6, 0.9)
    rng = np.random.default_rng(0)
    # A bent polyline, partly outside the grid.
    points = np.cumsum(np.vstack([[2.0, 3.0, -1.0], rng.normal(1.5, 1.0, size=(8, 3))]), axis=0)
    seg = Segment(1, 0, 2.2, points)
    ids, _ = rasterize_segments([seg], shape, spacing)
    truth = _polyline_distance(points, _grid_mm(shape, spacing)) <= 2.2
    assert truth.sum() > 100
    np.testing.assert_array_equal(ids > 0, truth)


def test_overlap_goes_to_nearest_centreline():
    shape, spacing = (16, 24, 24), (1.0, 0.7, 0.7)
    a = Segment(1, 0, 3.0, np.array([[2.0, 6.0, 2.0], [13.0, 6.0, 14.0]]))
    b = Segment(2, 0, 2.0, np.array([[2.0, 9.5, 2.0], [13.0, 9.5, 14.0]]))
    ids, _ = rasterize_segments([a, b], shape, spacing)
    grid = _grid_mm(shape, spacing)
    da, db = _polyline_distance(a.points_mm, grid), _polyline_distance(b.points_mm, grid)
    overlap = (da <= 3.0) & (db <= 2.0)
    assert overlap.sum() > 20
    np.testing.assert_array_equal(ids[overlap], np.where(da[overlap] <= db[overlap], 1, 2))
    np.testing.assert_array_equal(ids[(da <= 3.0) & ~overlap], 1)
    np.testing.assert_array_equal(ids[(db <= 2.0) & ~overlap], 2)


def test_segment_outside_grid_is_skipped():
    seg = Segment(1, 0, 1.0, np.array([[100.0, 100.0, 100.0], [110.0, 100.0, 100.0]]))
    ids, frac = rasterize_segments([seg], (8, 8, 8))
    assert not ids.any() and not frac.any()


# --- ground truth maps ---------------------------------------------------------------


def test_radius_positive_exactly_on_mask(case):
    assert case.mask.any()
    np.testing.assert_array_equal(case.radius_mm > 0, case.mask)
    np.testing.assert_array_equal(case.segment_id > 0, case.mask)
    np.testing.assert_array_equal(case.scale > 0, case.mask)
    radii = np.array([0.0] + [s.radius_mm for s in case.segments], dtype=np.float32)
    np.testing.assert_array_equal(case.radius_mm, radii[case.segment_id])


def test_voxel_counts_per_segment(case):
    counts = np.bincount(case.segment_id.ravel(), minlength=len(case.segments) + 1)
    assert [s.n_voxels for s in case.segments] == counts[1:].tolist()


def test_scale_follows_the_threshold_rule(case):
    radii = [s.radius_mm for s in case.segments if s.n_voxels > 0]
    thresholds = quantile_thresholds(radii, 3)
    np.testing.assert_array_equal(case.thresholds_mm, thresholds)
    by_id = np.array([0.0] + [s.radius_mm for s in case.segments])
    expected = scale_of_radius(by_id[case.segment_id[case.mask]], thresholds)
    np.testing.assert_array_equal(case.scale[case.mask], expected)
    assert set(np.unique(case.scale[case.mask]).tolist()) == {1, 2, 3}


def test_labels_contract():
    case = generate_case(SHAPE, SPACING, seed=2, n_scales=4, n_tumours=2)
    labels = case.labels()
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels[case.mask], case.scale[case.mask])
    assert np.all(labels[case.tumour] == 5)
    assert np.all(labels[~case.mask & ~case.tumour] == 0)
    assert set(np.unique(labels).tolist()) == {0, 1, 2, 3, 4, 5}


def test_tumours_never_overlap_vessels(case):
    assert case.tumour.any()
    assert not (case.tumour & case.mask).any()
    # Tumour blobs lie in the organ (their centres do; a blob may bulge slightly out).
    assert (case.tumour & case.organ).sum() > 0.5 * case.tumour.sum()


# --- image ---------------------------------------------------------------------------


def test_image_contrast(case):
    parenchyma = case.organ & ~case.mask & ~case.tumour
    vessel_hu = case.image[case.mask].mean()
    parenchyma_hu = case.image[parenchyma].mean()
    assert 140 < vessel_hu < 220
    assert 80 < parenchyma_hu < 120
    assert vessel_hu > parenchyma_hu + 50
    assert case.image[case.tumour].mean() < parenchyma_hu - 30
    assert case.image[~case.organ].mean() < 0


def test_noise_level():
    quiet = generate_case(SHAPE, SPACING, seed=4, noise_hu=0.0)
    noisy = generate_case(SHAPE, SPACING, seed=4, noise_hu=30.0)
    assert np.std(noisy.image - quiet.image) == pytest.approx(30.0, rel=0.02)


def test_smooth_random_field_is_standardised_and_smooth():
    field = smooth_random_field((20, 40, 30), n_control=3, seed=1)
    assert field.mean() == pytest.approx(0, abs=1e-5)
    assert field.std() == pytest.approx(1, abs=1e-4)
    # Neighbouring voxels differ far less than the field varies overall.
    assert np.abs(np.diff(field, axis=1)).max() < 0.5


# --- validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"shape": (10, 10)}, "shape"),
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing"),
        ({"n_scales": 1}, "n_scales"),
        ({"min_radius_mm": -1.0}, "min_radius_mm"),
        ({"root_radius_mm": 0.5, "min_radius_mm": 0.7}, "root_radius_mm"),
    ],
)
def test_bad_input_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_case(**{"shape": (16, 32, 32), **kwargs})


def test_volume_too_small_for_the_root_raises():
    with pytest.raises(ValueError, match="no root"):
        generate_tree((6, 6, 6), root_radius_mm=3.0)


def test_bad_length_ratio_raises():
    with pytest.raises(ValueError, match="length_ratio"):
        generate_tree((16, 32, 32), length_ratio=(2.0, 5.0))
