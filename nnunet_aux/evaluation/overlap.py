"""Volume overlap: Dice coefficient and Jaccard index."""

from __future__ import annotations

import numpy as np

from ._validation import check_masks


def dice_coefficient(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice similarity coefficient ``2 |P ∩ G| / (|P| + |G|)``.

    Parameters
    ----------
    pred, ref : ndarray of bool
        Predicted and reference masks, 2D or 3D, same shape.

    Returns
    -------
    dice : float
        In ``[0, 1]``. Both masks empty gives 1 (perfect agreement on absence); exactly
        one empty gives 0.

    References
    ----------
    .. [1] L. R. Dice, "Measures of the amount of ecologic association between species",
           Ecology 26(3), 1945.
    .. [2] Sadikine et al., "Scale-specific auxiliary multi-task contrastive learning for
           deep liver vessel segmentation", ISBI 2023, Sect. 3.3 (DSC).

    Examples
    --------
    >>> p = np.array([[1, 1, 0, 0]], dtype=bool)
    >>> g = np.array([[0, 1, 1, 0]], dtype=bool)
    >>> dice_coefficient(p, g)
    0.5
    """
    pred, ref = check_masks(pred, ref, names=("pred", "ref"))
    total = int(pred.sum()) + int(ref.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, ref).sum()) / total


def jaccard_index(pred: np.ndarray, ref: np.ndarray) -> float:
    """Jaccard index (intersection over union) ``|P ∩ G| / |P ∪ G|``.

    Parameters
    ----------
    pred, ref : ndarray of bool
        Predicted and reference masks, 2D or 3D, same shape.

    Returns
    -------
    jaccard : float
        In ``[0, 1]``; 1 when both masks are empty, 0 when exactly one is.

    References
    ----------
    .. [1] P. Jaccard, "The distribution of the flora in the alpine zone", New
           Phytologist 11(2), 1912.
    .. [2] Sadikine et al., ISBI 2023, Sect. 3.3 (Jacc).

    Examples
    --------
    >>> p = np.array([[1, 1, 0, 0]], dtype=bool)
    >>> g = np.array([[0, 1, 1, 0]], dtype=bool)
    >>> round(jaccard_index(p, g), 4)
    0.3333
    """
    pred, ref = check_masks(pred, ref, names=("pred", "ref"))
    union = int(np.logical_or(pred, ref).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(pred, ref).sum()) / union
