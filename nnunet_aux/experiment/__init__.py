"""Cross-validation experiments with nnU-Net: train or reuse, evaluate, tabulate (``nnunet_aux experiment``).

- :func:`run_experiment`: every trainer on every fold, resumable from nnU-Net's files;
- :func:`build_table`, :func:`format_markdown`: Sadikine et al.'s Table 1 (mean ± std over folds);
- :func:`plot_table`: bars with error bars and per-fold points.

``register`` and ``run`` are the command-line hooks (:mod:`.cli`).
"""

from .cli import register, run
from .figure import plot_table
from .fold_evaluation import evaluate_fold
from .layout import fold_state
from .runner import ExperimentResult, FoldFailure, run_experiment, write_outputs
from .table import build_table, fold_values, format_markdown, table_columns, write_per_fold_csv, write_table_csv

__all__ = [
    "ExperimentResult",
    "FoldFailure",
    "build_table",
    "evaluate_fold",
    "fold_state",
    "fold_values",
    "format_markdown",
    "plot_table",
    "register",
    "run",
    "run_experiment",
    "table_columns",
    "write_outputs",
    "write_per_fold_csv",
    "write_table_csv",
]
