"""Radius thresholds that split vessel branches into scales (Sadikine et al., Sect. 2.1)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..validation import check_n_scales, check_quantile_levels, check_thresholds, label_dtype


def default_quantiles(n_scales: int) -> tuple[float, ...]:
    """Quantile levels of the ``n_scales - 1`` thresholds.

    The paper uses ``S = 3`` scales with thresholds at the first and third quartiles of
    the branch radii. We generalise by spreading ``S - 1`` levels evenly over
    ``[0.25, 0.75]``: the median for ``S = 2``, ``(Q1, Q3)`` for ``S = 3`` (the paper's
    choice), ``(Q1, Q2, Q3)`` for ``S = 4``.

    Parameters
    ----------
    n_scales : int
        Number of scales, at least 2.

    Returns
    -------
    quantiles : tuple of float
        ``n_scales - 1`` increasing levels in ``(0, 1)``.

    References
    ----------
    .. [1] Sadikine et al., "Scale-specific auxiliary multi-task contrastive learning for
           deep liver vessel segmentation", ISBI 2023, Sect. 2.1.

    Examples
    --------
    >>> default_quantiles(3)
    (0.25, 0.75)
    >>> default_quantiles(2)
    (0.5,)
    """
    return _default_quantiles(check_n_scales(n_scales))


def _default_quantiles(n_scales: int) -> tuple[float, ...]:
    """:func:`default_quantiles`; inputs are trusted (validated by the public function that calls it)."""
    if n_scales == 2:
        return (0.5,)
    return tuple(float(q) for q in np.linspace(0.25, 0.75, n_scales - 1))


def quantile_thresholds(
    radii_mm: Sequence[float] | np.ndarray,
    n_scales: int = 3,
    quantiles: Sequence[float] | None = None,
) -> np.ndarray:
    """Radius thresholds (mm) at quantiles of a set of branch radii.

    Each branch counts once, whatever its length (the paper takes the quartiles of the
    branch radii ``{r_j}``).

    Parameters
    ----------
    radii_mm : array_like of float
        Branch radii in mm. May be empty.
    n_scales : int, optional
        Number of scales.
    quantiles : sequence of float, optional
        ``n_scales - 1`` increasing quantile levels; defaults to
        :func:`default_quantiles`.

    Returns
    -------
    thresholds : ndarray of float64, shape (n_scales - 1,)
        Non-decreasing thresholds. With no radii, all thresholds are 0 (every vessel
        voxel then falls in the largest scale, which cannot happen since there are no
        vessel voxels).

    Examples
    --------
    >>> quantile_thresholds([1, 2, 3, 4, 5], n_scales=3)
    array([2., 4.])
    """
    n_scales = check_n_scales(n_scales)
    levels = _default_quantiles(n_scales) if quantiles is None else check_quantile_levels(quantiles, n_scales)
    return _thresholds_at(radii_mm, levels)


def _thresholds_at(radii_mm: Sequence[float] | np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """:func:`quantile_thresholds` at checked quantile levels (0 for every level without radii).

    Inputs are trusted: validated by :func:`quantile_thresholds` and
    :func:`~nnunet_aux.scales.decompose_vessels` (levels by
    :func:`~nnunet_aux.validation.check_quantile_levels`).
    """
    radii = np.asarray(radii_mm, dtype=np.float64).ravel()
    if radii.size == 0:
        return np.zeros(len(levels))
    return np.quantile(radii, levels)


def scale_of_radius(radius_mm: np.ndarray | float, thresholds_mm: Sequence[float] | np.ndarray) -> np.ndarray:
    """Scale index (1 = smallest ... S = largest) of each radius.

    A radius equal to a threshold goes to the larger scale: scale ``s`` holds radii in
    ``[t_{s-1}, t_s)``, with ``t_0 = -inf`` and ``t_S = +inf``.

    Parameters
    ----------
    radius_mm : array_like of float
        Radii in mm.
    thresholds_mm : array_like of float
        The ``S - 1`` non-decreasing thresholds in mm.

    Returns
    -------
    scale : ndarray of uint8 (uint16 for more than 255 scales)
        Same shape as ``radius_mm``, values in ``1..S``.

    Examples
    --------
    >>> scale_of_radius([0.5, 2.0, 3.0, 9.0], [2.0, 4.0])
    array([1, 2, 2, 3], dtype=uint8)
    """
    return _scale_of(radius_mm, check_thresholds(thresholds_mm))


def _scale_of(radius_mm: np.ndarray | float, thresholds_mm: np.ndarray) -> np.ndarray:
    """:func:`scale_of_radius` with checked thresholds.

    Inputs are trusted: validated by :func:`scale_of_radius`, :func:`~nnunet_aux.scales.assign_scales`
    or :func:`~nnunet_aux.scales.decompose_vessels` (:func:`~nnunet_aux.validation.check_thresholds`).
    """
    dtype = label_dtype(thresholds_mm.size + 1)  # uint8; uint16 beyond 255 scales, which would wrap in uint8
    return (np.digitize(np.asarray(radius_mm, dtype=np.float64), thresholds_mm, right=False) + 1).astype(dtype)
