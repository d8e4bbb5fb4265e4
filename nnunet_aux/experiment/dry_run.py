"""``nnunet_aux experiment --dry-run``: what would be submitted, and what it would cost.

Nothing is submitted or written (except the commands file asked for with
``--write-commands``). The estimate is

    GPU-hours = sum over jobs of (remaining epochs x seconds per epoch x GPUs per job) / 3600

with the remaining epochs from the trainer's schedule (nnU-Net's 1000 epochs, or the
``_<X>epochs`` / ``_smoke`` variant in its name) minus the epochs nnU-Net's own training log
shows finished, and the seconds per epoch from nnU-Net's logs of finished epochs ("Epoch
time: ... s"): the same trainer and configuration first, any trainer of the configuration
next, else ``--epoch-seconds``. nnU-Net writes ``checkpoint_latest.pth`` every 50 epochs,
so a requeued job loses at most 49 epochs: the worst case per requeue is printed too.
"""

from __future__ import annotations

import re
import shlex
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .cluster import ClusterOptions, common_exports, sbatch_header
from .jobs import TrainingJob, fold_is_locked
from .layout import FINISHED

#: nnU-Net's ``nnUNetTrainer.save_every``: epochs between two ``checkpoint_latest.pth``.
SAVE_EVERY = 50
NNUNET_EPOCHS = 1000
_EPOCH_LINE = re.compile(r": Epoch (\d+)\s*$")
_EPOCH_TIME = re.compile(r": Epoch time: ([0-9.]+) s\s*$")


@dataclass
class PlannedJob:
    """One row of the dry run."""

    job: TrainingJob
    state: str
    command: list[str] | None
    total_epochs: int
    done_epochs: int
    epoch_seconds: float | None

    @property
    def remaining_gpu_seconds(self) -> float | None:
        if self.command is None:
            return 0.0
        if self.epoch_seconds is None:
            return None
        return max(0, self.total_epochs - self.done_epochs) * self.epoch_seconds * self.job.num_gpus


def schedule_epochs(trainer: str) -> int:
    """Epochs of a trainer by nnU-Net's naming: ``..._<X>epochs`` -> X, ``..._smoke`` -> 1, else 1000.

    Examples
    --------
    >>> schedule_epochs("nnUNetTrainerScaleContrastive_250epochs"), schedule_epochs("nnUNetTrainer")
    (250, 1000)
    """
    match = re.search(r"_(\d+)epochs?(?:_|$)", trainer)
    if match:
        return int(match.group(1))
    return 1 if trainer.endswith("_smoke") else NNUNET_EPOCHS


def log_epochs(fold_dir: str | Path) -> tuple[int, list[float]]:
    """(epochs started according to nnU-Net's training logs, seconds of each finished epoch)."""
    started, seconds = 0, []
    for log in sorted(Path(fold_dir).glob("training_log_*.txt")):
        with open(log, encoding="utf-8", errors="replace") as f:
            for line in f:
                if match := _EPOCH_LINE.search(line):
                    started = max(started, int(match.group(1)))
                elif match := _EPOCH_TIME.search(line):
                    seconds.append(float(match.group(1)))
    return started, seconds


def plan_jobs(jobs: Sequence[TrainingJob], epoch_seconds: float | None = None) -> list[PlannedJob]:
    """Each job's state, command and cost inputs (see the module's description)."""
    logs = {job.key: log_epochs(job.fold_dir) for job in jobs}
    by_trainer: dict[tuple[str, str], list[float]] = {}
    by_configuration: dict[str, list[float]] = {}
    for job in jobs:
        times = logs[job.key][1]
        by_trainer.setdefault((job.trainer, job.configuration), []).extend(times)
        by_configuration.setdefault(job.configuration, []).extend(times)
    planned = []
    for job in jobs:
        state = job.state()
        if fold_is_locked(job.fold_dir):
            state = "running"
        command = None if state in (FINISHED, "running") else job.train_command(state)
        measured = by_trainer[(job.trainer, job.configuration)] or by_configuration[job.configuration]
        seconds = statistics.median(measured) if measured else epoch_seconds
        finished_epochs = len(logs[job.key][1])
        done = 0 if state == "new" else finished_epochs - finished_epochs % SAVE_EVERY if state == "interrupted" \
            else schedule_epochs(job.trainer)
        planned.append(PlannedJob(job, state, command, schedule_epochs(job.trainer), done, seconds))
    return planned


def format_plan(planned: Sequence[PlannedJob], options: ClusterOptions, engine: Path, device: str) -> str:
    """The dry run's printout: one row per job, the SLURM script, the estimate."""
    lines = ["| trainer | fold | seed | state | command |", "|---|---|---|---|---|"]
    for p in planned:
        command = "-" if p.command is None else " ".join(shlex.quote(c) for c in p.command)
        lines.append(f"| {p.job.trainer} | {p.job.fold} | {'-' if p.job.seed is None else p.job.seed} | {p.state} "
                     f"| `{command}` |")
    to_run = [p for p in planned if p.command is not None]
    lines.append("")
    lines.append(f"{len(to_run)} of {len(planned)} job(s) to run ({len(planned) - len(to_run)} finished or running).")
    if options.cluster == "slurm" and to_run:
        lines += ["", "SLURM script submitit would submit (one array):", "```",
                  sbatch_header(options, engine, len(to_run), common_exports([p.job for p in to_run])), "```"]
    unit = "GPU" if device == "cuda" else device.upper()
    costs = [p.remaining_gpu_seconds for p in to_run]
    known = [c for c in costs if c is not None]
    lines.append("")
    if to_run and len(known) < len(costs):
        lines.append(f"Estimate: unknown for {len(costs) - len(known)} job(s): no finished epoch of their "
                     "configuration in nnU-Net's logs; give --epoch-seconds S.")
    if known:
        per_epoch = [p.epoch_seconds for p in to_run if p.epoch_seconds is not None]
        worst = max(per_epoch) * (SAVE_EVERY - 1) * max(p.job.num_gpus for p in to_run)
        lines.append(f"Estimate: {sum(known) / 3600:.1f} {unit}-hours for {len(known)} job(s) "
                     f"(remaining epochs x {statistics.median(per_epoch):.1f} s per epoch (median) x "
                     f"{to_run[0].job.num_gpus} {unit}(s) per job); at most {worst / 3600:.2f} {unit}-hours lost "
                     f"per requeue (nnU-Net saves checkpoint_latest.pth every {SAVE_EVERY} epochs).")
    return "\n".join(lines) + "\n"


def commands_script(planned: Sequence[PlannedJob]) -> str:
    """A shell script with one line per job to run (for LSF, PBS or any other scheduler)."""
    lines = ["#!/usr/bin/env bash", "# Written by nnunet_aux experiment --dry-run --write-commands: one nnUNetv2_train",
             "# per line; submit each line as one job of your scheduler. Re-run the experiment with --collect",
             "# afterwards to evaluate and tabulate.", "set -euo pipefail"]
    for p in planned:
        if p.command is None:
            continue
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(p.job.env.items()))
        lines.append(f"env {env} {' '.join(shlex.quote(c) for c in p.command)} >> {shlex.quote(p.job.log_file)} 2>&1")
    return "\n".join(lines) + "\n"
