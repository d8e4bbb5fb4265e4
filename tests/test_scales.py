"""Known-answer tests of the vessel scale decomposition (nnunet_aux.scales)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nnunet_aux.scales import (
    ScaleDecomposition,
    assign_scales,
    component_centreline,
    decompose_vessels,
    quantile_thresholds,
    scale_of_radius,
    vessel_surface,
)

ANISO = (1.0, 0.7, 0.7)


def capsule(shape, spacing, start_mm, end_mm, radius_mm, mask=None):
    """Voxels whose centre lies within ``radius_mm`` of the segment start-end (mm)."""
    grid = np.indices(shape).reshape(3, -1).T * np.asarray(spacing)
    a, b = np.asarray(start_mm, float), np.asarray(end_mm, float)
    t = np.clip((grid - a) @ (b - a) / ((b - a) @ (b - a)), 0, 1)
    inside = (np.linalg.norm(grid - (a + t[:, None] * (b - a)), axis=1) <= radius_mm).reshape(shape)
    return inside if mask is None else mask | inside


def majority(values):
    ids, counts = np.unique(values, return_counts=True)
    return ids[np.argmax(counts)]


# --- degenerate inputs ----------------------------------------------------------------

def test_empty_mask():
    result = decompose_vessels(np.zeros((5, 6, 7), bool), spacing=ANISO)
    assert result.labels.shape == (5, 6, 7) and result.labels.dtype == np.uint8
    assert result.radius_mm.dtype == np.float32 and result.branch_ids.dtype == np.int32
    assert not result.labels.any() and not result.branch_ids.any() and not result.radius_mm.any()
    assert result.branches == () and result.n_branches == 0
    np.testing.assert_array_equal(result.thresholds_mm, [0.0, 0.0])
    summary = result.to_dict()
    assert summary["n_branches"] == 0 and summary["voxels_per_scale"] == [0, 0, 0]
    json.dumps(summary)


def test_single_voxel():
    mask = np.zeros((5, 5, 5), bool)
    mask[2, 2, 2] = True
    result = decompose_vessels(mask, spacing=ANISO)
    assert result.n_branches == 1
    assert result.branch_ids[2, 2, 2] == 1 and result.branch_ids.sum() == 1
    # Half a voxel (the smallest spacing): the radius of a single voxel.
    assert result.branches[0].radius_mm == pytest.approx(0.35)
    assert result.branches[0].n_voxels == 1
    # One branch: both quartiles equal its radius, which then falls in the top scale.
    assert result.labels[2, 2, 2] == 3 and result.labels.sum() == 3


def test_single_voxel_at_the_corner():
    mask = np.zeros((3, 3, 3), bool)
    mask[0, 0, 0] = True
    result = decompose_vessels(mask)
    assert result.n_branches == 1 and result.labels[0, 0, 0] > 0


def test_mask_filling_the_volume():
    # No wall at all inside the volume: the volume faces act as the wall.
    result = decompose_vessels(np.ones((9, 5, 5), bool))
    assert result.n_branches >= 1 and (result.labels > 0).all()
    assert 1.5 <= result.branches[0].radius_mm <= 3.5


# --- straight tubes -----------------------------------------------------------------------

@pytest.mark.parametrize("estimate, tolerance",
                         [("min_area_moments", 0.05), ("area", 0.05), ("moments", 0.05), ("median", 0.15)])
def test_straight_cylinder_anisotropic(estimate, tolerance):
    shape, radius = (30, 30, 30), 2.8  # 4 voxels in-plane, 2.8 voxels along z
    mask = capsule(shape, ANISO, (4.0, 10.5, 4.0), (25.0, 10.5, 16.0), radius)
    result = decompose_vessels(mask, spacing=ANISO, radius_estimate=estimate)
    assert result.n_branches == 1
    assert result.branches[0].radius_mm == pytest.approx(radius, rel=tolerance)
    assert result.branches[0].n_voxels == mask.sum()
    assert np.unique(result.labels[mask]).size == 1
    np.testing.assert_array_equal(result.branch_ids > 0, mask)
    np.testing.assert_allclose(result.radius_mm[mask], result.branches[0].radius_mm, rtol=1e-6)
    # Length: centreline of the capsule minus about a radius at each rounded end.
    axis = np.linalg.norm(np.subtract((25.0, 10.5, 16.0), (4.0, 10.5, 4.0)))
    assert axis - 2 * radius - 2 <= result.branches[0].length_mm <= axis + 2


def test_tube_touching_the_border():
    # A tube along z through the whole volume: the cut ends are not vessel walls, so
    # the radius near them is not underestimated.
    shape, radius = (24, 15, 15), 2.1
    mask = capsule(shape, ANISO, (-5.0, 4.9, 4.9), (30.0, 4.9, 4.9), radius)
    assert mask[0].any() and mask[-1].any()
    result = decompose_vessels(mask, spacing=ANISO, radius_estimate="median")
    assert result.n_branches == 1
    assert result.branches[0].radius_mm == pytest.approx(radius, rel=0.15)
    assert (result.labels[mask] > 0).all()
    surface = vessel_surface(mask)
    assert not surface[0][mask[0]][np.linalg.norm(np.argwhere(mask[0]) * 0.7 - 4.9, axis=1) < 1].any()


def test_even_square_tube_never_vanishes():
    # scikit-image's thinning deletes a 4 x 4 voxel square tube entirely.
    mask = np.zeros((20, 8, 8), bool)
    mask[2:18, 2:6, 2:6] = True
    result = decompose_vessels(mask, spacing=(1.0, 1.0, 1.0))
    assert result.n_branches >= 1
    np.testing.assert_array_equal(result.labels > 0, mask)
    assert 1.5 <= result.branches[0].radius_mm <= 3.0
    assert len(component_centreline(np.argwhere(mask))) > 0


def test_loop_torus():
    shape, ring, tube = (12, 40, 40), 9.0, 2.0
    z, y, x = np.indices(shape).astype(float)
    mask = (np.hypot(np.hypot(y - 19.5, x - 19.5) - ring, z - 5.5) <= tube)
    result = decompose_vessels(mask)
    assert result.n_branches == 1
    assert result.branches[0].radius_mm == pytest.approx(tube, rel=0.1)
    assert result.branches[0].length_mm == pytest.approx(2 * np.pi * ring, rel=0.1)
    np.testing.assert_array_equal(result.labels > 0, mask)


def test_separate_components_keep_their_own_branches():
    shape = (20, 30, 30)
    thin = capsule(shape, (1, 1, 1), (2, 8, 8), (17, 8, 8), 1.5)
    thick = capsule(shape, (1, 1, 1), (2, 20, 20), (17, 20, 20), 4.0)
    result = decompose_vessels(thin | thick, n_scales=2, thresholds=[2.5])
    assert result.n_branches == 2
    assert np.unique(result.branch_ids[thin]).size == 1
    assert np.unique(result.branch_ids[thick]).size == 1
    assert (result.labels[thin] == 1).all() and (result.labels[thick] == 2).all()


# --- branching ------------------------------------------------------------------------------

def y_shape():
    shape = (36, 56, 40)
    junction = (18.0, 24.0, 20.0)
    parts = {
        "parent": capsule(shape, ANISO, (18.0, 1.0, 20.0), junction, 4.0),
        "medium": capsule(shape, ANISO, junction, (18.0, 37.0, 5.0), 2.4),
        "small": capsule(shape, ANISO, junction, (18.0, 37.0, 26.0), 1.3),
    }
    return parts


def test_y_shape_three_radii():
    parts = y_shape()
    mask = parts["parent"] | parts["medium"] | parts["small"]
    result = decompose_vessels(mask, spacing=ANISO)
    assert result.n_branches == 3
    # Judge each part away from the junction, where parts overlap.
    ids = {}
    for name, part in parts.items():
        core = part & ~np.any([p for n, p in parts.items() if n != name], axis=0)
        ids[name] = majority(result.branch_ids[core])
    assert len(set(ids.values())) == 3
    radius = {name: result.branches[i - 1].radius_mm for name, i in ids.items()}
    assert radius["small"] < radius["medium"] < radius["parent"]
    assert radius["parent"] == pytest.approx(4.0, rel=0.1)
    assert radius["medium"] == pytest.approx(2.4, rel=0.15)
    scale = {name: result.branches[i - 1].scale for name, i in ids.items()}
    assert scale == {"small": 1, "medium": 2, "parent": 3}
    for name, part in parts.items():
        assert np.mean(result.labels[part] == scale[name]) > 0.8


def test_junction_voxels_do_not_take_the_childrens_start():
    # Truth as the synthetic trees define it: a voxel belongs to the nearest centreline
    # among the tubes that contain it. The skeleton's junction lies inside the fork,
    # downstream of the branching point; with Eq. 3 over all skeleton voxels its
    # junction voxels (the parent's) take the first stretch of both children.
    parts = y_shape()
    names = list(parts)
    ends = {"parent": ((18.0, 1.0, 20.0), (18.0, 24.0, 20.0)), "medium": ((18.0, 24.0, 20.0), (18.0, 37.0, 5.0)),
            "small": ((18.0, 24.0, 20.0), (18.0, 37.0, 26.0))}
    shape = parts["parent"].shape
    grid = np.indices(shape).reshape(3, -1).T * np.asarray(ANISO)

    def distance(a, b):
        a, b = np.asarray(a), np.asarray(b)
        t = np.clip((grid - a) @ (b - a) / ((b - a) @ (b - a)), 0, 1)
        return np.linalg.norm(grid - (a + t[:, None] * (b - a)), axis=1).reshape(shape)

    owner = np.argmin([np.where(parts[n], distance(*ends[n]), np.inf) for n in names], axis=0)
    mask = np.any([parts[n] for n in names], axis=0)
    share = {}
    for setting in ("chains", "all"):
        result = decompose_vessels(mask, spacing=ANISO, nearest_skeleton=setting)
        for i, name in enumerate(names):
            truth = mask & (owner == i)
            share[setting, name] = np.mean(result.branch_ids[truth] == majority(result.branch_ids[truth]))
    for child in ("medium", "small"):
        assert share["chains", child] > share["all", child]
        assert share["chains", child] >= 0.95
    assert share["chains", "parent"] >= 0.9


def test_spur_pruning():
    tube = capsule((30, 24, 24), (1, 1, 1), (3, 11, 11), (26, 11, 11), 4.0)
    # A stub sticking 2 voxels out of the wall gives a spur in the skeleton...
    bump = capsule(tube.shape, (1, 1, 1), (15, 11, 11), (15, 11, 15.5), 1.5, tube)
    assert decompose_vessels(bump, min_branch_length=0).n_branches == 3
    assert decompose_vessels(bump).n_branches == 1
    # ... a side branch 5.5 voxels long is kept.
    side = capsule(tube.shape, (1, 1, 1), (15, 11, 11), (15, 11, 19), 1.5, tube)
    result = decompose_vessels(side)
    assert result.n_branches == 3
    radii = sorted(result.branch_radii_mm)
    assert radii[0] == pytest.approx(1.5, rel=0.2) and radii[1] == pytest.approx(4.0, rel=0.1)


# --- scales and thresholds -------------------------------------------------------------------

@pytest.mark.parametrize("n_scales", [2, 3, 4])
def test_number_of_scales(n_scales):
    parts = y_shape()
    mask = parts["parent"] | parts["medium"] | parts["small"]
    result = decompose_vessels(mask, spacing=ANISO, n_scales=n_scales)
    assert result.n_scales == n_scales and result.thresholds_mm.shape == (n_scales - 1,)
    assert result.labels.max() <= n_scales and (result.labels[mask] >= 1).all()
    radii = result.branch_radii_mm
    np.testing.assert_allclose(result.thresholds_mm, quantile_thresholds(radii, n_scales))
    # Larger branches never get a smaller scale.
    order = np.argsort(radii)
    assert np.all(np.diff([result.branches[i].scale for i in order]) >= 0)


def test_fixed_thresholds_and_quantiles():
    parts = y_shape()
    mask = parts["parent"] | parts["medium"] | parts["small"]
    fixed = decompose_vessels(mask, spacing=ANISO, thresholds=[100.0, 200.0])
    assert (fixed.labels[mask] == 1).all()
    np.testing.assert_array_equal(fixed.thresholds_mm, [100.0, 200.0])
    median = decompose_vessels(mask, spacing=ANISO, n_scales=2, quantiles=[0.5])
    np.testing.assert_allclose(median.thresholds_mm, [np.median(median.branch_radii_mm)])


def test_assign_scales_relabels_without_recomputing():
    parts = y_shape()
    mask = parts["parent"] | parts["medium"] | parts["small"]
    result = decompose_vessels(mask, spacing=ANISO)
    radii = result.branch_radii_mm
    middle = float(np.sort(radii)[1])
    relabelled = assign_scales(result, [middle])
    assert isinstance(relabelled, ScaleDecomposition) and relabelled.n_scales == 2
    np.testing.assert_array_equal(relabelled.branch_ids, result.branch_ids)
    np.testing.assert_array_equal(relabelled.radius_mm, result.radius_mm)
    expected = np.concatenate([[0], scale_of_radius(radii, [middle])])[result.branch_ids]
    np.testing.assert_array_equal(relabelled.labels, expected)
    assert [b.scale for b in relabelled.branches] == list(scale_of_radius(radii, [middle]))
    # The original is untouched (frozen result, new arrays).
    assert result.n_scales == 3 and result.labels.max() == 3
    json.dumps(relabelled.to_dict())


def test_to_dict_summary():
    parts = y_shape()
    mask = parts["parent"] | parts["medium"] | parts["small"]
    summary = decompose_vessels(mask, spacing=ANISO).to_dict()
    assert summary["n_branches"] == len(summary["branches"]) == 3
    assert summary["n_vessel_voxels"] == mask.sum() == sum(b["n_voxels"] for b in summary["branches"])
    assert sum(summary["voxels_per_scale"]) == mask.sum()
    assert set(summary["branches"][0]) == {"id", "n_voxels", "length_mm", "radius_mm", "scale"}
    assert summary["spacing"] == list(ANISO)
    json.dumps(summary)


# --- invalid input --------------------------------------------------------------------------

@pytest.mark.parametrize(
    "mask, kwargs, message",
    [
        (np.zeros((4, 4), bool), {}, "3D"),
        (np.zeros((2, 4, 4, 4), bool), {}, "3D"),
        (np.full((4, 4, 4), 2), {}, "binary"),
        (np.full((4, 4, 4), 0.5), {}, "binary"),
        (np.zeros((4, 4, 4), bool), {"spacing": (1.0, 1.0)}, "spacing"),
        (np.zeros((4, 4, 4), bool), {"spacing": (1.0, -1.0, 1.0)}, "spacing"),
        (np.zeros((4, 4, 4), bool), {"spacing": (1.0, np.nan, 1.0)}, "spacing"),
        (np.zeros((4, 4, 4), bool), {"spacing": "abc"}, "spacing"),
        (np.zeros((4, 4, 4), bool), {"n_scales": 1}, "n_scales"),
        (np.zeros((4, 4, 4), bool), {"thresholds": [1.0]}, "thresholds"),
        (np.zeros((4, 4, 4), bool), {"thresholds": [2.0, 1.0]}, "non-decreasing"),
        (np.zeros((4, 4, 4), bool), {"thresholds": [1.0, 2.0], "quantiles": [0.2, 0.8]}, "not both"),
        (np.zeros((4, 4, 4), bool), {"quantiles": [0.8, 0.2]}, "quantile"),
        (np.zeros((4, 4, 4), bool), {"m_neighbours": 0}, "m_neighbours"),
        (np.zeros((4, 4, 4), bool), {"radius_estimate": "mean"}, "radius_estimate"),
        (np.zeros((4, 4, 4), bool), {"radius_correction": "full"}, "radius_correction"),
        (np.zeros((4, 4, 4), bool), {"min_branch_length": -1}, "min_branch_length"),
        (np.zeros((4, 4, 4), bool), {"nearest_skeleton": "junctions"}, "nearest_skeleton"),
    ],
)
def test_invalid_input(mask, kwargs, message):
    with pytest.raises(ValueError, match=message):
        decompose_vessels(mask, **kwargs)


def test_assign_scales_invalid_input():
    result = decompose_vessels(np.ones((3, 3, 3), bool))
    with pytest.raises(ValueError, match="threshold"):
        assign_scales(result, [])
    with pytest.raises(ValueError, match="non-decreasing"):
        assign_scales(result, [2.0, 1.0])
    with pytest.raises(ValueError, match="ScaleDecomposition"):
        assign_scales(result.to_dict(), [1.0])


def test_integer_mask_accepted():
    mask = capsule((12, 12, 12), (1, 1, 1), (2, 6, 6), (9, 6, 6), 2.0)
    as_bool = decompose_vessels(mask)
    as_int = decompose_vessels(mask.astype(np.uint8))
    np.testing.assert_array_equal(as_bool.labels, as_int.labels)
