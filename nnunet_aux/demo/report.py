"""The demo's results table and Markdown report, from :func:`nnunet_aux.evaluation.evaluate_folders` summaries."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from ..errors import InputError

#: Columns of the results table: (heading, metric key in the evaluation summary, digits).
METRIC_COLUMNS = (("Dice", "dice", 3), ("clDice", "cldice", 3), ("HD95 (mm)", "hd95", 2))


def _mean_std(summary: Mapping[str, Any] | None, digits: int) -> str:
    if not summary or summary.get("mean") is None:
        return "n/a"
    return f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f}"


def results_table(
    summaries: Mapping[str, Mapping[str, Any]],
    label: str = "vessel",
) -> tuple[list[str], list[list[str]]]:
    """Heading and rows of the results table: one row per method, mean ± std over cases.

    Parameters
    ----------
    summaries : mapping
        Method title to the summary returned by
        :func:`nnunet_aux.evaluation.evaluate_folders`.
    label : str, optional
        The label (region) whose metrics are shown; its scales give the recall columns.

    Returns
    -------
    heading : list of str
    rows : list of list of str

    Examples
    --------
    >>> s = {"mean": 0.5, "std": 0.1}
    >>> summary = {"aggregate": {"vessel": {"dice": s, "cldice": s, "hd95": {"mean": 2.0, "std": 0.0},
    ...                                     "scales": {"small": {"recall": s}}}}}
    >>> heading, rows = results_table({"baseline": summary})
    >>> heading
    ['Method', 'Dice', 'clDice', 'HD95 (mm)', 'Recall small']
    >>> rows
    [['baseline', '0.500 ± 0.100', '0.500 ± 0.100', '2.00 ± 0.00', '0.500 ± 0.100']]
    """
    if not summaries:
        raise InputError("no evaluation summaries given")
    scale_names: list[str] = []
    for title, summary in summaries.items():
        if label not in summary.get("aggregate", {}):
            raise InputError(f"the evaluation of {title!r} has no label {label!r}")
        for scale in summary["aggregate"][label].get("scales", {}):
            if scale not in scale_names:
                scale_names.append(scale)
    heading = ["Method", *(h for h, _, _ in METRIC_COLUMNS), *(f"Recall {s}" for s in scale_names)]
    rows = []
    for title, summary in summaries.items():
        aggregate = summary["aggregate"][label]
        row = [title, *(_mean_std(aggregate.get(key), digits) for _, key, digits in METRIC_COLUMNS)]
        row += [_mean_std(aggregate.get("scales", {}).get(s, {}).get("recall"), 3) for s in scale_names]
        rows.append(row)
    return heading, rows


def markdown_table(heading: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table.

    Examples
    --------
    >>> print(markdown_table(["a", "b"], [["1", "2"]]))
    | a | b |
    |---|---|
    | 1 | 2 |
    """
    lines = ["| " + " | ".join(heading) + " |", "|" + "|".join("---" for _ in heading) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def scale_recalls(summaries: Mapping[str, Mapping[str, Any]], label: str = "vessel"
                  ) -> dict[str, dict[str, tuple[float | None, float | None]]]:
    """Per method and scale, the (mean, std) of recall, for :func:`~nnunet_aux.demo.figures.scale_recall_figure`.

    Examples
    --------
    >>> summary = {"aggregate": {"vessel": {"scales": {"small": {"recall": {"mean": 0.5, "std": 0.1}}}}}}
    >>> scale_recalls({"baseline": summary})
    {'baseline': {'small': (0.5, 0.1)}}
    """
    return {
        title: {scale: (values["recall"]["mean"], values["recall"]["std"])
                for scale, values in summary["aggregate"][label].get("scales", {}).items()}
        for title, summary in summaries.items()
    }


def write_report(
    path: str | os.PathLike,
    heading: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    figures: Mapping[str, str],
    settings: Mapping[str, Any],
    timings: Mapping[str, float],
    notes: Sequence[str] = (),
) -> None:
    """Write the demo's Markdown report.

    Parameters
    ----------
    path : path-like
        ``report.md`` to write.
    heading, rows : sequence
        The results table (:func:`results_table`).
    figures : mapping of str to str
        Caption to PNG path relative to the report.
    settings : mapping
        The demo's settings, listed at the end.
    timings : mapping of str to float
        Step name to wall time in seconds.
    notes : sequence of str, optional
        Extra lines (device, test-time augmentation, ...).
    """
    lines = [
        "# nnunet_aux demo: scale-specific auxiliary contrastive learning on synthetic vessels",
        "",
        "Binary nnU-Net baseline (stock `nnUNetTrainer`) against `nnUNetTrainerScaleContrastiveLite` "
        "(one light auxiliary decoder per vessel scale plus the multi-scale supervised contrastive loss; "
        "Sadikine et al., Eq. 9), both trained by `nnUNetv2_train` on the same synthetic, scale-decomposed "
        "dataset and evaluated on its test cases (`labelsTs`). Mean ± standard deviation over test cases; "
        "recall per vessel scale is the fraction of reference voxels of that scale that the vessel "
        "prediction covers.",
        "",
        markdown_table(heading, rows),
        "",
    ]
    for caption, file in figures.items():
        lines += [f"![{caption}]({file})", "", f"*{caption}*", ""]
    if notes:
        lines += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    lines += ["## Settings", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in settings.items()]
    lines += ["", "## Wall time", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in timings.items()]
    lines += [f"| total | {sum(timings.values()):.0f} |", ""]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
