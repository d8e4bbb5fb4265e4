"""Statistics of the outcome benchmark: per-seed means, mean +- std over seeds, paired bootstrap CIs.

Pure numpy, no nnU-Net: unit-tested in ``tests/test_outcome_stats.py``.

The benchmark's design is crossed: every seed trains every trainer, and every trained model
predicts the same test cases. A metric of one trainer is therefore a ``(seeds, cases)``
array; a paired difference against stock is the difference of two such arrays (same seed,
same case). Undefined values (a scale absent from a case's reference) are NaN and skipped.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

#: Bootstrap resamples and the RNG seed of the intervals (fixed: the table is reproducible).
N_BOOTSTRAP = 10000
BOOTSTRAP_SEED = 12345


def as_matrix(values: Mapping[int, Sequence[float | None]] | Sequence[Sequence[float | None]]) -> np.ndarray:
    """A ``(seeds, cases)`` float array from nested values; None becomes NaN.

    Examples
    --------
    >>> as_matrix({0: [1.0, None], 1: [0.5, 0.25]}).tolist()
    [[1.0, nan], [0.5, 0.25]]
    """
    rows = list(values.values()) if isinstance(values, Mapping) else list(values)
    lengths = {len(r) for r in rows}
    if len(lengths) > 1:
        raise ValueError(f"every seed needs the same number of cases, got {sorted(lengths)}")
    return np.array([[np.nan if v is None else float(v) for v in r] for r in rows], dtype=float).reshape(
        len(rows), lengths.pop() if lengths else 0)


def _nanmean_rows(matrix: np.ndarray) -> np.ndarray:
    """Mean of each row over its defined values (NaN for a row without any)."""
    defined = ~np.isnan(matrix)
    counts = defined.sum(axis=1)
    sums = np.where(defined, matrix, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def seed_summary(matrix: np.ndarray) -> dict[str, float | int]:
    """Mean and std over seeds of the per-seed mean over cases.

    The std is the sample standard deviation (``ddof=1``) of the per-seed means, i.e. the
    spread between training runs; 0 with a single seed.

    Examples
    --------
    >>> s = seed_summary(np.array([[1.0, 0.0], [1.0, 1.0], [np.nan, 1.0]]))
    >>> s["mean"], round(s["std"], 4), s["n_seeds"]
    (0.8333333333333334, 0.2887, 3)
    """
    per_seed = _nanmean_rows(np.asarray(matrix, dtype=float))
    per_seed = per_seed[~np.isnan(per_seed)]
    if per_seed.size == 0:
        return {"mean": math.nan, "std": math.nan, "n_seeds": 0}
    std = float(np.std(per_seed, ddof=1)) if per_seed.size > 1 else 0.0
    return {"mean": float(np.mean(per_seed)), "std": std, "n_seeds": int(per_seed.size)}


def bootstrap_indices(n_seeds: int, n_cases: int, n_boot: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Seed and case indices of ``n_boot`` two-way resamples (seeds and cases drawn independently)."""
    seeds = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    cases = rng.integers(0, n_cases, size=(n_boot, n_cases))
    return seeds, cases


def paired_bootstrap(difference: np.ndarray, *, n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED,
                     level: float = 0.95) -> dict[str, float | int]:
    """Mean paired difference and its percentile bootstrap interval, resampling seeds and cases.

    Each resample draws seeds with replacement and, independently, test cases with
    replacement, and takes the mean of the differences in the resampled ``(seed, case)``
    cells (NaN cells skipped); the interval holds the central ``level`` of those means.
    Resampling both factors of the crossed design puts both sources of variation, training
    seed and test case, into the interval. One seed or one case: that factor is kept fixed.

    Parameters
    ----------
    difference : ndarray, shape (seeds, cases)
        Trainer minus stock, same seed and case; NaN where undefined.
    n_boot : int, optional
        Number of resamples.
    seed : int, optional
        Seed of the resampling RNG (numpy's PCG64).
    level : float, optional
        Coverage of the interval.

    Returns
    -------
    result : dict
        ``mean`` (over all defined cells), ``low``, ``high``, ``n_seeds``, ``n_cases``.

    Examples
    --------
    >>> r = paired_bootstrap(np.full((3, 10), 0.1), n_boot=200)
    >>> round(r["mean"], 6), round(r["low"], 6), round(r["high"], 6)
    (0.1, 0.1, 0.1)
    """
    d = np.asarray(difference, dtype=float)
    if d.ndim != 2:
        raise ValueError(f"difference must be a (seeds, cases) array, got shape {d.shape}")
    n_seeds, n_cases = d.shape
    out: dict[str, float | int] = {"mean": math.nan, "low": math.nan, "high": math.nan,
                                   "n_seeds": int(n_seeds), "n_cases": int(n_cases)}
    if d.size == 0 or np.all(np.isnan(d)):
        return out
    out["mean"] = float(np.nanmean(d))
    seeds, cases = bootstrap_indices(n_seeds, n_cases, n_boot, np.random.default_rng(seed))
    # cells[b] = d[seeds[b]][:, cases[b]], for all b at once: shape (n_boot, n_seeds, n_cases)
    cells = d[seeds[:, :, None], cases[:, None, :]]
    defined = ~np.isnan(cells)
    counts = defined.sum(axis=(1, 2))
    sums = np.where(defined, cells, 0.0).sum(axis=(1, 2))
    means = sums[counts > 0] / counts[counts > 0]
    alpha = (1.0 - level) / 2.0
    out["low"], out["high"] = (float(v) for v in np.quantile(means, [alpha, 1.0 - alpha]))
    return out


def paired_difference(trainer: Mapping[int, Sequence[float | None]],
                      stock: Mapping[int, Sequence[float | None]]) -> np.ndarray:
    """``trainer - stock`` per (seed, case) over the seeds both have, as a ``(seeds, cases)`` array.

    Examples
    --------
    >>> paired_difference({0: [0.5, 0.7], 2: [0.1, 0.1]}, {0: [0.4, None], 1: [0.0, 0.0]}).tolist()
    [[0.09999999999999998, nan]]
    """
    common = sorted(set(trainer) & set(stock))
    if not common:
        return np.zeros((0, 0))
    return as_matrix([trainer[s] for s in common]) - as_matrix([stock[s] for s in common])


def wall_time_iterations(iterations: int, t_stock: float, t_trainer: float, tolerance: float = 0.03) -> int | None:
    """Iterations that give a trainer the wall time stock spends on ``iterations``; None if within tolerance.

    ``round(iterations * t_stock / t_trainer)`` (at least 1), where ``t`` are measured
    seconds per training iteration; None when ``t_stock / t_trainer`` is within
    ``tolerance`` of 1 (the equal-iterations run already is an equal-time run).

    Examples
    --------
    >>> wall_time_iterations(300, 1.0, 3.0)
    100
    >>> wall_time_iterations(300, 1.0, 1.02) is None
    True
    """
    if not (t_stock > 0 and t_trainer > 0):
        raise ValueError(f"step times must be positive, got {t_stock} and {t_trainer}")
    ratio = t_stock / t_trainer
    if abs(ratio - 1.0) <= tolerance:
        return None
    return max(1, int(round(iterations * ratio)))


def split_iterations(total: int, epochs: int) -> tuple[int, int]:
    """``(epochs, iterations per epoch)`` whose product is the nearest to ``total`` with ``epochs`` fixed.

    Fixing the epochs keeps nnU-Net's per-epoch validation (and its cost) the same for all
    runs; fewer than ``epochs`` iterations give ``total`` epochs of one iteration.

    Examples
    --------
    >>> split_iterations(250, 10), split_iterations(83, 10), split_iterations(4, 10)
    ((10, 25), (10, 8), (4, 1))
    """
    if total < 1 or epochs < 1:
        raise ValueError(f"need total >= 1 and epochs >= 1, got {total} and {epochs}")
    if total < epochs:
        return total, 1
    return epochs, max(1, int(round(total / epochs)))


def format_mean_std(summary: Mapping[str, float], digits: int = 3) -> str:
    """``'0.812 ± 0.010'`` (just the mean with one seed; ``'–'`` when undefined).

    Examples
    --------
    >>> format_mean_std({"mean": 0.81234, "std": 0.0101, "n_seeds": 3})
    '0.812 ± 0.010'
    >>> format_mean_std({"mean": float("nan"), "std": float("nan"), "n_seeds": 0})
    '–'
    """
    mean = summary.get("mean", math.nan)
    if mean is None or math.isnan(mean):
        return "–"
    if summary.get("n_seeds", 0) <= 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {summary['std']:.{digits}f}"


def format_interval(result: Mapping[str, float], digits: int = 3) -> str:
    """``'+0.012 [-0.004, +0.030]'`` (``'–'`` when undefined).

    Examples
    --------
    >>> format_interval({"mean": 0.012, "low": -0.004, "high": 0.03})
    '+0.012 [-0.004, +0.030]'
    """
    mean = result.get("mean", math.nan)
    if mean is None or math.isnan(mean):
        return "–"
    return f"{mean:+.{digits}f} [{result['low']:+.{digits}f}, {result['high']:+.{digits}f}]"
