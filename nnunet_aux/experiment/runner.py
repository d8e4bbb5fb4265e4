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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import InputError
from . import process
from .cluster import ClusterOptions, Submission, needs_first_alone, run_jobs
from .commands import DEVICES, environment_with_trainer_path, missing_trainers
from .jobs import FoldEvaluation, JobResult, TrainingJob
from .layout import (
    FINISHED,
    check_folds,
    find_dataset_name,
    fold_state,
    nnunet_folder,
    trainer_folder,
    validation_cases,
)
from .table import build_table, format_markdown, table_columns, write_per_fold_csv, write_table_csv

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
    """What was done for one trainer and fold (and seed) in this run."""

    trainer: str
    fold: int
    state_before: str
    command: list[str] | None = None
    returncode: int | None = None
    seconds: float = 0.0
    evaluation_reused: bool | None = None
    seed: int | None = None


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
    #: job key -> job id of jobs submitted and not waited for (``wait=False``)
    submitted: dict[str, str] = field(default_factory=dict)
    #: job keys of (trainer, fold, seed) without results yet (``collect`` or ``wait=False``)
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every fold of every trainer was trained and evaluated."""
        return not self.failures and not self.missing


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
    seeds: Sequence[int] | None = None,
    cluster: ClusterOptions | None = None,
    wait: bool = True,
    collect: bool = False,
) -> ExperimentResult:
    """Train or reuse every trainer on every fold (and seed), evaluate nnU-Net's validation
    predictions and write Sadikine et al.'s Table 1 (mean ± std over folds).

    Every (trainer, fold, seed) is one :class:`~nnunet_aux.experiment.jobs.TrainingJob`, run
    through submitit (:func:`~nnunet_aux.experiment.cluster.run_jobs`): one after the other
    on this machine by default, several at once, or as a SLURM array.

    Parameters
    ----------
    dataset : int or str
        Dataset ID or name, planned and preprocessed in ``$nnUNet_preprocessed``.
    trainers : sequence of str
        nnU-Net trainer class names, one table row each (in this order).
    folds : sequence of int, optional
        Cross-validation folds. A missing ``splits_final.json`` is written first, as
        nnU-Net would write it (5 folds, seed 12345), so that no job has to.
    configuration, plans : str, optional
        nnU-Net configuration and plans identifier.
    device : str, optional
        ``cuda``, ``cpu`` or ``mps``, passed to ``nnUNetv2_train -device``.
    output_dir : path-like, optional
        Default ``$nnUNet_results/DatasetXXX_Name/nnunet_aux_experiment``. Holds
        ``table.md``, ``table.csv``, ``per_fold.csv``, ``table.png``,
        ``experiment.json`` (settings, steps, failures), ``jobs.json`` (job ids),
        ``engine/`` (submitit's files), ``logs/`` (one training log per trainer, fold
        and seed) and ``evaluation/`` (the cached per-fold evaluations).
    label : str, optional
        Label or region of the table; default the first with vessel scales, else the
        first label.
    stop_on_error : bool, optional
        Local runs: start no further job after the first failure.
    ddof : int, optional
        0 (population) or 1 (sample) standard deviation over folds.
    num_processes : int, optional
        Worker processes of the evaluation.
    env : mapping, optional
        Environment for nnU-Net (default ``os.environ``); ``nnUNet_extTrainer`` gets
        this package's trainer folder added.
    echo : callable, optional
        Called with nnU-Net's output lines as they come (``local``: followed from the jobs' logs;
        ``debug``: printed by the job); it always goes to ``logs/``. SLURM jobs' output is in
        ``logs/`` only.
    figure : bool, optional
        Write the PNG figure.
    seeds : sequence of int, optional
        Repetitions: each seed trains every (trainer, fold) again into its own results
        folder ``OUTDIR/seed_<k>/nnUNet_results`` (nnU-Net does not seed its training, so a
        repetition differs as two nnU-Net runs do). Default: one run in ``$nnUNet_results``.
    cluster : ClusterOptions, optional
        Where the jobs run (default: local, one at a time).
    wait : bool, optional
        False: submit (SLURM) and return; run again, or with ``collect``, to tabulate.
    collect : bool, optional
        Submit nothing: tabulate what has finished (unfinished folds are listed in
        ``result.missing`` and shown as missing in the table).

    Returns
    -------
    result : ExperimentResult

    Raises
    ------
    InputError
        Unknown dataset, plans, configuration or label, unset nnU-Net folders, trainers
        that nnU-Net cannot find, or impossible cluster settings; raised before anything
        is submitted.

    References
    ----------
    .. [1] Sadikine et al., "Scale-specific auxiliary multi-task contrastive learning for
           deep liver vessel segmentation", ISBI 2023, Sect. 3.2-3.3 and Table 1 (5-fold
           cross-validation; DSC, Jacc, clDSC, HD as mean ± std).
    """
    cluster = cluster or ClusterOptions()
    cluster.check()
    exp = _checked_experiment(dataset, trainers, folds, configuration, plans, device, output_dir, label, env,
                              seeds, check_trainers=not collect)
    exp.ddof, exp.figure, exp.echo, exp.num_processes = ddof, figure, echo, num_processes
    exp.output_dir.mkdir(parents=True, exist_ok=True)
    jobs = experiment_jobs(exp, cluster)
    results: dict[str, JobResult] = {}
    submission = Submission()
    if not collect:
        ensure_splits(exp.preprocessed, exp.plans, exp.configuration)
        # live output: the debug executor's jobs print it themselves; local jobs' logs are followed here
        follow = echo if echo is not None and cluster.cluster == "local" else None
        submission = run_jobs(jobs, cluster, exp.output_dir, wait=wait, stop_on_error=stop_on_error,
                              first_alone=needs_first_alone(exp.data_folder()), say=logger.info, follow=follow)
        results = submission.results
    missing = _tabulate(exp, jobs, results, stop_on_error)
    rows, markdown = write_outputs(exp.output_dir, exp.per_fold, title=exp.title, ddof=ddof, figure=figure)
    exp.save_state()
    return ExperimentResult(exp.name, exp.output_dir, exp.per_fold, rows, markdown, exp.steps, exp.failures,
                            submitted={k: v for k, v in submission.submitted.items() if k not in results},
                            missing=missing)


def _tabulate(exp: _Experiment, jobs: Sequence[TrainingJob], results: Mapping[str, JobResult],
              stop_on_error: bool = False) -> list[str]:
    """Table values of every job: from its result, or evaluated here when its fold is finished."""
    missing = []
    for job in jobs:
        if stop_on_error and exp.failures:
            break
        column = exp.column(job.fold, job.seed)
        result = results.get(job.key)
        if result is None:
            if job.state() != FINISHED:
                missing.append(job.key)
                continue
            # finished in an earlier run (or by a job not waited for): evaluate here (cached)
            result = JobResult(job.key, job.trainer, job.fold, job.seed, state_before=FINISHED)
            job._evaluate(result)
        exp.steps.append(FoldStep(job.trainer, job.fold, result.state_before, result.command, result.returncode,
                                  result.seconds, result.evaluation_reused, job.seed))
        if result.ok:
            exp.per_fold[job.trainer][column] = result.values
        else:
            exp.failures.append(FoldFailure(job.trainer, job.fold, result.failed_step or "job", result.message,
                                            result.log_file or None))
            logger.error("%s fold %s%s: %s failed: %s", job.trainer, job.fold,
                         "" if job.seed is None else f" seed {job.seed}", result.failed_step, result.message)
    return missing


def ensure_splits(preprocessed: Path, plans: str, configuration: str) -> Path:
    """Write nnU-Net's 5-fold ``splits_final.json`` when it is missing, as nnU-Net would.

    nnU-Net writes it in the first training that needs it; jobs started together would race
    for it. Same split as nnU-Net's (``generate_crossval_split`` of the sorted case
    identifiers, seed 12345, 5 folds).
    """
    path = preprocessed / "splits_final.json"
    if path.is_file():
        return path
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    from ..dataset_format import write_json_atomic

    folder = _data_folder(preprocessed, plans, configuration)
    identifiers = sorted(infer_dataset_class(str(folder)).get_identifiers(str(folder)))
    if len(identifiers) < 2:
        raise InputError(f"{folder} holds {len(identifiers)} preprocessed case(s); cross-validation needs at least 2")
    write_json_atomic(generate_crossval_split(identifiers, seed=12345, n_splits=5), path)
    logger.info("wrote %s (nnU-Net's 5-fold split of %d cases)", path, len(identifiers))
    return path


def _data_folder(preprocessed: Path, plans: str, configuration: str) -> Path:
    with open(preprocessed / f"{plans}.json", encoding="utf-8") as f:
        config = json.load(f)["configurations"][configuration]
    return preprocessed / config.get("data_identifier", f"{plans}_{configuration}")


def experiment_jobs(exp: _Experiment, cluster: ClusterOptions) -> list[TrainingJob]:
    """One job per (fold, trainer, seed), fold by fold, so that early folds of all methods come first."""
    executable = process.nnunet_command("nnUNetv2_train")
    # Written explicitly into every job: nnU-Net's variables, and whatever the caller's ``env`` changed
    # against this process's environment; the rest comes from the node the job runs on.
    nnunet_env = {k: v for k, v in exp.env.items()
                  if k.startswith("nnUNet_") or k == "PYTHONIOENCODING" or os.environ.get(k) != v}
    nnunet_env["PYTHONUNBUFFERED"] = "1"
    nnunet_env.update(cluster.job_environment())
    jobs = []
    for seed in exp.seeds:
        for fold in exp.folds:
            for trainer in exp.trainers:
                env = dict(nnunet_env)
                if seed is not None:
                    env["nnUNet_results"] = str(exp.results_root(seed))
                suffix = "" if seed is None else f"__seed_{seed}"
                folder = exp.fold_dir(trainer, fold, seed)
                cache = exp.output_dir / "evaluation" / folder.parent.name / f"fold_{fold}{suffix}.json"
                evaluation = FoldEvaluation(str(exp.preprocessed / "gt_segmentations"),
                                            str(exp.preprocessed / "dataset.json"), str(cache),
                                            _cases(exp.preprocessed, fold), exp.label, exp.num_processes)
                key = f"{trainer}/fold_{fold}" + ("" if seed is None else f"/seed_{seed}")
                jobs.append(TrainingJob(
                    key, exp.name, exp.configuration, fold, trainer, exp.plans, exp.device, str(folder),
                    str(exp.output_dir / "logs" / f"{trainer}__fold_{fold}{suffix}.log"), env, executable,
                    seed=seed, num_gpus=cluster.num_gpus, evaluation=evaluation,
                    echo=exp.echo is not None and cluster.cluster == "debug"))
    # fold-major order: all trainers of fold 0 (and seed) first
    order = {f: i for i, f in enumerate(exp.folds)}
    return sorted(jobs, key=lambda j: (order[j.fold], exp.seeds.index(j.seed)))


def _cases(preprocessed: Path, fold: int) -> tuple[str, ...] | None:
    cases = validation_cases(preprocessed, fold)
    return None if cases is None else tuple(cases)


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
    seeds: list[int | None] = field(default_factory=lambda: [None])
    ddof: int = 0
    figure: bool = True
    echo: Callable[[str], None] | None = None
    num_processes: int | None = None
    per_fold: dict[str, dict[Any, dict[str, float | None] | None]] = field(default_factory=dict)
    steps: list[FoldStep] = field(default_factory=list)
    failures: list[FoldFailure] = field(default_factory=list)

    @property
    def title(self) -> str:
        seeds = "" if self.seeds == [None] else f", seeds {', '.join(map(str, self.seeds))}"
        return (f"{self.name}, {self.configuration}, {self.plans}: mean ± std over folds "
                f"{', '.join(map(str, self.folds))}{seeds}")

    def column(self, fold: int | str, seed: int | None) -> int | str:
        """The per-fold table's key of a (fold, seed): the fold alone without seeds."""
        return fold if seed is None else f"{fold}/s{seed}"

    def results_root(self, seed: int | None) -> Path:
        return self.results if seed is None else self.output_dir / f"seed_{seed}" / "nnUNet_results"

    def fold_dir(self, trainer: str, fold: int | str, seed: int | None = None) -> Path:
        return trainer_folder(self.results_root(seed) / self.name, trainer, self.plans,
                              self.configuration) / f"fold_{fold}"

    def data_folder(self) -> Path:
        return _data_folder(self.preprocessed, self.plans, self.configuration)

    def save_state(self) -> None:
        from ..dataset_format import write_json_atomic

        state = {"dataset": self.name, "configuration": self.configuration, "plans": self.plans,
                 "device": self.device, "trainers": self.trainers, "folds": self.folds, "seeds": self.seeds,
                 "label": self.label, "ddof": self.ddof,
                 "per_fold": {t: {str(f): v for f, v in fv.items()} for t, fv in self.per_fold.items()},
                 "steps": [asdict(s) for s in self.steps], "failures": [asdict(f) for f in self.failures]}
        write_json_atomic(state, self.output_dir / OUTPUT_FILES["state"], allow_nan=False)


def _checked_experiment(dataset, trainers, folds, configuration, plans, device, output_dir, label,
                        env, seeds=None, check_trainers=True) -> _Experiment:
    """Every input of :func:`run_experiment` checked, before anything is trained (InputError otherwise)."""
    if device not in DEVICES:
        raise InputError(f"device must be one of {DEVICES}, got {device!r}")
    trainers = list(dict.fromkeys(trainers))  # keep order, drop repeats
    if not trainers:
        raise InputError("no trainers given")
    folds = check_folds(folds)
    seed_list: list[int | None] = [None]
    if seeds is not None:
        seed_list = list(dict.fromkeys(int(s) for s in seeds))
        if not seed_list or any(s < 0 for s in seed_list):
            raise InputError(f"seeds must be non-negative integers, got {list(seeds)}")
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
    exp = _Experiment(name, preprocessed, results_root, output_dir.absolute(), trainers, folds, configuration, plans,
                      device, label, env, seed_list)
    exp.per_fold = {t: {exp.column(f, s): None for s in seed_list for f in folds} for t in trainers}
    to_train = [t for t in trainers if any(fold_state(exp.fold_dir(t, f, s)) != FINISHED
                                           for f in folds for s in seed_list)]
    missing = missing_trainers(to_train, env) if check_trainers else []
    if missing:
        raise InputError(
            f"nnU-Net cannot find trainer(s) {missing}. It searches nnunetv2.training.nnUNetTrainer and the "
            f"folders in nnUNet_extTrainer (now {env['nnUNet_extTrainer']!r}); put the trainer there or add its "
            "folder to nnUNet_extTrainer (this package's trainers: export nnUNet_extTrainer=$(nnunet_aux "
            "trainer-path))")
    return exp


def dry_run_experiment(
    dataset: int | str,
    trainers: Sequence[str],
    folds: Sequence[int | str] = (0, 1, 2, 3, 4),
    configuration: str = "3d_fullres",
    plans: str = "nnUNetPlans",
    device: str = "cuda",
    output_dir: str | os.PathLike | None = None,
    *,
    label: str | None = None,
    env: Mapping[str, str] | None = None,
    seeds: Sequence[int] | None = None,
    cluster: ClusterOptions | None = None,
    epoch_seconds: float | None = None,
    write_commands: str | os.PathLike | None = None,
) -> str:
    """The plan of :func:`run_experiment` with the same arguments, without running anything.

    Returns the printout of :func:`nnunet_aux.experiment.dry_run.format_plan` (one row per
    job with its state and ``nnUNetv2_train`` command, the SLURM script for ``--cluster
    slurm``, the GPU-hours estimate). ``write_commands`` also writes the jobs as a shell
    script, one command per line (:func:`~nnunet_aux.experiment.dry_run.commands_script`).
    """
    from .dry_run import commands_script, format_plan, plan_jobs

    cluster = cluster or ClusterOptions()
    cluster.check()
    if epoch_seconds is not None and not epoch_seconds > 0:
        raise InputError(f"--epoch-seconds must be positive, got {epoch_seconds}")
    exp = _checked_experiment(dataset, trainers, folds, configuration, plans, device, output_dir, label, env,
                              seeds)
    planned = plan_jobs(experiment_jobs(exp, cluster), epoch_seconds)
    text = format_plan(planned, cluster, exp.output_dir / "engine", device)
    if write_commands is not None:
        path = Path(write_commands)
        if path.exists():
            raise InputError(f"{path} exists; --write-commands does not overwrite files")
        path.write_text(commands_script(planned), encoding="utf-8")
        text += f"\nwrote {sum(p.command is not None for p in planned)} command(s) to {path}\n"
    return text
