"""Checks of the settings every entry point shares: voxel spacing, number of scales, thresholds.

One rule per setting, whichever door it comes in by (the library functions, the
converters, the synthetic generator, the evaluation); a bad value raises
:class:`~nnunet_aux.errors.InputError` naming the value, which the ``nnunet_aux`` command
prints as one line.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Sequence

import numpy as np

from .errors import InputError

#: Largest label value anywhere (dataset.json labels, label files, number of scales): nnU-Net
#: stores segmentations as int16 at most, so larger values cannot be trained on; the bound
#: also keeps lookup tables over label values small.
MAX_LABEL_VALUE = 32767

#: Voxel sizes (mm) the package is checked to work with; beyond them products of
#: coordinates overflow or underflow (1e300 mm gives IndexError, 1e-300 mm LinAlgError).
SPACING_RANGE_MM = (1e-6, 1e6)


def _shown(value: Any) -> str:
    """``value`` as an error message shows it: sequences as lists, everything else by repr."""
    if isinstance(value, (list, tuple, np.ndarray)):
        try:
            return str(np.asarray(value, dtype=np.float64).tolist())
        except (TypeError, ValueError):
            return repr(list(value))
    return repr(value)


def check_spacing(spacing: Sequence[float] | float | None, ndim: int = 3) -> tuple[float, ...]:
    """Voxel spacing as ``ndim`` finite numbers within :data:`SPACING_RANGE_MM`.

    Parameters
    ----------
    spacing : float or sequence of float or None
        Spacing along each array axis in mm, in the axis order of the array (``(z, y, x)``
        for a volume read with SimpleITK's ``GetArrayFromImage``). A scalar applies to every
        axis; None means 1 mm along every axis.
    ndim : int, optional
        Number of array dimensions.

    Returns
    -------
    spacing : tuple of float

    Raises
    ------
    InputError
        When ``spacing`` is not one or ``ndim`` numbers in the range.

    Examples
    --------
    >>> check_spacing(0.8)
    (0.8, 0.8, 0.8)
    >>> check_spacing([2, 0.7], ndim=2)
    (2.0, 0.7)
    >>> check_spacing(None, ndim=2)
    (1.0, 1.0)
    """
    if spacing is None:
        return (1.0,) * ndim
    low, high = SPACING_RANGE_MM
    message = (f"spacing must be one value per axis ({ndim}) or one for all: positive finite numbers "
               f"from {low:g} to {high:g} mm; got {_shown(spacing)}")
    if isinstance(spacing, (str, bytes)):
        raise InputError(message)
    try:
        values = np.asarray(spacing, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(message) from None
    if values.ndim == 0:
        values = np.full(ndim, float(values))
    if values.shape != (ndim,) or not np.all(np.isfinite(values)) or np.any(values < low) or np.any(values > high):
        raise InputError(message)
    return tuple(float(v) for v in values)


def check_n_scales(n_scales: int) -> int:
    """The number of scales as an int from 2 to :data:`MAX_LABEL_VALUE`.

    Scales are label values ``1..n_scales``; more than 255 are stored as uint16.

    Examples
    --------
    >>> check_n_scales(3.0)
    3
    """
    message = (f"n_scales (the number of scales) must be an integer of at least 2 and at most {MAX_LABEL_VALUE} "
               f"(scales are label values), got {n_scales!r}")
    if isinstance(n_scales, bool) or not isinstance(n_scales, Real):
        raise InputError(message)
    if not math.isfinite(n_scales) or int(n_scales) != n_scales or not 2 <= n_scales <= MAX_LABEL_VALUE:
        raise InputError(message)
    return int(n_scales)


def label_dtype(max_value: int) -> np.dtype:
    """The smallest unsigned dtype holding label values up to ``max_value`` (uint8 or uint16).

    Examples
    --------
    >>> label_dtype(255), label_dtype(300)
    (dtype('uint8'), dtype('uint16'))
    """
    if not 0 <= int(max_value) <= MAX_LABEL_VALUE:
        raise InputError(f"label values must be integers from 0 to {MAX_LABEL_VALUE}, got {max_value}")
    return np.dtype(np.uint8 if max_value <= 255 else np.uint16)


def check_label_value(value: Any, what: str) -> int:
    """A label value: an integer (a whole float is accepted) from 0 to :data:`MAX_LABEL_VALUE`.

    Parameters
    ----------
    value : any
        The value as found (e.g. in a dataset.json).
    what : str
        What it is, for the message (``"dataset.json: label 'tumour'"``).

    Returns
    -------
    value : int

    Examples
    --------
    >>> check_label_value(2.0, "label 'tumour'")
    2
    >>> check_label_value(1.7, "label 'vessel'")
    Traceback (most recent call last):
    ...
    nnunet_aux.errors.InputError: label 'vessel' is 1.7; label values must be integers from 0 to 32767
    """
    ok = (isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
          and int(value) == value and 0 <= value <= MAX_LABEL_VALUE)
    if not ok:
        raise InputError(f"{what} is {value!r}; label values must be integers from 0 to {MAX_LABEL_VALUE}")
    return int(value)


def check_seed(seed: Any, what: str = "seed") -> int:
    """A random seed: a non-negative integer (what numpy's generators take).

    Examples
    --------
    >>> check_seed(7)
    7
    """
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise InputError(f"{what} must be a non-negative integer, got {seed!r}")
    return int(seed)


def check_thresholds(thresholds: Sequence[float], n_scales: int, what: str = "thresholds") -> np.ndarray:
    """Radius thresholds in mm: ``n_scales - 1`` finite numbers, ``>= 0``, non-decreasing.

    Equal thresholds are allowed and leave the scale between them empty: dataset-wide
    quantiles of radii measured on a voxel grid take few distinct values and can tie.

    Parameters
    ----------
    thresholds : sequence of float
    n_scales : int
    what : str, optional
        Their name in error messages (e.g. ``"fixed radii"``).

    Returns
    -------
    thresholds : ndarray of float64, shape (n_scales - 1,)

    Examples
    --------
    >>> check_thresholds([1.5, 3], 3)
    array([1.5, 3. ])
    """
    try:
        values = np.asarray(thresholds, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise InputError(f"{what} must be numbers, got {_shown(thresholds)}") from None
    if values.size != n_scales - 1:
        raise InputError(f"need {n_scales - 1} {what} for {n_scales} scales, got {_shown(thresholds)}")
    if not np.all(np.isfinite(values)) or np.any(values < 0) or np.any(np.diff(values) < 0):
        raise InputError(f"{what} must be finite numbers >= 0 (mm), non-decreasing (in increasing order, equal "
                         f"values allowed), got {values.tolist()}")
    return values


def check_quantile_levels(levels: Sequence[float], n_scales: int) -> tuple[float, ...]:
    """``n_scales - 1`` quantile levels increasing strictly inside (0, 1).

    Examples
    --------
    >>> check_quantile_levels([0.25, 0.75], 3)
    (0.25, 0.75)
    """
    try:
        values = tuple(float(v) for v in levels)
    except (TypeError, ValueError):
        raise InputError(f"quantile levels must be numbers, got {_shown(levels)}") from None
    if len(values) != n_scales - 1:
        raise InputError(f"need {n_scales - 1} quantile levels for {n_scales} scales, got {list(values)}")
    if any(not 0 < v < 1 for v in values) or any(b <= a for a, b in zip(values, values[1:])):
        raise InputError(f"quantile levels must increase strictly inside (0, 1), got {list(values)}")
    return values
