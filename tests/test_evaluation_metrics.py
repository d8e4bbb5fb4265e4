"""Vessel metrics on synthetic shapes whose values are known by hand."""

import itertools
import warnings

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from nnunet_aux.evaluation import (
    cldice,
    count_components,
    dice_coefficient,
    directed_surface_distances,
    jaccard_index,
    mask_skeleton,
    missed_components,
    scale_metrics,
    summarize,
    surface_distance_metrics,
    surface_voxels,
    vessel_metrics,
)


def tube(shape=(7, 7, 24), center=(3, 3), radius=1, x_range=(2, 22)):
    """Square-section tube along the last axis: (2 radius + 1)^2 voxels per slice."""
    mask = np.zeros(shape, dtype=bool)
    z, y = center
    mask[z - radius : z + radius + 1, y - radius : y + radius + 1, x_range[0] : x_range[1]] = True
    return mask


def line(shape, start, length, axis):
    """A one-voxel-thick line: every voxel is a surface voxel."""
    mask = np.zeros(shape, dtype=bool)
    index = list(start)
    index[axis] = slice(start[axis], start[axis] + length)
    mask[tuple(index)] = True
    return mask


# ---------------------------------------------------------------------------- identity


def test_tube_against_itself_is_perfect():
    ref = tube()
    m = vessel_metrics(ref, ref, spacing=(2.0, 0.8, 0.5))
    assert m["dice"] == m["jaccard"] == m["cldice"] == 1.0
    assert m["hd"] == m["hd95"] == m["assd"] == 0.0
    assert m["n_ref"] == m["n_pred"] == 9 * 20
    assert m["components_ref"] == m["components_pred"] == 1
    assert m["missed_components"] == 0


def test_keys_and_types():
    m = vessel_metrics(tube(), tube())
    assert set(m) >= {"dice", "jaccard", "cldice", "hd", "hd95", "assd", "n_ref", "n_pred",
                      "components_ref", "components_pred", "missed_components"}
    assert all(isinstance(m[k], float) for k in ("dice", "jaccard", "cldice", "hd", "hd95", "assd"))
    assert all(type(m[k]) is int for k in ("n_ref", "n_pred", "components_ref", "missed_components"))


# ------------------------------------------------------------------------ shifted lines


def test_shifted_line_by_hand():
    # Reference: 20 voxels along x; prediction: the same shifted by k = 3 voxels of sx mm.
    # Directed distances in each direction: 17 zeros, then sx, 2 sx, 3 sx.
    sx, length, k = 0.5, 20, 3
    ref = line((3, 3, 30), (1, 1, 2), length, axis=2)
    pred = line((3, 3, 30), (1, 1, 2 + k), length, axis=2)
    m = vessel_metrics(pred, ref, spacing=(2.0, 1.5, sx))
    assert m["dice"] == pytest.approx((length - k) / length)
    assert m["jaccard"] == pytest.approx((length - k) / (length + k))
    assert m["hd"] == pytest.approx(k * sx)
    # numpy linear percentile of 20 sorted values: position 0.95 * 19 = 18.05,
    # between 2 sx (index 18) and 3 sx (index 19).
    assert m["hd95"] == pytest.approx((2 + 0.05) * sx)
    # ASSD: both directions have the same sum sx (1 + 2 + 3) over 20 values each.
    assert m["assd"] == pytest.approx(2 * sx * k * (k + 1) / 2 / (2 * length))


def test_anisotropic_spacing_scales_distances_along_the_shift_axis():
    spacing = (2.0, 1.0, 0.5)
    ref = line((12, 3, 12), (1, 1, 1), 10, axis=0)
    pred_z = line((12, 3, 12), (2, 1, 1), 10, axis=0)          # shifted 1 voxel along z
    m_z = surface_distance_metrics(pred_z, ref, spacing=spacing)
    assert m_z["hd"] == pytest.approx(2.0)
    ref_x = line((12, 3, 12), (1, 1, 1), 10, axis=2)
    pred_x = line((12, 3, 12), (1, 1, 2), 10, axis=2)          # shifted 1 voxel along x
    m_x = surface_distance_metrics(pred_x, ref_x, spacing=spacing)
    assert m_x["hd"] == pytest.approx(0.5)
    # Same geometry, 4x the spacing along the shift axis: every distance is 4x larger.
    assert m_z["assd"] == pytest.approx(4 * m_x["assd"])
    # Isotropic spacing: the two shifts are the same geometry.
    assert surface_distance_metrics(pred_z, ref, spacing=1.0) == surface_distance_metrics(pred_x, ref_x)


def test_parallel_lines_offset_diagonally():
    # Two parallel lines one voxel apart along y and z: distance sqrt(sy^2 + sz^2).
    ref = line((4, 4, 10), (1, 1, 0), 10, axis=2)
    pred = line((4, 4, 10), (2, 2, 0), 10, axis=2)
    m = surface_distance_metrics(pred, ref, spacing=(3.0, 4.0, 1.0))
    assert m == {"hd": 5.0, "hd95": 5.0, "assd": 5.0}


# ------------------------------------------------------------------ brute-force agreement


def brute_force_surface_distances(pred, ref, spacing):
    """All-pairs distances between surface voxels, surfaces found by a voxel loop."""

    def surface_points(mask):
        points = []
        for index in zip(*np.nonzero(mask)):
            for axis, step in itertools.product(range(mask.ndim), (-1, 1)):
                neighbour = list(index)
                neighbour[axis] += step
                outside = not 0 <= neighbour[axis] < mask.shape[axis]
                if outside or not mask[tuple(neighbour)]:
                    points.append(index)
                    break
        return np.array(points, dtype=float) * np.asarray(spacing)

    distances = cdist(surface_points(pred), surface_points(ref))
    d_pred_ref, d_ref_pred = distances.min(axis=1), distances.min(axis=0)
    return {
        "hd": max(d_pred_ref.max(), d_ref_pred.max()),
        "hd95": max(np.percentile(d_pred_ref, 95), np.percentile(d_ref_pred, 95)),
        "assd": np.concatenate([d_pred_ref, d_ref_pred]).mean(),
    }


@pytest.mark.parametrize("seed", range(4))
def test_surface_distances_agree_with_brute_force(seed):
    rng = np.random.default_rng(seed)
    shape = (6, 7, 8)
    # Random voxel clouds, many voxels on the array border: every surface case occurs.
    ref = rng.random(shape) < 0.35
    pred = rng.random(shape) < 0.25
    pred[:2] = False
    spacing = (2.5, 0.7, 1.1)
    got = surface_distance_metrics(pred, ref, spacing=spacing)
    expected = brute_force_surface_distances(pred, ref, spacing)
    for key in ("hd", "hd95", "assd"):
        assert got[key] == pytest.approx(expected[key], rel=1e-12), key


def test_brute_force_agreement_2d_and_far_apart_objects():
    ref = np.zeros((9, 30), dtype=bool)
    ref[1:4, 1:6] = True
    pred = np.zeros_like(ref)
    pred[5:8, 20:29] = True          # far away: the common box must hold both
    spacing = (1.3, 0.6)
    got = surface_distance_metrics(pred, ref, spacing=spacing)
    expected = brute_force_surface_distances(pred, ref, spacing)
    for key in ("hd", "hd95", "assd"):
        assert got[key] == pytest.approx(expected[key], rel=1e-12), key


def test_surface_includes_array_border():
    mask = np.ones((3, 4, 5), dtype=bool)
    surface = surface_voxels(mask)
    assert surface.sum() == mask.sum() - 1 * 2 * 3   # only the 1x2x3 interior is not surface
    assert directed_surface_distances(mask, mask).max() == 0


# --------------------------------------------------------------------------- components


def test_two_disjoint_tubes_one_missed():
    first = tube(shape=(9, 9, 24), center=(2, 2))
    second = tube(shape=(9, 9, 24), center=(6, 6))
    ref = first | second
    m = vessel_metrics(first, ref)
    assert m["components_ref"] == 2
    assert m["components_pred"] == 1
    assert m["missed_components"] == 1
    assert m["dice"] == pytest.approx(2 / 3)
    assert m["cldice"] < 1.0
    # Touching the second tube with a single voxel counts it as found.
    pred = first.copy()
    pred[6, 6, 10] = True
    assert missed_components(pred, ref) == 0


def test_components_use_full_connectivity():
    mask = np.zeros((3, 3, 3), dtype=bool)
    mask[0, 0, 0] = mask[1, 1, 1] = mask[2, 2, 2] = True   # corner neighbours: one component
    assert count_components(mask) == 1
    assert count_components(np.zeros((3, 3, 3), dtype=bool)) == 0
    flat = np.zeros((3, 3), dtype=bool)
    flat[0, 0] = flat[1, 1] = True
    assert count_components(flat) == 1


# ------------------------------------------------------------------------------- clDice


def test_cldice_tube_with_gap():
    ref = tube()                                  # 3x3 section, x in [2, 22)
    skeleton = mask_skeleton(ref)
    # The skeleton of the bar is a straight part of its axis.
    z, y, x = np.nonzero(skeleton)
    assert set(z) == {3} and set(y) == {3}
    n = int(skeleton.sum())
    assert skeleton[3, 3, 12]
    pred = ref.copy()
    pred[:, :, 12] = False                        # a one-slice gap cuts one skeleton voxel
    # Tprec = 1 (the pieces' skeletons lie in the reference), Tsens = (n - 1) / n.
    t_sens = (n - 1) / n
    assert cldice(pred, ref) == pytest.approx(2 * t_sens / (1 + t_sens))
    # The gap costs clDice more than Dice: 2 voxels of 180 vs 1 of n skeleton voxels.
    assert dice_coefficient(pred, ref) > cldice(pred, ref)


def test_cldice_is_symmetric_and_zero_for_disjoint():
    a = tube(shape=(9, 9, 24), center=(2, 2))
    b = tube(shape=(9, 9, 24), center=(6, 6))
    assert cldice(a, b) == 0.0
    gap = a.copy()
    gap[:, :, 10] = False
    assert cldice(gap, a) == pytest.approx(cldice(a, gap))


def test_cldice_even_thickness_uses_mask_as_skeleton():
    # scikit-image's 3D thinning erases a 2x2xN bar; the mask stands for its skeleton.
    bar = np.zeros((4, 4, 12), dtype=bool)
    bar[1:3, 1:3, 1:11] = True
    assert np.array_equal(mask_skeleton(bar), bar)
    assert cldice(bar, bar) == 1.0
    half = bar.copy()
    half[:, :, 6:] = False
    # Tprec = 1, Tsens = |bar ∩ half| / |bar| = 1/2.
    assert cldice(half, bar) == pytest.approx(2 * 0.5 / 1.5)


def test_skeleton_of_mask_touching_border():
    # The bounding box is padded with background even at the array border.
    bar = np.zeros((3, 3, 9), dtype=bool)
    bar[:, :, :] = True
    skeleton = mask_skeleton(bar)
    assert skeleton.any() and np.all(skeleton <= bar)
    assert set(np.nonzero(skeleton)[0]) == {1}


def test_cldice_2d():
    ref = np.zeros((7, 20), dtype=bool)
    ref[2:5, 1:19] = True
    assert cldice(ref, ref) == 1.0
    pred = ref.copy()
    pred[:, 10] = False
    assert 0.8 < cldice(pred, ref) < 1.0


# ---------------------------------------------------------------------------- empty masks


def test_both_empty():
    empty = np.zeros((4, 5, 6), dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = vessel_metrics(empty, empty, spacing=(2.0, 1.0, 0.5))
    assert m["dice"] == m["jaccard"] == m["cldice"] == 1.0
    assert m["hd"] == m["hd95"] == m["assd"] == 0.0
    assert m["components_ref"] == m["missed_components"] == m["n_pred"] == 0


@pytest.mark.parametrize("empty_side", ["pred", "ref"])
def test_one_empty_gives_zero_overlap_and_the_diagonal(empty_side):
    shape, spacing = (4, 5, 6), (2.0, 1.0, 0.5)
    full = np.zeros(shape, dtype=bool)
    full[1:3, 1:4, 1:5] = True
    empty = np.zeros(shape, dtype=bool)
    pred, ref = (empty, full) if empty_side == "pred" else (full, empty)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = vessel_metrics(pred, ref, spacing=spacing)
    assert m["dice"] == m["jaccard"] == m["cldice"] == 0.0
    diagonal = np.sqrt(8.0**2 + 5.0**2 + 3.0**2)
    assert m["hd"] == m["hd95"] == m["assd"] == pytest.approx(diagonal)
    assert all(np.isfinite(v) for v in m.values())
    assert m["missed_components"] == (1 if empty_side == "pred" else 0)


# --------------------------------------------------------------------------- per scale


def test_scale_recall_and_dice_by_hand():
    # Three parallel lines along x: small (label 1), medium (2), large (3).
    ref = np.zeros((1, 9, 12), dtype=np.uint8)
    ref[0, 1, 1:11] = 1
    ref[0, 4, 1:11] = 2
    ref[0, 7, 1:11] = 3
    ref[0, 8, 0] = 4                                  # another structure: ignored
    pred = np.zeros(ref.shape, dtype=bool)
    pred[0, 1, 1:6] = True                            # half of the small vessel
    pred[0, 0, 1:3] = True                            # 2 false positives next to it
    pred[0, 7, 1:11] = True                           # the whole large vessel
    m = scale_metrics(pred, ref, {"small": 1, "medium": 2, "large": 3})
    assert m["small"]["recall"] == 0.5
    assert m["small"]["n_pred"] == 7 and m["small"]["n_hit"] == 5
    assert m["small"]["dice"] == pytest.approx(2 * 5 / (7 + 10))
    assert m["medium"]["recall"] == 0.0 and m["medium"]["dice"] == 0.0
    assert m["large"]["recall"] == 1.0 and m["large"]["dice"] == 1.0


def test_scale_assignment_respects_spacing():
    # A false positive two voxels from a small vessel along z and from a large one along x.
    ref = np.zeros((5, 1, 5), dtype=np.uint8)
    ref[0, 0, 2] = 1
    ref[2, 0, 4] = 3
    pred = np.zeros(ref.shape, dtype=bool)
    pred[2, 0, 2] = True
    near_small = scale_metrics(pred, ref, {"small": 1, "large": 3}, spacing=(0.5, 1.0, 2.0))
    near_large = scale_metrics(pred, ref, {"small": 1, "large": 3}, spacing=(2.0, 1.0, 0.5))
    assert (near_small["small"]["n_pred"], near_small["large"]["n_pred"]) == (1, 0)
    assert (near_large["small"]["n_pred"], near_large["large"]["n_pred"]) == (0, 1)


def test_absent_scale_is_none_not_nan():
    ref = np.zeros((3, 3, 6), dtype=np.uint8)
    ref[1, 1, 1:5] = 3
    pred = ref > 0
    m = scale_metrics(pred, ref, {"small": 1, "large": 3})
    assert m["small"] == {"recall": None, "dice": None, "n_ref": 0, "n_pred": 0, "n_hit": 0}
    assert m["large"]["recall"] == 1.0
    empty = scale_metrics(np.zeros_like(pred), np.zeros_like(ref), {"small": 1})
    assert empty["small"]["recall"] is None


def test_summarize_skips_none_and_refuses_nan():
    assert summarize([None, None]) == {"mean": None, "std": None, "median": None, "n": 0, "n_skipped": 2}
    s = summarize([0.0, 1.0, 2.0, None])
    assert s["mean"] == 1.0 and s["median"] == 1.0 and s["n"] == 3 and s["n_skipped"] == 1
    assert s["std"] == pytest.approx(np.sqrt(2 / 3))
    with pytest.raises(ValueError, match="finite"):
        summarize([1.0, float("nan")])


# ------------------------------------------------------------------------- bad input


def test_bad_input_raises_clear_errors():
    a = np.zeros((3, 4, 5), dtype=bool)
    with pytest.raises(ValueError, match="same shape"):
        vessel_metrics(a, np.zeros((3, 4, 6), dtype=bool))
    with pytest.raises(ValueError, match="2D or 3D"):
        vessel_metrics(np.zeros((2, 2, 2, 2), bool), np.zeros((2, 2, 2, 2), bool))
    with pytest.raises(ValueError, match="one value per axis"):
        vessel_metrics(a, a, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        vessel_metrics(a, a, spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="distinct"):
        scale_metrics(a, a.astype(np.uint8), {"small": 1, "large": 1})
    with pytest.raises(ValueError, match="integer labels"):
        scale_metrics(a, a.astype(float) + 0.5, {"small": 1})
    assert jaccard_index(a, a) == 1.0
