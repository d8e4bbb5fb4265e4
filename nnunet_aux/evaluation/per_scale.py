"""Recall and Dice per vessel scale, from a reference label map that carries the scales.

In a scale-decomposed dataset (see the package's data contract) each reference vessel
voxel holds its scale label (1 = smallest ... S = largest). The prediction is one binary
vessel mask, so it has no scale of its own; a predicted voxel is given the scale of the
nearest reference vessel voxel, which is what a reader does when asking "did the model
find the small vessels, and how much did it over-segment around them".
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError
from ..validation import check_spacing
from ._validation import bounding_box, check_masks


def _check_scales(scales: Mapping[str, int]) -> dict[str, int]:
    if not isinstance(scales, Mapping) or len(scales) == 0:
        raise InputError(f"scales must be a non-empty mapping of scale name to label value, got {scales!r}")
    checked = {}
    for name, value in scales.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise InputError(f"scale {name!r} must have a positive integer label value, got {value!r}")
        checked[str(name)] = int(value)
    if len(set(checked.values())) != len(checked):
        raise InputError(f"scale label values must be distinct, got {scales!r}")
    return checked


def scale_metrics(
    pred: np.ndarray,
    ref_scale_labels: np.ndarray,
    scales: Mapping[str, int],
    *,
    spacing: Sequence[float] | float | None = None,
) -> dict[str, dict[str, float | int | None]]:
    """Recall and Dice of a binary prediction for each vessel scale of the reference.

    With ``R_s`` the reference voxels of scale ``s`` and ``P`` the predicted mask,

    ``recall_s = |P ∩ R_s| / |R_s|`` (sensitivity on scale ``s``),
    ``dice_s = 2 |P ∩ R_s| / (|P_s| + |R_s|)``,

    where ``P_s`` are the predicted voxels whose nearest reference vessel voxel (Euclidean
    distance in mm, ``spacing`` respected) has scale ``s``. Predicted voxels inside the
    reference keep their own scale, so ``P ∩ R_s ⊆ P_s``; false positives are charged to
    the scale they lie next to. Ties between equally near voxels are broken as
    :func:`scipy.ndimage.distance_transform_edt` breaks them. The distance transform runs
    on the bounding box of ``P`` and the reference vessels, which holds every nearest
    voxel.

    A scale absent from the reference has no defined recall or Dice: both are None (not
    NaN), and aggregates skip such cases explicitly and count them.

    Parameters
    ----------
    pred : ndarray of bool
        Predicted vessel mask, 2D or 3D.
    ref_scale_labels : ndarray of int
        Reference label map, same shape. Voxels whose value is one of the ``scales``
        values are vessel voxels of that scale; every other value (background, other
        structures) is ignored.
    scales : mapping of str to int
        Scale name to label value, e.g. ``{"small": 1, "medium": 2, "large": 3}``.
    spacing : float or sequence of float, optional
        Voxel spacing along each array axis, in mm. Default 1.

    Returns
    -------
    metrics : dict
        For each scale name, a dict with ``recall`` and ``dice`` (float or None),
        ``n_ref`` (``|R_s|``), ``n_pred`` (``|P_s|``) and ``n_hit`` (``|P ∩ R_s|``).

    References
    ----------
    .. [1] Sadikine et al., "Scale-specific auxiliary multi-task contrastive learning for
           deep liver vessel segmentation", ISBI 2023, Sect. 2.1 (vessel scales) and
           Sect. 3.3 (Dice).

    Examples
    --------
    >>> ref = np.array([[1, 1, 0, 0, 2, 2, 2, 2]])
    >>> pred = np.array([[0, 1, 1, 0, 2, 2, 0, 0]]) > 0
    >>> m = scale_metrics(pred, ref, {"small": 1, "large": 2})
    >>> m["small"]["recall"], m["small"]["dice"], m["large"]["recall"]
    (0.5, 0.5, 0.5)
    >>> scale_metrics(pred, ref, {"small": 1, "medium": 3})["medium"]["recall"] is None
    True
    """
    scales = _check_scales(scales)
    (pred,) = check_masks(pred, names=("pred",))
    labels = np.asarray(ref_scale_labels)
    if not np.issubdtype(labels.dtype, np.integer):
        if np.issubdtype(labels.dtype, np.floating) and np.all(np.mod(labels, 1) == 0):
            labels = labels.astype(np.int64)
        else:
            raise InputError(f"ref_scale_labels must hold integer labels, got dtype {labels.dtype}")
    if labels.shape != pred.shape:
        raise InputError(f"ref_scale_labels shape {labels.shape} differs from pred shape {pred.shape}")
    spacing = check_spacing(spacing, pred.ndim)

    vessel = np.isin(labels, list(scales.values()))
    box = bounding_box(pred, vessel, pad=0)
    nearest_scale_of_pred = np.zeros(0, dtype=labels.dtype)
    if box is not None and vessel.any() and pred.any():
        labels_box = labels[box]
        indices = ndi.distance_transform_edt(
            ~vessel[box], sampling=spacing, return_distances=False, return_indices=True
        )
        pred_box = pred[box]
        nearest_scale_of_pred = labels_box[tuple(axis_indices[pred_box] for axis_indices in indices)]

    results: dict[str, dict[str, float | int | None]] = {}
    for name, value in scales.items():
        reference = labels == value
        n_ref = int(reference.sum())
        n_hit = int(np.logical_and(pred, reference).sum())
        n_pred = int(np.count_nonzero(nearest_scale_of_pred == value))
        results[name] = {
            "recall": n_hit / n_ref if n_ref else None,
            "dice": 2.0 * n_hit / (n_pred + n_ref) if n_ref else None,
            "n_ref": n_ref,
            "n_pred": n_pred,
            "n_hit": n_hit,
        }
    return results
