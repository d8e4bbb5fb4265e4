"""Centerline Dice (clDice): topology-aware overlap of tubular structures."""

from __future__ import annotations

import numpy as np
from skimage.morphology import skeletonize

from ..errors import InputError
from ._validation import bounding_box, check_masks, crop_padded


def mask_skeleton(mask: np.ndarray) -> np.ndarray:
    """Skeleton of a binary mask by thinning, computed on the mask's bounding box.

    The thinning is :func:`skimage.morphology.skeletonize` (Lee et al. in 3D, Zhang and
    Suen in 2D), run on the mask's bounding box padded by one background voxel so that a
    mask touching the array border is thinned as if the volume went on with background.

    Thinning can remove a non-empty object entirely: scikit-image's 3D thinning erases
    objects of even thickness (a 2x2xN or 4x4xN bar, a 2x2x2 cube). An empty skeleton of
    a non-empty mask would make clDice undefined (0 / 0), so in that case the mask itself
    stands for its skeleton: such an object is thinner than any centreline the thinning
    can represent, and every voxel of it is on its "centreline".

    Parameters
    ----------
    mask : ndarray of bool
        2D or 3D mask.

    Returns
    -------
    skeleton : ndarray of bool
        Same shape as ``mask``; a subset of ``mask``; empty only if ``mask`` is empty.

    References
    ----------
    .. [1] T.-C. Lee, R. L. Kashyap and C.-N. Chu, "Building skeleton models via 3-D
           medial surface/axis thinning algorithms", CVGIP 56(6), 1994.

    Examples
    --------
    >>> bar = np.zeros((5, 5, 9), dtype=bool)
    >>> bar[1:4, 1:4, 1:8] = True          # 3x3x7 bar: thinned to its axis
    >>> skel = mask_skeleton(bar)
    >>> bool(skel[2, 2, 2:7].all()), int(skel.sum())
    (True, 5)
    >>> even = np.zeros((4, 4, 4), dtype=bool)
    >>> even[1:3, 1:3, 1:3] = True          # thinning erases it: the mask is kept
    >>> int(mask_skeleton(even).sum())
    8
    """
    (mask,) = check_masks(mask, names=("mask",))
    skeleton = np.zeros_like(mask)
    box = bounding_box(mask, pad=1)
    if box is None:
        return skeleton
    thinned = skeletonize(crop_padded(mask, box, pad=1))
    # Undo the zero padding that crop_padded added at the array border.
    inner = tuple(
        slice(1 if s.start == 0 else 0, thinned.shape[axis] - (1 if s.stop == mask.shape[axis] else 0))
        for axis, s in enumerate(box)
    )
    skeleton[box] = thinned[inner]
    if not skeleton.any():
        return mask.copy()
    return skeleton


def cldice(
    pred: np.ndarray,
    ref: np.ndarray,
    *,
    pred_skeleton: np.ndarray | None = None,
    ref_skeleton: np.ndarray | None = None,
) -> float:
    """Centerline Dice between a predicted and a reference mask.

    With ``S(.)`` the skeleton (:func:`mask_skeleton`),

    ``Tprec = |S(P) ∩ G| / |S(P)|`` (topology precision),
    ``Tsens = |S(G) ∩ P| / |S(G)|`` (topology sensitivity),
    ``clDice = 2 Tprec Tsens / (Tprec + Tsens)``.

    No epsilon is added: :func:`mask_skeleton` never returns an empty skeleton for a
    non-empty mask, so the ratios are defined whenever the masks are non-empty. The
    remaining cases have fixed values: both masks empty gives 1, exactly one empty gives
    0, and ``Tprec + Tsens = 0`` (skeletons entirely outside the other mask) gives 0.

    Parameters
    ----------
    pred, ref : ndarray of bool
        Predicted and reference masks, 2D or 3D, same shape.
    pred_skeleton, ref_skeleton : ndarray of bool, optional
        Precomputed skeletons, to share them between calls.

    Returns
    -------
    cldice : float
        In ``[0, 1]``.

    References
    ----------
    .. [1] S. Shit et al., "clDice - a novel topology-preserving loss function for
           tubular structure segmentation", CVPR 2021, Eqs. (1)-(3).

    Examples
    --------
    >>> ref = np.zeros((5, 5, 13), dtype=bool)
    >>> ref[1:4, 1:4, 1:12] = True
    >>> round(cldice(ref, ref), 6)
    1.0
    >>> broken = ref.copy()
    >>> broken[:, :, 6] = False           # a one-slice gap in the tube
    >>> round(cldice(broken, ref), 4)     # Tprec = 1, Tsens = 8/9: clDice = 16/17
    0.9412
    """
    pred, ref = check_masks(pred, ref, names=("pred", "ref"))
    pred_any, ref_any = bool(pred.any()), bool(ref.any())
    if not pred_any and not ref_any:
        return 1.0
    if not pred_any or not ref_any:
        return 0.0
    s_pred = mask_skeleton(pred) if pred_skeleton is None else np.asarray(pred_skeleton, dtype=bool)
    s_ref = mask_skeleton(ref) if ref_skeleton is None else np.asarray(ref_skeleton, dtype=bool)
    if s_pred.shape != pred.shape or s_ref.shape != ref.shape:
        raise InputError("pred_skeleton and ref_skeleton must have the shape of pred and ref")
    t_prec = np.logical_and(s_pred, ref).sum() / max(int(s_pred.sum()), 1)
    t_sens = np.logical_and(s_ref, pred).sum() / max(int(s_ref.sum()), 1)
    if t_prec + t_sens == 0:
        return 0.0
    return float(2.0 * t_prec * t_sens / (t_prec + t_sens))
