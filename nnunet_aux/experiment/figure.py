"""Figure of an experiment: grouped bars of overlap metrics per method, with the folds as points."""

from __future__ import annotations

import os
import textwrap
from typing import Any, Mapping, Sequence

from ..errors import InputError

#: Metrics drawn by default (all in [0, 1], drawn in percent).
FIGURE_METRICS: tuple[tuple[str, str], ...] = (("dice", "DSC"), ("cldice", "clDSC"), ("jaccard", "Jacc"))


def plot_table(
    path: str | os.PathLike,
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[tuple[str, str]] = FIGURE_METRICS,
    *,
    title: str | None = None,
) -> None:
    """Save a bar chart: per method, one bar per metric (mean over folds, in percent), the
    standard deviation over folds as error bar and each fold's value as a point.

    Parameters
    ----------
    path : path-like
        PNG file to write.
    rows : sequence of mapping
        From :func:`nnunet_aux.experiment.table.build_table`.
    metrics : sequence of (key, label), optional
        Metrics in [0, 1] to draw; default Dice, clDice and Jaccard.
    title : str, optional
        Figure title.

    Examples
    --------
    >>> import tempfile
    >>> from nnunet_aux.experiment.table import build_table
    >>> rows = build_table({"A": {0: {"dice": 0.5, "cldice": 0.4}, 1: {"dice": 0.7, "cldice": 0.5}}})
    >>> with tempfile.TemporaryDirectory() as d:
    ...     plot_table(os.path.join(d, "f.png"), rows)
    ...     os.path.getsize(os.path.join(d, "f.png")) > 0
    True
    """
    if not rows:
        raise InputError("rows is empty: there is nothing to plot")
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt
    import numpy as np

    n_methods, n_metrics = len(rows), len(metrics)
    width = 0.8 / n_metrics
    x = np.arange(n_methods)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * n_methods + 1.5), 3.6), layout="constrained")
    rng = np.random.default_rng(0)  # fixed jitter: the same results give the same file
    for j, (key, label) in enumerate(metrics):
        offset = x + (j - (n_metrics - 1) / 2) * width
        cells = [row["cells"].get(key) for row in rows]
        means = [100 * c["mean"] if c else np.nan for c in cells]
        stds = [100 * c["std"] if c and c["std"] is not None else 0.0 for c in cells]
        bars = ax.bar(offset, means, width, yerr=stds, capsize=3, label=label, alpha=0.85)
        colour = bars.patches[0].get_facecolor()
        for i, cell in enumerate(cells):
            if cell:
                values = 100 * np.asarray(cell["values"])
                jitter = rng.uniform(-0.25, 0.25, size=values.size) * width
                ax.scatter(offset[i] + jitter, values, s=12, color="black", zorder=3, linewidths=0)
        for i, cell in enumerate(cells):
            if cell is None:
                ax.text(offset[i], 1, "n/a", ha="center", va="bottom", fontsize=7, color=colour)
    ax.set_xticks(x, [f"{row['method']}\n({row['folds']}/{row['folds_total']} folds)" for row in rows], fontsize=8)
    ax.set_ylabel("% (mean ± std over folds; dots: folds)")
    ax.set_ylim(0, 112)  # room for the legend above 100 %
    ax.set_yticks(range(0, 101, 20))
    ax.legend(fontsize=8, ncols=n_metrics, loc="upper left")
    if title:
        ax.set_title(textwrap.fill(title, width=int(fig.get_figwidth() * 12)), fontsize=9)
    fig.savefig(path, dpi=120)
    plt.close(fig)
