"""Tests of the building blocks of the scale decomposition."""

from __future__ import annotations

import numpy as np
import pytest

from nnunet_aux.scales import (
    centreline_directions,
    component_centreline,
    cross_section_radii,
    local_radii,
    moment_radii,
    split_branches,
    vessel_surface,
)


def test_vessel_surface_border_rule():
    mask = np.zeros((4, 5, 5), bool)
    mask[:, 1:4, 1:4] = True
    inner = vessel_surface(mask)
    assert not inner[:, 2, 2].any()                 # the rod's axis, cut ends included
    walls = vessel_surface(mask, border_is_surface=True)
    assert walls[0, 2, 2] and walls[-1, 2, 2] and not walls[1, 2, 2]
    with pytest.raises(ValueError, match="3D"):
        vessel_surface(mask[0])


@pytest.mark.parametrize("correction, expected", [("none", 2.0), ("half_voxel", 2.35), ("outer_face", 2.35)])
def test_local_radii_corrections_along_an_axis(correction, expected):
    spacing = (1.0, 0.7, 0.7)
    surface = np.array([[0.0, 2.0, 0.0], [0.0, -2.0, 0.0]])
    assert local_radii(np.zeros((1, 3)), surface, spacing=spacing, m_neighbours=2,
                       correction=correction)[0] == pytest.approx(expected)


def test_local_radii_diagonal_outer_face():
    surface = np.array([[0.0, 3.0, 4.0]])
    radius = local_radii(np.zeros((1, 3)), surface, m_neighbours=8, correction="outer_face")[0]
    assert radius == pytest.approx(5.0 + 0.5 * (0.6 + 0.8))


def test_local_radii_invalid():
    with pytest.raises(ValueError, match="correction"):
        local_radii(np.zeros((1, 3)), np.ones((1, 3)), correction="full")
    with pytest.raises(ValueError, match="m_neighbours"):
        local_radii(np.zeros((1, 3)), np.ones((1, 3)), m_neighbours=0)
    with pytest.raises(ValueError, match="surface"):
        local_radii(np.zeros((1, 3)), np.zeros((0, 3)))


def test_centreline_directions_of_a_diagonal_and_a_point():
    diagonal = np.array([[i, i, 0] for i in range(6)], dtype=float)
    directions = centreline_directions(diagonal, reach_mm=3.0)
    np.testing.assert_allclose(np.abs(directions[3]), [2 ** -0.5, 2 ** -0.5, 0], atol=1e-9)
    np.testing.assert_array_equal(centreline_directions(np.zeros((1, 3)), reach_mm=3.0), [[0, 0, 0]])


def test_component_centreline_is_a_subset_and_handles_vanishing_tubes():
    for width in (2, 3, 4, 6):
        mask = np.zeros((16, 10, 10), bool)
        mask[2:14, 2:2 + width, 2:2 + width] = True
        coords = np.argwhere(mask)
        skeleton = component_centreline(coords)
        assert len(skeleton) > 0
        assert mask[tuple(skeleton.T)].all()
    with pytest.raises(ValueError, match="non-empty"):
        component_centreline(np.zeros((0, 3), int))


def test_split_branches_at_a_cross():
    arms = [(0, 0, x) for x in range(-5, 6)] + [(0, y, 0) for y in range(-5, 6) if y != 0]
    skeleton = np.array(arms) + 5
    split = split_branches(skeleton, np.ones(len(skeleton)), min_branch_length=0)
    assert split.n_branches == 4
    assert (split.branch >= 0).all()
    np.testing.assert_allclose(split.radius_mm, 1.0)
    assert split.length_mm.sum() == pytest.approx(20.0, abs=2.0)


def test_split_branches_invalid():
    with pytest.raises(ValueError, match="local_radius_mm"):
        split_branches(np.zeros((2, 3), int), np.ones(3))
    with pytest.raises(ValueError, match="min_branch_length"):
        split_branches(np.zeros((1, 3), int), np.ones(1), min_branch_length=-1)


def test_cross_section_radii_falls_back_without_length():
    radius = cross_section_radii(np.zeros((1, 3), int), np.zeros(1, int), np.ones(1), np.zeros((1, 3)),
                                 np.array([0.42]))
    np.testing.assert_array_equal(radius, [0.42])


def tube_points(radius, spacing=(1.0, 1.0, 1.0), bend=False):
    """Voxel centres (mm) of a straight tube along the first axis, or of an L of two tubes."""
    z, y, x = (np.indices((24, 24, 24)).reshape(3, -1).T * np.asarray(spacing)).T
    inside = (y - 6.3) ** 2 + (x - 6.3) ** 2 <= radius ** 2  # off the grid's symmetry
    if bend:
        inside = (inside & (z <= 12)) | ((z - 12.3) ** 2 + (x - 6.3) ** 2 <= radius ** 2) & (y >= 6.3)
    return np.column_stack([z, y, x])[inside]


@pytest.mark.parametrize("radius, spacing", [(1.5, (1.0, 1.0, 1.0)), (3.0, (1.0, 1.0, 1.0)), (2.1, (1.0, 0.7, 0.7))])
def test_moment_radii_of_straight_tubes(radius, spacing):
    points = tube_points(radius, spacing)
    assert moment_radii(points, np.zeros(len(points), int), 1)[0] == pytest.approx(radius, rel=0.06)


def test_moment_radii_grow_on_a_bend_and_need_four_voxels():
    straight, bent = tube_points(2.0), tube_points(2.0, bend=True)
    assert moment_radii(bent, np.zeros(len(bent), int), 1)[0] > 1.5 * moment_radii(
        straight, np.zeros(len(straight), int), 1)[0]
    # Two branches: the second has 3 voxels only; a third has none.
    points = np.vstack([straight, [[0.0, 0, 0], [0, 0, 1], [0, 1, 0]]])
    branch = np.r_[np.zeros(len(straight), int), [1, 1, 1]]
    radius = moment_radii(points, branch, 3)
    assert radius[0] == pytest.approx(2.0, rel=0.06)
    assert np.isnan(radius[1:]).all()
    assert np.isnan(moment_radii(np.zeros((0, 3)), np.zeros(0, int), 2)).all()
    with pytest.raises(ValueError, match="branch"):
        moment_radii(points, branch[:-1], 3)


def test_sparse_outputs_are_zeros_and_leave_numpy_huge_page_advice_as_it_was():
    from nnunet_aux.scales.decomposition import _zeros_for_scattered_writes

    switch = getattr(getattr(getattr(np, "_core", None), "multiarray", None), "_set_madvise_hugepage", None)
    for state in ((True, False) if switch is not None else (None,)):
        if switch is not None:
            switch(state)
        out = _zeros_for_scattered_writes((3, 1024, 1024), np.float32)  # 12 MB: above numpy's advice threshold
        assert out.dtype == np.float32 and out.shape == (3, 1024, 1024) and not out.any()
        if switch is not None:
            assert switch(True) is state  # restored to what it was before the call
