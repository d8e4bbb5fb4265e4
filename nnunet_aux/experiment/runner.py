"""Run an experiment: train (or reuse) every trainer on every fold, evaluate, tabulate.

For each fold and trainer (fold by fold, so that early folds of all methods are comparable
while later ones train), the fold's state is read from nnU-Net's files
(:func:`nnunet_aux.experiment.layout.fold_state`) and only the missing step runs:
``nnUNetv2_train``, ``nnUNetv2_train --c`` or ``nnUNetv2_train --val``. Then the
validation predictions nnU-Net wrote are evaluated (cached per fold) and the table,
CSVs and figure are rewritten, so they always show every fold finished so far.

A fold that fails (``nnUNetv2_train`` exits with an error, or leaves no final checkpoint
and validation) is recorded with the tail of its log and the experiment goes on with the
other folds; ``stop_on_error`` stops at the first failure instead. Either way the
result lists the failures and the command line exits with code 1.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import InputError
from .commands import (
    DEVICES,
    environment_with_trainer_path,
    log_tail,
    missing_trainers,
    run_logged,
    train_command,
)
from .fold_evaluation import evaluate_fold
from .layout import (FINISHED, check_folds, find_dataset_name, fold_state, nnunet_folder, trainer_folder,
                     validation_cases)
from .table import build_table, fold_values, format_markdown, table_columns, write_per_fold_csv, write_table_csv

logger = logging.getLogger(__name__)

#: Files written into the output folder.
OUTPUT_FILES = {
    "markdown": "table.md",
    "csv": "table.csv",
    "per_fold_csv": "per_fold.csv",
    "figure": "table.png",
    "state": "experiment.json",
}


@dataclass
class FoldFailure:
    """A fold that could not be trained or evaluated."""

    trainer: str
    fold: int
    step: str  #: "training" or "evaluation"
    message: str
    log_file: str | None = None


@dataclass
class FoldStep:
    """What was done for one trainer and fold in this run."""

    trainer: str
    fold: int
    state_before: str
    command: list[str] | None = None
    returncode: int | None = None
    seconds: float = 0.0
    evaluation_reused: bool | None = None


@dataclass
class ExperimentResult:
    """Outcome of :func:`run_experiment`."""

    dataset: str
    output_dir: Path
    per_fold: dict[str, dict[int, dict[str, float | None] | None]]
    rows: list[dict[str, Any]]
    markdown: str
    steps: list[FoldStep] = field(default_factory=list)
    failures: list[FoldFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every fold of every trainer was trained and evaluated."""
        return not self.failures


def _check_plans(preprocessed_dataset: Path, plans: str, configuration: str) -> None:
    plans_file = preprocessed_dataset / f"{plans}.json"
    if not plans_file.is_file():
        available = sorted(p.stem for p in preprocessed_dataset.glob("*Plans*.json"))
        raise InputError(f"plans {plans!r} not found: no {plans_file} (available: {available or 'none'})")
    with open(plans_file, encoding="utf-8") as f:
        configurations = json.load(f).get("configurations", {})
    if configuration not in configurations:
        raise InputError(f"configuration {configuration!r} is not in {plans_file} "
                         f"(available: {sorted(configurations)})")


def _check_label(dataset_json: Path, label: str | None) -> None:
    from ..evaluation.labels import labels_from_dataset_json

    if label is None:
        return
    names = [spec.name for spec in labels_from_dataset_json(dataset_json)]
    if label not in names:
        raise InputError(f"label {label!r} is not in {dataset_json} (labels: {names})")


def write_outputs(output_dir: str | os.PathLike, per_fold: Mapping[str, Mapping[int, Any]], *,
                  title: str | None = None, ddof: int = 0, figure: bool = True) -> tuple[list[dict[str, Any]], str]:
    """Write the table (Markdown, CSV), the per-fold CSV and the figure into a folder.

    Parameters
    ----------
    output_dir : path-like
    per_fold : mapping
        ``{method: {fold: values or None}}`` (see :func:`nnunet_aux.experiment.table.build_table`).
    title : str, optional
        Title of the Markdown table and the figure.
    ddof : int, optional
        Delta degrees of freedom of the standard deviation over folds.
    figure : bool, optional
        Also write the PNG figure (when any fold has results).

    Returns
    -------
    rows : list of dict
        From :func:`~nnunet_aux.experiment.table.build_table`.
    markdown : str
        The Markdown table.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    columns = table_columns(per_fold)
    rows = build_table(per_fold, columns, ddof=ddof)
    markdown = format_markdown(rows, columns, title=title)
    (output_dir / OUTPUT_FILES["markdown"]).write_text(markdown, encoding="utf-8")
    write_table_csv(output_dir / OUTPUT_FILES["csv"], rows, columns)
    write_per_fold_csv(output_dir / OUTPUT_FILES["per_fold_csv"], per_fold, columns)
    if figure and any(row["folds"] for row in rows):
        from .figure import plot_table

        plot_table(output_dir / OUTPUT_FILES["figure"], rows, title=title)
    return rows, markdown


def run_experiment(
    dataset: int | str,
    trainers: Sequence[str],
    folds: Sequence[int | str] = (0, 1, 2, 3, 4),
    configuration: str = "3d_fullres",
    plans: str = "nnUNetPlans",
    device: str = "cuda",
    output_dir: str | os.PathLike | None = None,
    *,
    label: str | None = None,
    stop_on_error: bool = False,
    ddof: int = 0,
    num_processes: int | None = None,
    env: Mapping[str, str] | None = None,
    echo: Callable[[str], None] | None = None,
    figure: bool = True,
) -> ExperimentResult:
    """Train or reuse every trainer on every fold, evaluate nnU-Net's validation
    predictions and write Sadikine et al.'s Table 1 (mean ± std over folds).

    Parameters
    ----------
    dataset : int or str
        Dataset ID or name, planned and preprocessed in ``$nnUNet_preprocessed``.
    trainers : sequence of str
        nnU-Net trainer class names, one table row each (in this order).
    folds : sequence of int, optional
        Cross-validation folds.
    configuration, plans : str, optional
        nnU-Net configuration and plans identifier.
    device : str, optional
        ``cuda``, ``cpu`` or ``mps``, passed to ``nnUNetv2_train -device``.
    output_dir : path-like, optional
        Default ``$nnUNet_results/DatasetXXX_Name/nnunet_aux_experiment``. Holds
        ``table.md``, ``table.csv``, ``per_fold.csv``, ``table.png``,
        ``experiment.json`` (settings, steps, failures), ``logs/`` (one training log per
        trainer and fold) and ``evaluation/`` (the cached per-fold evaluations).
    label : str, optional
        Label or region of the table; default the first with vessel scales, else the
        first label.
    stop_on_error : bool, optional
        Stop at the first failed fold instead of going on with the others.
    ddof : int, optional
        0 (population) or 1 (sample) standard deviation over folds.
    num_processes : int, optional
        Worker processes of the evaluation.
    env : mapping, optional
        Environment for nnU-Net (default ``os.environ``); ``nnUNet_extTrainer`` gets
        this package's trainer folder added.
    echo : callable, optional
        Called with every line nnU-Net prints while training (it always goes to the log).
    figure : bool, optional
        Write the PNG figure.

    Returns
    -------
    result : ExperimentResult

    Raises
    ------
    InputError
        Unknown dataset, plans, configuration or label, unset nnU-Net folders, or
        trainers that nnU-Net cannot find; raised before anything is trained.

    References
    ----------
    .. [1] Sadikine et al., "Scale-specific auxiliary multi-task contrastive learning for
           deep liver vessel segmentation", ISBI 2023, Sect. 3.2-3.3 and Table 1 (5-fold
           cross-validation; DSC, Jacc, clDSC, HD as mean ± std).
    """
    exp = _checked_experiment(dataset, trainers, folds, configuration, plans, device, output_dir, label, env)
    exp.ddof, exp.figure, exp.echo, exp.num_processes = ddof, figure, echo, num_processes
    exp.output_dir.mkdir(parents=True, exist_ok=True)
    for fold in exp.folds:
        for trainer in exp.trainers:
            if not _run_step(exp, trainer, fold) and stop_on_error:
                break
        else:
            continue
        break
    rows, markdown = write_outputs(exp.output_dir, exp.per_fold, title=exp.title, ddof=ddof, figure=figure)
    exp.save_state()
    return ExperimentResult(exp.name, exp.output_dir, exp.per_fold, rows, markdown, exp.steps, exp.failures)


@dataclass
class _Experiment:
    """What one :func:`run_experiment` call works on: checked settings, folders and progress."""

    name: str
    preprocessed: Path
    results: Path
    output_dir: Path
    trainers: list[str]
    folds: list[int | str]
    configuration: str
    plans: str
    device: str
    label: str | None
    env: dict[str, str]
    ddof: int = 0
    figure: bool = True
    echo: Callable[[str], None] | None = None
    num_processes: int | None = None
    per_fold: dict[str, dict[int, dict[str, float | None] | None]] = field(default_factory=dict)
    steps: list[FoldStep] = field(default_factory=list)
    failures: list[FoldFailure] = field(default_factory=list)

    @property
    def title(self) -> str:
        return (f"{self.name}, {self.configuration}, {self.plans}: mean ± std over folds "
                f"{', '.join(map(str, self.folds))}")

    def fold_dir(self, trainer: str, fold: int | str) -> Path:
        return trainer_folder(self.results / self.name, trainer, self.plans, self.configuration) / f"fold_{fold}"

    def save_state(self) -> None:
        state = {"dataset": self.name, "configuration": self.configuration, "plans": self.plans,
                 "device": self.device, "trainers": self.trainers, "folds": self.folds, "label": self.label,
                 "ddof": self.ddof,
                 "per_fold": {t: {str(f): v for f, v in fv.items()} for t, fv in self.per_fold.items()},
                 "steps": [asdict(s) for s in self.steps], "failures": [asdict(f) for f in self.failures]}
        with open(self.output_dir / OUTPUT_FILES["state"], "w", encoding="utf-8") as f:
            json.dump(state, f, indent=2, allow_nan=False)


def _checked_experiment(dataset, trainers, folds, configuration, plans, device, output_dir, label,
                        env) -> _Experiment:
    """Every input of :func:`run_experiment` checked, before anything is trained (InputError otherwise)."""
    if device not in DEVICES:
        raise InputError(f"device must be one of {DEVICES}, got {device!r}")
    trainers = list(dict.fromkeys(trainers))  # keep order, drop repeats
    if not trainers:
        raise InputError("no trainers given")
    folds = check_folds(folds)
    env = environment_with_trainer_path(env)
    preprocessed_root = nnunet_folder("nnUNet_preprocessed", env)
    results_root = nnunet_folder("nnUNet_results", env)
    name = find_dataset_name(dataset, preprocessed_root, env.get("nnUNet_raw"))
    preprocessed = preprocessed_root / name
    _check_plans(preprocessed, plans, configuration)
    for required in (preprocessed / "gt_segmentations", preprocessed / "dataset.json"):
        if not required.exists():
            raise InputError(f"{required} does not exist; rerun nnUNetv2_plan_and_preprocess -d {dataset}")
    _check_label(preprocessed / "dataset.json", label)
    output_dir = Path(output_dir) if output_dir is not None else results_root / name / "nnunet_aux_experiment"
    exp = _Experiment(name, preprocessed, results_root, output_dir, trainers, folds, configuration, plans, device,
                      label, env, per_fold={t: {f: None for f in folds} for t in trainers})
    to_train = [t for t in trainers if any(fold_state(exp.fold_dir(t, f)) != FINISHED for f in folds)]
    missing = missing_trainers(to_train, env)
    if missing:
        raise InputError(
            f"nnU-Net cannot find trainer(s) {missing}. It searches nnunetv2.training.nnUNetTrainer and the "
            f"folders in nnUNet_extTrainer (now {env['nnUNet_extTrainer']!r}); put the trainer there or add its "
            "folder to nnUNet_extTrainer (this package's trainers: export nnUNet_extTrainer=$(nnunet_aux "
            "trainer-path))")
    return exp


def _run_step(exp: _Experiment, trainer: str, fold: int | str) -> bool:
    """Train (or reuse) and evaluate one trainer's fold; False when it failed (recorded in ``exp.failures``)."""
    folder = exp.fold_dir(trainer, fold)
    step = FoldStep(trainer, fold, fold_state(folder))
    exp.steps.append(step)
    if step.state_before != FINISHED:
        if not _train(exp, step, folder):
            exp.save_state()
            return False
    else:
        logger.info("%s fold %d: finished, reusing %s", trainer, fold, folder)
    cache = exp.output_dir / "evaluation" / folder.parent.name / f"fold_{fold}.json"
    try:
        summary, step.evaluation_reused = evaluate_fold(
            folder, exp.preprocessed / "gt_segmentations", cache, exp.preprocessed / "dataset.json",
            validation_cases(exp.preprocessed, fold), num_processes=exp.num_processes)
        exp.per_fold[trainer][fold] = fold_values(summary, exp.label)
    except (ValueError, OSError) as e:  # InputError is a ValueError
        exp.failures.append(FoldFailure(trainer, fold, "evaluation", str(e)))
        logger.error("%s fold %d: evaluation failed: %s", trainer, fold, e)
        exp.save_state()
        return False
    write_outputs(exp.output_dir, exp.per_fold, title=exp.title, ddof=exp.ddof, figure=exp.figure)
    exp.save_state()
    return True


def _train(exp: _Experiment, step: FoldStep, folder: Path) -> bool:
    """nnUNetv2_train for one fold (new, --c or --val by its state), logged; False when it did not finish."""
    log_file = exp.output_dir / "logs" / f"{step.trainer}__fold_{step.fold}.log"
    step.command = train_command(exp.name, exp.configuration, step.fold, step.trainer, exp.plans, exp.device,
                                 step.state_before)
    logger.info("%s fold %d (%s): %s\n  log: %s", step.trainer, step.fold, step.state_before,
                " ".join(step.command), log_file)
    start = time.perf_counter()
    step.returncode = run_logged(step.command, exp.env, log_file, echo=exp.echo)
    step.seconds = time.perf_counter() - start
    state_after = fold_state(folder)
    if step.returncode == 0 and state_after == FINISHED:
        return True
    message = (f"nnUNetv2_train exited with code {step.returncode}, fold state {state_after!r}; "
               f"last lines of {log_file}:\n{log_tail(log_file)}")
    exp.failures.append(FoldFailure(step.trainer, step.fold, "training", message, str(log_file)))
    logger.error("%s fold %d failed: %s", step.trainer, step.fold, message)
    return False
