"""Summary statistics over cases that never drop a case silently."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import InputError


def summarize(values: Sequence[float | int | None]) -> dict[str, float | int | None]:
    """Mean, standard deviation and median of per-case values, skipping None explicitly.

    Per-case metrics are never NaN in this package: undefined values (a vessel scale
    absent from a reference) are None, and this function skips them and says how many it
    skipped. Values that are NaN or infinite are an error rather than something to drop,
    so that a failed case cannot vanish from an average (MONAI's HD95 aggregation drops
    NaN, MONAI issue #9095).

    Parameters
    ----------
    values : sequence of float, int or None

    Returns
    -------
    summary : dict
        ``mean``, ``std`` (population standard deviation, ``ddof=0``) and ``median`` of
        the non-None values (None when there are none), ``n`` (values used) and
        ``n_skipped`` (None values).

    Examples
    --------
    >>> summarize([1.0, None, 3.0])
    {'mean': 2.0, 'std': 1.0, 'median': 2.0, 'n': 2, 'n_skipped': 1}
    """
    present = [v for v in values if v is not None]
    array = np.asarray(present, dtype=float)
    if not np.all(np.isfinite(array)):
        raise InputError(f"per-case values must be finite or None, got {list(values)!r}")
    if array.size == 0:
        return {"mean": None, "std": None, "median": None, "n": 0, "n_skipped": len(values)}
    return {
        "mean": float(array.mean()),
        "std": float(array.std()),
        "median": float(np.median(array)),
        "n": int(array.size),
        "n_skipped": len(values) - int(array.size),
    }
