"""Results table of an experiment: mean ± std over folds per method, as in Sadikine et al., Table 1.

The table is built from per-fold values. A per-fold value is the mean over that fold's
validation cases, taken from an :func:`nnunet_aux.evaluation.evaluate_folders` summary
(:func:`fold_values`), so every validation case counts, a missed vessel tree included.
Each cell is then the mean and standard deviation of the per-fold values
(:func:`build_table`). Missing values are never dropped silently: a fold without a
result (not trained, failed) lowers the ``folds`` count of its method, and a metric
with fewer values than the method has folds (a vessel scale absent from every
validation case of a fold) is printed with its count, ``(n=3)``.
"""

from __future__ import annotations

import csv
import math
import os
from typing import Any, Mapping, Sequence

from ..errors import InputError

#: Columns of Sadikine et al., Table 1: key, header, factor from the stored value to the header's unit.
BASE_COLUMNS: tuple[tuple[str, str, float], ...] = (
    ("dice", "DSC (%)", 100.0),
    ("jaccard", "Jacc (%)", 100.0),
    ("cldice", "clDSC (%)", 100.0),
    ("hd", "HD (mm)", 1.0),
)

#: Columns added when the dataset has vessel scales (HD95, then one recall per scale).
SCALE_DATASET_COLUMNS: tuple[tuple[str, str, float], ...] = (("hd95", "HD95 (mm)", 1.0),)

#: Metrics where a lower value is better (all others: higher is better).
LOWER_IS_BETTER = frozenset({"hd", "hd95", "assd"})

RECALL_PREFIX = "recall_"

FoldValues = Mapping[str, "float | None"]


def fold_values(summary: Mapping[str, Any], label: str | None = None) -> dict[str, float | None]:
    """Per-fold metric values (means over the fold's cases) from an evaluation summary.

    Parameters
    ----------
    summary : mapping
        Result of :func:`nnunet_aux.evaluation.evaluate_folders` (or its JSON file,
        loaded) for the validation cases of one fold.
    label : str, optional
        Label or region to report. Default: the first label with vessel scales, else
        the first label.

    Returns
    -------
    values : dict
        ``dice``, ``jaccard``, ``cldice``, ``hd``, ``hd95``, ``assd`` (means over the
        cases), ``recall_<scale>`` for each scale of the label (mean over the cases that
        contain the scale; None when none does) and ``n_cases``.

    Examples
    --------
    >>> summary = {"labels": {"vessel": {"scales": {"small": 1}}},
    ...            "aggregate": {"vessel": {"dice": {"mean": 0.5}, "hd": {"mean": 3.0},
    ...                                     "scales": {"small": {"recall": {"mean": None}}}}},
    ...            "metric_per_case": [{}, {}]}
    >>> fold_values(summary)
    {'dice': 0.5, 'hd': 3.0, 'recall_small': None, 'n_cases': 2}
    """
    labels = summary.get("labels") or {}
    aggregate = summary.get("aggregate") or {}
    if not aggregate:
        raise InputError("the evaluation summary has no 'aggregate' entry")
    if label is None:
        with_scales = [name for name, spec in labels.items() if spec.get("scales")]
        label = with_scales[0] if with_scales else next(iter(aggregate))
    if label not in aggregate:
        raise InputError(f"label {label!r} is not in the evaluation summary; it has {sorted(aggregate)}")
    metrics = aggregate[label]
    values: dict[str, float | None] = {
        key: metrics[key]["mean"]
        for key in ("dice", "jaccard", "cldice", "hd", "hd95", "assd")
        if key in metrics
    }
    for scale, scale_metrics in (metrics.get("scales") or {}).items():
        values[RECALL_PREFIX + scale] = scale_metrics["recall"]["mean"]
    values["n_cases"] = len(summary.get("metric_per_case", []))
    return values


def table_columns(per_fold: Mapping[str, Mapping[Any, FoldValues | None]]) -> list[tuple[str, str, float]]:
    """Columns for these results: Table 1's four, plus HD95 and per-scale recall with scales.

    Parameters
    ----------
    per_fold : mapping
        ``{method: {fold: values or None}}``, values as from :func:`fold_values`.

    Returns
    -------
    columns : list of (key, header, factor)

    Examples
    --------
    >>> [c[0] for c in table_columns({"a": {0: {"dice": 0.5, "recall_small": 0.2}}})]
    ['dice', 'jaccard', 'cldice', 'hd', 'hd95', 'recall_small']
    """
    scales: list[str] = []
    for folds in per_fold.values():
        for values in folds.values():
            for key in values or {}:
                if key.startswith(RECALL_PREFIX) and key not in scales:
                    scales.append(key)
    columns = list(BASE_COLUMNS)
    if scales:
        columns += SCALE_DATASET_COLUMNS
        columns += [(key, f"Recall {key[len(RECALL_PREFIX):]} (%)", 100.0) for key in scales]
    return columns


def _mean_std(values: Sequence[float], ddof: int) -> tuple[float, float | None]:
    mean = math.fsum(values) / len(values)
    if len(values) - ddof <= 0:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - ddof))


def build_table(
    per_fold: Mapping[str, Mapping[Any, FoldValues | None]],
    columns: Sequence[tuple[str, str, float]] | None = None,
    *,
    ddof: int = 0,
) -> list[dict[str, Any]]:
    """Mean and standard deviation over folds of every metric, one row per method.

    Parameters
    ----------
    per_fold : mapping
        ``{method: {fold: values}}`` in the order the rows should have; ``values`` is a
        mapping of metric to per-fold value (:func:`fold_values`) or None for a fold
        without results. A metric value may be None (undefined for that fold), never NaN.
    columns : sequence of (key, header, factor), optional
        Default :func:`table_columns`.
    ddof : int, optional
        Delta degrees of freedom of the standard deviation; 0 (population standard
        deviation, the package's convention for aggregates) or 1 (sample).

    Returns
    -------
    rows : list of dict
        Per method: ``method``, ``folds`` (folds with results), ``folds_total``,
        ``folds_missing`` (their names) and ``cells``: per column key a dict with
        ``mean``, ``std`` (None for a single value with ``ddof=1``), ``n`` and
        ``values`` (per fold, in the stored units), or None where no fold has a value.

    Raises
    ------
    ValueError
        For a NaN or infinite value, which would otherwise vanish from a mean.

    References
    ----------
    .. [1] Sadikine et al., "Scale-specific auxiliary multi-task contrastive learning for
           deep liver vessel segmentation", ISBI 2023, Table 1 (mean ± std of DSC, Jacc,
           clDSC and HD over the folds of a 5-fold cross-validation).

    Examples
    --------
    >>> rows = build_table({"A": {0: {"dice": 0.6}, 1: {"dice": 0.8}, 2: None}})
    >>> cell = rows[0]["cells"]["dice"]
    >>> round(cell["mean"], 3), round(cell["std"], 3), cell["n"], rows[0]["folds_missing"]
    (0.7, 0.1, 2, ['2'])
    """
    if ddof not in (0, 1):
        raise InputError(f"ddof must be 0 or 1, got {ddof!r}")
    if columns is None:
        columns = table_columns(per_fold)
    rows = []
    for method, folds in per_fold.items():
        present = {fold: values for fold, values in folds.items() if values is not None}
        cells: dict[str, dict[str, Any] | None] = {}
        for key, _, _ in columns:
            values = [float(v[key]) for v in present.values() if v.get(key) is not None]
            if not all(math.isfinite(v) for v in values):
                raise InputError(f"{method}: {key} has a value that is not finite: {values}")
            if not values:
                cells[key] = None
                continue
            mean, std = _mean_std(values, ddof)
            cells[key] = {"mean": mean, "std": std, "n": len(values), "values": values}
        rows.append({
            "method": str(method),
            "folds": len(present),
            "folds_total": len(folds),
            "folds_missing": [str(fold) for fold, values in folds.items() if values is None],
            "cells": cells,
        })
    return rows


def _best_means(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str, float]]) -> dict[str, float]:
    best = {}
    for key, _, _ in columns:
        means = [row["cells"][key]["mean"] for row in rows if row["cells"].get(key)]
        # Bold marks a winner: it needs a comparison and a difference.
        if len(means) > 1 and min(means) != max(means):
            best[key] = min(means) if key in LOWER_IS_BETTER else max(means)
    return best


def format_cell(cell: Mapping[str, Any] | None, factor: float = 1.0, digits: int = 2, n_expected: int | None = None,
                bold: bool = False) -> str:
    """One table cell, ``mean ± std`` in the column's unit.

    Parameters
    ----------
    cell : mapping or None
        A cell of :func:`build_table`; None prints as ``n/a``.
    factor : float, optional
        Multiplies mean and std (100 for percent).
    digits : int, optional
        Decimal places.
    n_expected : int, optional
        Folds the method has; a cell with fewer values says how many, ``(n=2)``.
    bold : bool, optional
        Mark the mean in Markdown bold (the column's best, as in the paper).

    Returns
    -------
    text : str

    Examples
    --------
    >>> format_cell({"mean": 0.5425, "std": 0.0365, "n": 5}, factor=100)
    '54.25 ± 3.65'
    >>> format_cell({"mean": 0.5, "std": None, "n": 1}, factor=100, n_expected=3, bold=True)
    '**50.00** ± n/a (n=1)'
    """
    if cell is None:
        return "n/a"
    mean = f"{cell['mean'] * factor:.{digits}f}"
    std = "n/a" if cell["std"] is None else f"{cell['std'] * factor:.{digits}f}"
    text = f"**{mean}** ± {std}" if bold else f"{mean} ± {std}"
    if n_expected is not None and cell["n"] < n_expected:
        text += f" (n={cell['n']})"
    return text


def format_markdown(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[tuple[str, str, float]],
    *,
    digits: int = 2,
    title: str | None = None,
) -> str:
    """The table in Markdown: one row per method, ``mean ± std`` over folds, best in bold.

    Parameters
    ----------
    rows : sequence of mapping
        From :func:`build_table`.
    columns : sequence of (key, header, factor)
        The columns :func:`build_table` was given.
    digits : int, optional
        Decimal places.
    title : str, optional
        A line written above the table.

    Returns
    -------
    text : str
        Ends with a legend line (what ± means, how missing values are shown).

    Examples
    --------
    >>> cols = [("dice", "DSC (%)", 100.0)]
    >>> rows = build_table({"A": {0: {"dice": 0.5}, 1: {"dice": 0.7}}}, cols)
    >>> print(format_markdown(rows, cols).splitlines()[2])
    | A | 2/2 | 60.00 ± 10.00 |
    """
    best = _best_means(rows, columns)
    lines = [f"{title}\n"] if title else []
    lines.append("| Method | Folds | " + " | ".join(header for _, header, _ in columns) + " |")
    lines.append("|---|---|" + "---|" * len(columns))
    for row in rows:
        cells = []
        for key, _, factor in columns:
            cell = row["cells"].get(key)
            is_best = cell is not None and key in best and cell["mean"] == best[key]
            cells.append(format_cell(cell, factor, digits, n_expected=row["folds"], bold=is_best))
        lines.append(f"| {row['method']} | {row['folds']}/{row['folds_total']} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Mean ± standard deviation over folds; each fold's value is the mean over its validation cases. "
                 "Best mean per column in bold (none when all are equal). n/a: no value; "
                 "(n=k): only k folds have a value.")
    return "\n".join(lines) + "\n"


def write_table_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]],
                    columns: Sequence[tuple[str, str, float]]) -> None:
    """Write the table as CSV in the stored units (fractions for overlaps, mm for distances).

    Columns: ``method``, ``folds``, ``folds_total``, ``folds_missing`` (space-separated),
    then ``<key>_mean``, ``<key>_std``, ``<key>_n`` per metric. Cells without a value
    are empty.

    Parameters
    ----------
    path : path-like
    rows : sequence of mapping
        From :func:`build_table`.
    columns : sequence of (key, header, factor)
    """
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "folds", "folds_total", "folds_missing",
                         *(f"{key}_{stat}" for key, _, _ in columns for stat in ("mean", "std", "n"))])
        for row in rows:
            out = [row["method"], row["folds"], row["folds_total"], " ".join(row["folds_missing"])]
            for key, _, _ in columns:
                cell = row["cells"].get(key)
                if cell is None:
                    out += ["", "", 0]
                else:
                    out += [repr(cell["mean"]), "" if cell["std"] is None else repr(cell["std"]), cell["n"]]
            writer.writerow(out)


def write_per_fold_csv(path: str | os.PathLike, per_fold: Mapping[str, Mapping[Any, FoldValues | None]],
                       columns: Sequence[tuple[str, str, float]]) -> None:
    """Write one row per method and fold (stored units; a fold without results has empty cells).

    Parameters
    ----------
    path : path-like
    per_fold : mapping
        ``{method: {fold: values or None}}``.
    columns : sequence of (key, header, factor)
    """
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "fold", "n_cases", *(key for key, _, _ in columns)])
        for method, folds in per_fold.items():
            for fold, values in folds.items():
                values = values or {}
                cells = ["" if values.get(key) is None else repr(float(values[key])) for key, _, _ in columns]
                writer.writerow([method, fold, values.get("n_cases", ""), *cells])
