"""All vessel segmentation metrics of one case, in one call."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..validation import check_spacing
from ._validation import check_masks
from .cldice import cldice
from .components import count_components, missed_components
from .overlap import dice_coefficient, jaccard_index
from .surface import surface_distance_metrics

#: Keys of the dict returned by :func:`vessel_metrics`, in a stable order (CSV columns).
VESSEL_METRIC_KEYS = (
    "dice",
    "jaccard",
    "cldice",
    "hd",
    "hd95",
    "assd",
    "n_ref",
    "n_pred",
    "components_ref",
    "components_pred",
    "missed_components",
)


def vessel_metrics(
    pred: np.ndarray, ref: np.ndarray, *, spacing: Sequence[float] | float | None = None
) -> dict[str, float | int]:
    """Overlap, topology, surface distance and component metrics of a vessel prediction.

    Parameters
    ----------
    pred, ref : ndarray of bool
        Predicted and reference masks, 2D or 3D, same shape.
    spacing : float or sequence of float, optional
        Voxel spacing along each array axis, in mm (``(sz, sy, sx)`` for a volume in
        SimpleITK's array order). Default 1.

    Returns
    -------
    metrics : dict
        ``dice``, ``jaccard`` (:mod:`.overlap`), ``cldice`` (:mod:`.cldice`), ``hd``,
        ``hd95``, ``assd`` in mm (:mod:`.surface`), ``n_ref`` and ``n_pred`` (voxel
        counts), ``components_ref`` and ``components_pred`` (26-connected in 3D,
        8-connected in 2D) and ``missed_components`` (reference components that no
        predicted voxel touches). Empty masks never give NaN or inf: both empty gives
        1 for the overlaps and 0 for the distances; exactly one empty gives 0 for the
        overlaps and the array's diagonal in mm for the distances.

    References
    ----------
    .. [1] Sadikine et al., "Scale-specific auxiliary multi-task contrastive learning for
           deep liver vessel segmentation", ISBI 2023, Sect. 3.3 (DSC, Jacc, clDSC, HD).
    .. [2] S. Shit et al., "clDice", CVPR 2021.
    .. [3] S. Nikolov et al., arXiv:1809.04430, 2018 (surface distances).

    Examples
    --------
    >>> ref = np.zeros((5, 5, 12), dtype=bool)
    >>> ref[1:4, 1:4, 1:11] = True
    >>> m = vessel_metrics(ref, ref, spacing=(2.0, 1.0, 1.0))
    >>> m["dice"], m["cldice"], m["hd95"], m["missed_components"]
    (1.0, 1.0, 0.0, 0)
    """
    pred, ref = check_masks(pred, ref, names=("pred", "ref"))
    spacing = check_spacing(spacing, pred.ndim)
    metrics: dict[str, float | int] = {
        "dice": dice_coefficient(pred, ref),
        "jaccard": jaccard_index(pred, ref),
        "cldice": cldice(pred, ref),
    }
    metrics.update(surface_distance_metrics(pred, ref, spacing=spacing))
    metrics.update(
        n_ref=int(ref.sum()),
        n_pred=int(pred.sum()),
        components_ref=count_components(ref),
        components_pred=count_components(pred),
        missed_components=missed_components(pred, ref),
    )
    return {key: metrics[key] for key in VESSEL_METRIC_KEYS}
