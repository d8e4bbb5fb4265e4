"""Checks of the settings every entry point shares: spacing, number of scales, thresholds, masks.

One rule and one message per setting, whichever door it comes in by (the library's public
functions, the converters' settings, the synthetic generator, the evaluation, the command
line): each entry point checks its input here once, and the functions it calls trust it
(their docstrings say so). A bad value raises :class:`~nnunet_aux.errors.InputError`
naming the setting and the value, which the ``nnunet_aux`` command prints as one line
(exit code 2).
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
    if not _is_whole(n_scales) or not 2 <= n_scales <= MAX_LABEL_VALUE:
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
    if not _is_whole(value) or not 0 <= value <= MAX_LABEL_VALUE:
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


def check_thresholds(thresholds: Sequence[float] | None, n_scales: int | None = None,
                     what: str = "thresholds") -> np.ndarray:
    """Radius thresholds in mm: ``n_scales - 1`` finite numbers, ``>= 0``, non-decreasing.

    Equal thresholds are allowed and leave the scale between them empty: dataset-wide
    quantiles of radii measured on a voxel grid take few distinct values and can tie.

    Parameters
    ----------
    thresholds : sequence of float or None
        None (not given) is refused with the number needed.
    n_scales : int, optional
        The number of scales they split into; None: as many as given plus one (at least
        one threshold, two scales).
    what : str, optional
        Their name in error messages (e.g. ``"radii"`` for ``--fixed-radii``).

    Returns
    -------
    thresholds : ndarray of float64, shape (n_scales - 1,)

    Examples
    --------
    >>> check_thresholds([1.5, 3], 3)
    array([1.5, 3. ])
    >>> check_thresholds(None, 3, what="radii")
    Traceback (most recent call last):
    ...
    nnunet_aux.errors.InputError: need 2 radii for 3 scales, got none
    """
    if thresholds is None:
        values = None
    else:
        try:
            values = np.asarray(thresholds, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise InputError(f"{what} must be numbers, got {_shown(thresholds)}") from None
    shown = "none" if values is None else _shown(thresholds)
    if n_scales is None:
        if values is None or values.size == 0:
            raise InputError(f"need at least one of the {what} (two scales), got {shown}")
        n_scales = check_n_scales(values.size + 1)
    if values is None or values.size != n_scales - 1:
        raise InputError(f"need {n_scales - 1} {what} for {n_scales} scales, got {shown}")
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


def check_positive_int(value: Any, what: str) -> int:
    """A count of at least 1 (a whole float is accepted), e.g. ``m_neighbours``.

    Examples
    --------
    >>> check_positive_int(8.0, "m_neighbours")
    8
    """
    if not _is_whole(value) or value < 1:
        raise InputError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def check_non_negative(value: Any, what: str) -> float:
    """A number ``>= 0`` (not NaN), e.g. ``min_branch_length``.

    Examples
    --------
    >>> check_non_negative(0, "min_branch_length")
    0.0
    """
    if isinstance(value, bool) or not isinstance(value, Real) or not value >= 0:
        raise InputError(f"{what} must be a number >= 0, got {value!r}")
    return float(value)


def check_choice(value: Any, choices: Sequence[str], what: str) -> str:
    """One of a few named options.

    Examples
    --------
    >>> check_choice("mean", ("median", "area"), "radius_estimate")
    Traceback (most recent call last):
    ...
    nnunet_aux.errors.InputError: radius_estimate must be one of ('median', 'area'), got 'mean'
    """
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"{what} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_binary_mask(mask: Any, name: str = "mask", ndims: Sequence[int] = (2, 3)) -> np.ndarray:
    """A mask as a boolean array: bool, or numbers that are all 0 or 1.

    Probabilities, label values and NaN are refused, by the metrics and by the scale
    decomposition alike: binarise explicitly (``probabilities > 0.5``, ``labels == 1``).

    Parameters
    ----------
    mask : array_like
    name : str, optional
        Its name in messages (``"pred"``).
    ndims : sequence of int, optional
        The dimensions allowed.

    Returns
    -------
    mask : ndarray of bool
        ``mask`` itself when it is already boolean.

    Examples
    --------
    >>> check_binary_mask(np.array([[0.0, 1.0]])).tolist()
    [[False, True]]
    """
    array = np.asarray(mask)
    if array.ndim not in ndims:
        allowed = " or ".join(f"{d}D" for d in ndims)
        raise InputError(f"{name} must be a {allowed} array, got {array.ndim}D with shape {array.shape}")
    if array.dtype == bool:
        return array
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputError(f"{name} must be boolean or numeric, got dtype {array.dtype}")
    other = (array != 0) & (array != 1)  # NaN is neither
    if np.any(other):
        found = ("NaN" if np.issubdtype(array.dtype, np.floating) and np.isnan(array).any()
                 else f"e.g. {array[other].flat[0].item()!r}")  # 0.7, not np.float64(0.7)
        raise InputError(f"{name} must be binary (only 0 and 1), got {found}; binarise it explicitly, e.g. "
                         f"`probabilities > 0.5` or `labels == 1`")
    return array != 0


def _is_whole(value: Any) -> bool:
    return (isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
            and int(value) == value)
