"""One job: one ``nnUNetv2_train`` of a (trainer, fold, seed), then what follows it.

A :class:`TrainingJob` is a plain, picklable callable, so the same object runs in this
process (the demo; submitit's ``debug`` executor), as a local subprocess or as a SLURM array
task (:mod:`nnunet_aux.experiment.cluster`). Calling it

1. takes an exclusive lock in the fold folder (``fold_X/.nnunet_aux.lock``): a second job on
   the same fold, e.g. a resubmission while an orphan of a killed controller still trains,
   waits for the first and then finds the fold finished, so no fold is ever trained twice
   at once;
2. reads the fold's state from nnU-Net's files (:func:`~nnunet_aux.experiment.layout.fold_state`)
   and runs only what is missing: ``nnUNetv2_train``, ``... --c`` or ``... --val``;
3. runs the follow-up commands (e.g. ``nnUNetv2_predict`` of test cases), each skipped when
   its output is marked complete;
4. evaluates the fold's validation predictions (cached);
5. returns a small :class:`JobResult`; it never raises for a failed nnU-Net command (a raising
   job drops submitit's debug executor into pdb and a SLURM array into ``result()`` errors).

It is a submitit ``Checkpointable``: on a timeout or pre-emption signal submitit pickles the
job again and requeues it, the running ``nnUNetv2_train`` is stopped with its process group,
and the requeued job finds ``checkpoint_latest.pth`` and continues with ``--c``.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from submitit.helpers import Checkpointable

from .layout import FINISHED, INTERRUPTED, NEEDS_VALIDATION, NEW, fold_state
from .process import log_tail, run_logged

LOCK_NAME = ".nnunet_aux.lock"
DEVICES = ("cuda", "cpu", "mps")


@dataclass(frozen=True)
class FollowUp:
    """A command that runs after the training (e.g. ``nnUNetv2_predict``), once.

    ``done_file`` is written after it succeeded; while it exists the command is skipped.
    ``clean_dir`` is removed before a (re)run, so a killed run leaves no half-written output.
    """

    name: str
    command: tuple[str, ...]
    log_file: str
    done_file: str
    clean_dir: str | None = None


@dataclass(frozen=True)
class FoldEvaluation:
    """How to evaluate the fold's validation predictions (:func:`~.fold_evaluation.evaluate_fold`)."""

    gt_dir: str
    dataset_json: str
    cache_json: str
    cases: tuple[str, ...] | None
    label: str | None = None
    num_processes: int | None = None


@dataclass
class JobResult:
    """What one job did; small and JSON-friendly, returned to the submitting process."""

    key: str
    trainer: str
    fold: int | str
    seed: int | None
    ok: bool = True
    state_before: str = ""
    state_after: str = ""
    command: list[str] | None = None
    returncode: int | None = None
    seconds: float = 0.0
    failed_step: str | None = None  #: "training", a follow-up's name or "evaluation"
    message: str = ""
    log_file: str = ""
    values: dict[str, Any] | None = None  #: the fold's evaluation (table values)
    evaluation_reused: bool | None = None
    host: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainingJob(Checkpointable):
    """One (trainer, fold, seed): train or continue with nnU-Net, follow up, evaluate.

    Parameters
    ----------
    key : str
        Unique name of the job in its experiment, e.g. ``nnUNetTrainer/fold_0/seed_0``.
    dataset, configuration, trainer, plans : str
        As for ``nnUNetv2_train`` (``-tr``, ``-p``).
    fold : int or str
    device : str
        ``cuda``, ``cpu`` or ``mps``.
    fold_dir : str
        nnU-Net's ``fold_X`` folder of this training (its state decides the command).
    log_file : str
        The training log (appended to, so a resumed fold keeps its history).
    env : dict
        Variables set on top of the environment the job runs in: nnU-Net's folders,
        ``nnUNet_extTrainer``, ``nnUNet_n_proc_DA``, ``CUDA_VISIBLE_DEVICES``, a seed, ...
    executable : list of str
        The ``nnUNetv2_train`` command (resolved when the job is made).
    seed : int, optional
        For the record only (the trainer reads its seed from ``env``).
    num_gpus : int, optional
        ``nnUNetv2_train -num_gpus`` (nnU-Net spawns its own DDP processes).
    follow_ups : tuple of FollowUp, optional
    evaluation : FoldEvaluation, optional
    echo : bool, optional
        Print nnU-Net's output as it comes (it always goes to ``log_file``).
    """

    key: str
    dataset: str
    configuration: str
    fold: int | str
    trainer: str
    plans: str
    device: str
    fold_dir: str
    log_file: str
    env: dict[str, str]
    executable: list[str]
    seed: int | None = None
    num_gpus: int = 1
    follow_ups: tuple[FollowUp, ...] = ()
    evaluation: FoldEvaluation | None = None
    echo: bool = False
    extra_args: tuple[str, ...] = field(default=())

    def state(self) -> str:
        """The fold's state now (from nnU-Net's files)."""
        return fold_state(self.fold_dir)

    def is_complete(self) -> bool:
        """Trained, validated and every follow-up done (what a re-run may skip without submitting)."""
        return self.state() == FINISHED and all(Path(f.done_file).is_file() for f in self.follow_ups)

    def train_command(self, state: str) -> list[str]:
        """The ``nnUNetv2_train`` call that moves the fold from ``state`` to finished.

        Examples
        --------
        >>> job = TrainingJob("k", "510", "3d_fullres", 0, "nnUNetTrainer", "nnUNetPlans", "cpu", "/r/fold_0",
        ...                   "/l.log", {}, ["nnUNetv2_train"])
        >>> job.train_command("interrupted")
        ['nnUNetv2_train', '510', '3d_fullres', '0', '-tr', 'nnUNetTrainer', '-p', 'nnUNetPlans', '-device', 'cpu',
         '--c']
        """
        flags = {NEW: [], INTERRUPTED: ["--c"], NEEDS_VALIDATION: ["--val"]}
        if state not in flags:
            raise ValueError(f"no training needed or unknown fold state {state!r} (expected one of {sorted(flags)})")
        gpus = ["-num_gpus", str(self.num_gpus)] if self.num_gpus > 1 else []
        return [*self.executable, str(self.dataset), self.configuration, str(self.fold), "-tr", self.trainer,
                "-p", self.plans, "-device", self.device, *gpus, *self.extra_args, *flags[state]]

    def __call__(self) -> JobResult:
        result = JobResult(self.key, self.trainer, self.fold, self.seed, log_file=self.log_file,
                           host=socket.gethostname())
        start = time.perf_counter()
        env = {**os.environ, **self.env}
        say = _printer(self.echo)
        try:
            with fold_lock(self.fold_dir, lambda: say(f"{self.key}: another job holds {self.fold_dir}; waiting")):
                result.state_before = self.state()
                if result.state_before != FINISHED and not self._train(result, env, say):
                    return result
                for follow_up in self.follow_ups:
                    if not _run_follow_up(follow_up, env, say, result):
                        return result
                if self.evaluation is not None:
                    self._evaluate(result)
        finally:
            result.seconds = time.perf_counter() - start
            result.state_after = self.state()
        return result

    def _train(self, result: JobResult, env: dict[str, str], say: Callable[[str], None]) -> bool:
        result.command = self.train_command(result.state_before)
        say(f"{self.key} ({result.state_before}): {' '.join(result.command)}\n  log: {self.log_file}")
        result.returncode = run_logged(result.command, env, self.log_file, echo=say if self.echo else None)
        state_after = self.state()
        if result.returncode == 0 and state_after == FINISHED:
            return True
        result.ok, result.failed_step = False, "training"
        result.message = (f"nnUNetv2_train exited with code {result.returncode}, fold state {state_after!r}; "
                          f"last lines of {self.log_file}:\n{log_tail(self.log_file)}")
        return False

    def _evaluate(self, result: JobResult) -> None:
        from .fold_evaluation import evaluate_fold
        from .table import fold_values

        e = self.evaluation
        try:
            summary, result.evaluation_reused = evaluate_fold(
                self.fold_dir, e.gt_dir, e.cache_json, e.dataset_json, list(e.cases) if e.cases is not None else None,
                num_processes=e.num_processes)
            result.values = fold_values(summary, e.label)
        except (ValueError, OSError) as error:  # InputError is a ValueError
            result.ok, result.failed_step, result.message = False, "evaluation", str(error)


def _printer(echo: bool) -> Callable[[str], None]:
    return (lambda text: print(text, flush=True)) if echo else (lambda text: None)


def _run_follow_up(follow_up: FollowUp, env: dict[str, str], say: Callable[[str], None], result: JobResult) -> bool:
    if Path(follow_up.done_file).is_file():
        return True
    if follow_up.clean_dir is not None and Path(follow_up.clean_dir).is_dir():
        import shutil

        shutil.rmtree(follow_up.clean_dir)  # a killed run may have left a half-written file
    say(f"{result.key}: {follow_up.name}: {' '.join(follow_up.command)}")
    tail: collections.deque = collections.deque(maxlen=30)
    code = run_logged(follow_up.command, env, follow_up.log_file, tail=tail, append=False)
    if code != 0:
        result.ok, result.failed_step, result.returncode = False, follow_up.name, code
        result.message = (f"{Path(follow_up.command[0]).name} ({follow_up.name}) exited with code {code}; last "
                          f"lines of {follow_up.log_file}:\n" + "\n".join(tail))
        return False
    Path(follow_up.done_file).parent.mkdir(parents=True, exist_ok=True)
    Path(follow_up.done_file).write_text("ok\n", encoding="utf-8")
    return True


@contextlib.contextmanager
def fold_lock(fold_dir: str | os.PathLike, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``fold_dir/.nnunet_aux.lock`` (created with the folder).

    Parameters
    ----------
    fold_dir : path-like
    on_wait : callable, optional
        Called once when the lock is held by another process, before waiting for it.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d, fold_lock(os.path.join(d, "fold_0")):
    ...     os.path.isfile(os.path.join(d, "fold_0", LOCK_NAME))
    True
    """
    path = Path(fold_dir) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fold_is_locked(fold_dir: str | os.PathLike) -> bool:
    """Whether a job holds the fold's lock now (a fold being trained)."""
    path = Path(fold_dir) / LOCK_NAME
    if not path.is_file():
        return False
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False
