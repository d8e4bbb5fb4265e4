"""Where jobs run: submitit's local, SLURM or debug executor, resumable and re-attachable.

:func:`run_jobs` takes :class:`~nnunet_aux.experiment.jobs.TrainingJob` objects and returns
their :class:`~nnunet_aux.experiment.jobs.JobResult` s. The engine is submitit
(facebookincubator/submitit); this module only adds what nnU-Net studies need on top of it:

- ``local``: at most ``max_parallel`` jobs at once (submitit's local executor starts every
  job at once, submitit #1685), each with its own ``CUDA_VISIBLE_DEVICES`` from ``gpus``;
- ``slurm``: one array for all jobs (``%array_parallelism``), requeued on timeout or
  pre-emption because the job is a ``Checkpointable`` (plain command jobs are not, #1732);
  a failed or timed-out array task gives a failed result, not an exception (#1775);
- ``debug``: in this process, one job after the other (tests);
- every job id goes into ``OUTDIR/jobs.json``; a re-run re-attaches to SLURM jobs still
  queued or running, resubmits failed ones and skips finished ones (decided from the fold
  folders, never from submitit's records);
- when nnU-Net must unpack the preprocessed data on first use (its numpy format), the first
  job starts alone and the others wait for it (``afterany`` on SLURM).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import InputError
from .jobs import JobResult, TrainingJob

CLUSTERS = ("local", "slurm", "debug")
JOBS_FILE = "jobs.json"
ENGINE_FOLDER = "engine"
#: SLURM states of a job that may still produce a result (re-attach instead of resubmitting).
ACTIVE_SLURM_STATES = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
                       "READY", "PREEMPTED", "REQUEUE_HOLD", "REQUEUE_FED")


@dataclass(frozen=True)
class ClusterOptions:
    """Where and how the jobs run (flag names follow submitit's parameters).

    Attributes
    ----------
    cluster : {'local', 'slurm', 'debug'}
    max_parallel : int
        ``local``: jobs at once (default 1: today's one-after-the-other).
    gpus : tuple of int
        ``local``: GPU ids; each running job gets one as ``CUDA_VISIBLE_DEVICES``.
    timeout_min : int
        Wall-time limit of one job; a job that reaches it is requeued and continues with ``--c``.
    gpus_per_node, cpus_per_task, mem_gb : optional
        Resources of one job (SLURM; ``cpus_per_task`` also sets ``nnUNet_n_proc_DA``).
    slurm_partition, slurm_account, slurm_qos : str, optional
    slurm_array_parallelism : int, optional
        Array tasks running at once (default: all).
    slurm_max_num_timeout : int
        Requeues after a timeout before the job counts as failed.
    slurm_setup : tuple of str
        Shell lines run before the job (module loads, conda activate).
    num_gpus : int
        ``nnUNetv2_train -num_gpus``: one task per node with that many GPUs; nnU-Net spawns DDP itself.
    poll_seconds : float
        How often running jobs are checked.
    """

    cluster: str = "local"
    max_parallel: int = 1
    gpus: tuple[int, ...] = ()
    timeout_min: float = 4320
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    slurm_partition: str | None = None
    slurm_account: str | None = None
    slurm_qos: str | None = None
    slurm_array_parallelism: int | None = None
    slurm_max_num_timeout: int = 3
    slurm_setup: tuple[str, ...] = ()
    num_gpus: int = 1
    poll_seconds: float = 2.0
    signal_delay_s: int = 120

    def check(self) -> None:
        """Raise :class:`InputError` on a setting that cannot work."""
        if self.cluster not in CLUSTERS:
            raise InputError(f"--cluster must be one of {CLUSTERS}, got {self.cluster!r}")
        if self.cpus_per_task is not None and self.cpus_per_task < 2:
            raise InputError(f"--cpus-per-task must be at least 2, got {self.cpus_per_task}: nnU-Net's data "
                             "loaders need a CPU beside the training process (MIC-DKFZ/nnUNet #2863)")
        if not self.timeout_min > 0:
            raise InputError(f"--timeout-min must be positive, got {self.timeout_min}")
        for name in ("max_parallel", "num_gpus", "slurm_array_parallelism", "gpus_per_node"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.slurm_max_num_timeout < 0:
            raise InputError(f"--slurm-max-num-timeout must be >= 0, got {self.slurm_max_num_timeout}")
        if self.mem_gb is not None and not self.mem_gb > 0:
            raise InputError(f"--mem-gb must be positive, got {self.mem_gb}")
        if len(set(self.gpus)) != len(self.gpus) or any(g < 0 for g in self.gpus):
            raise InputError(f"--gpus must be distinct GPU ids >= 0, got {list(self.gpus)}")
        if self.gpus and self.max_parallel > len(self.gpus):
            raise InputError(f"--max-parallel {self.max_parallel} needs as many --gpus, got {list(self.gpus)}")
        if self.gpus and self.cluster != "local":
            raise InputError("--gpus assigns local GPUs; on SLURM use --gpus-per-node")

    def job_environment(self) -> dict[str, str]:
        """nnU-Net variables that follow from the resources (``nnUNet_n_proc_DA`` from the CPUs)."""
        if self.cpus_per_task is None:
            return {}
        # one CPU for each training process, the rest for nnU-Net's augmentation workers
        return {"nnUNet_n_proc_DA": str(max(1, self.cpus_per_task - self.num_gpus))}

    def slurm_parameters(self, setup: Sequence[str] = ()) -> dict[str, Any]:
        """submitit ``SlurmExecutor.update_parameters`` keywords."""
        params: dict[str, Any] = {"time": max(1, round(self.timeout_min)), "nodes": 1, "ntasks_per_node": 1,
                                  "signal_delay_s": self.signal_delay_s, "setup": [*self.slurm_setup, *setup],
                                  "job_name": "nnunet_aux"}
        gpus = self.gpus_per_node if self.gpus_per_node is not None else (self.num_gpus if self.num_gpus > 1 else None)
        for key, value in (("gpus_per_node", gpus), ("cpus_per_task", self.cpus_per_task),
                           ("partition", self.slurm_partition), ("account", self.slurm_account),
                           ("qos", self.slurm_qos), ("array_parallelism", self.slurm_array_parallelism)):
            if value is not None:
                params[key] = value
        if self.mem_gb is not None:
            whole = self.mem_gb == int(self.mem_gb)
            params["mem"] = f"{int(self.mem_gb)}GB" if whole else f"{int(self.mem_gb * 1024)}MB"
        return params


def sbatch_header(options: ClusterOptions, engine: Path, n_jobs: int, setup: Sequence[str] = ()) -> str:
    """The ``#SBATCH`` script submitit would submit for ``n_jobs`` array tasks (for ``--dry-run``)."""
    import shlex
    import sys

    from submitit.slurm.slurm import _make_sbatch_string  # the text submitit itself submits

    command = f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(str(engine / '%j'))}"
    return _make_sbatch_string(command=command, folder=engine / "%j", map_count=n_jobs if n_jobs > 1 else None,
                               **options.slurm_parameters(setup))


def common_exports(jobs: Sequence[TrainingJob]) -> list[str]:
    """``export`` lines of the nnU-Net variables all jobs share (written into the SLURM script's setup;
    each job also sets its own, e.g. a seed's results folder, when it starts)."""
    import shlex

    if not jobs:
        return []
    shared = {k: v for k, v in jobs[0].env.items()
              if (k.startswith("nnUNet_") or k in ("PYTHONUNBUFFERED", "PYTHONIOENCODING"))
              and all(job.env.get(k) == v for job in jobs)}
    return [f"export {k}={shlex.quote(v)}" for k, v in sorted(shared.items())]


# ---------------------------------------------------------------------------------------------- records
def read_records(outdir: Path) -> dict[str, dict[str, Any]]:
    """``OUTDIR/jobs.json``: job key -> {cluster, job_id, submitted}."""
    path = outdir / JOBS_FILE
    if not path.is_file():
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            return dict(json.load(f))
    except (OSError, ValueError) as e:
        raise InputError(f"{path} is not readable JSON ({e}); remove it to resubmit everything") from None


def write_records(outdir: Path, records: dict[str, dict[str, Any]]) -> None:
    from ..dataset_format import write_json_atomic

    outdir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(records, outdir / JOBS_FILE)


# ---------------------------------------------------------------------------------------------- running
@dataclass
class _Running:
    job: TrainingJob
    handle: Any  # a submitit Job
    gpu: int | None = None


@dataclass
class Submission:
    """What :func:`run_jobs` did: results of finished jobs and the ids of submitted ones."""

    results: dict[str, JobResult] = field(default_factory=dict)
    submitted: dict[str, str] = field(default_factory=dict)
    attached: dict[str, str] = field(default_factory=dict)


def needs_first_alone(preprocessed_configuration_folder: str | os.PathLike) -> bool:
    """Whether nnU-Net unpacks this folder on first use (its numpy ``.npz`` format, not blosc2)."""
    folder = Path(preprocessed_configuration_folder)
    return folder.is_dir() and any(folder.glob("*.npz"))


def run_jobs(jobs: Sequence[TrainingJob], options: ClusterOptions, outdir: str | os.PathLike, *,
             wait: bool = True, first_alone: bool = False, stop_on_error: bool = False,
             say: Callable[[str], None] = lambda text: None,
             follow: Callable[[str], None] | None = None,
             on_finished: Callable[[JobResult], None] | None = None) -> Submission:
    """Run (or re-attach to) every job that is not complete; return the results of those that ran.

    Parameters
    ----------
    jobs : sequence of TrainingJob
        Unique keys. Complete jobs (:meth:`TrainingJob.is_complete`) are skipped.
    options : ClusterOptions
    outdir : path-like
        Receives ``jobs.json`` and submitit's files under ``engine/``.
    wait : bool, optional
        Wait for every job (False: return after submitting; ``slurm`` only, as local jobs
        are started one batch at a time by this process).
    first_alone : bool, optional
        Start the first job alone and the others after it (:func:`needs_first_alone`).
    stop_on_error : bool, optional
        Local runs: start no further job after a failed one.
    say : callable, optional
        Progress lines.
    follow : callable, optional
        ``local``: called with every new line of the running jobs' training logs (live output).
    on_finished : callable, optional
        Called with each job's :class:`JobResult` as soon as that job ends (ok or not), while the
        others still run: a study can keep each finished job's outcome even if a later job is
        stopped. Not called for jobs only submitted (``wait=False``).

    Returns
    -------
    submission : Submission
    """
    options.check()
    outdir = Path(outdir)
    engine = outdir / ENGINE_FOLDER
    records = read_records(outdir)
    todo = [job for job in jobs if not job.is_complete()]
    out = Submission()
    if not todo:
        return out
    if options.cluster == "slurm":
        running = _start_slurm(todo, options, engine, records, out, first_alone, say)
        write_records(outdir, records)
        if wait:
            _wait(running, out, say, options.poll_seconds, on_finished)
        return out
    if not wait:
        raise InputError("--no-wait needs --cluster slurm: local jobs run as children of this process")
    executor = _local_executor(options, engine)
    groups = [todo[:1], todo[1:]] if first_alone and len(todo) > 1 else [todo]
    for group in groups:
        _run_local(group, options, executor, outdir, records, out, say, stop_on_error, follow, on_finished)
        if stop_on_error and not all(r.ok for r in out.results.values()):
            break
    return out


def _run_local(todo, options, executor, outdir, records, out, say, stop_on_error=False, follow=None,
               on_finished=None) -> None:
    """At most ``max_parallel`` jobs at once (one in ``debug``), each with a GPU of its own when given."""
    cap = 1 if options.cluster == "debug" else options.max_parallel
    pending, running, free_gpus = list(todo), [], list(options.gpus)
    offsets: dict[str, int] = {}
    while pending or running:
        while pending and len(running) < cap:
            gpu = free_gpus.pop(0) if free_gpus else None
            job = _with_gpu(pending.pop(0), gpu)
            handle = executor.submit(job)
            records[job.key] = {"cluster": options.cluster, "job_id": str(handle.job_id), "submitted": time.time()}
            write_records(outdir, records)
            out.submitted[job.key] = str(handle.job_id)
            say(f"started {job.key} ({options.cluster} job {handle.job_id})")
            running.append(_Running(job, handle, gpu))
        if follow is not None:
            _follow_logs(running, offsets, follow)
        finished = _collect_finished(running, out, say, force=options.cluster == "debug", on_finished=on_finished)
        if follow is not None:
            _follow_logs(finished, offsets, follow)
        free_gpus += [item.gpu for item in finished if item.gpu is not None]
        if stop_on_error and any(not out.results[item.job.key].ok for item in finished):
            pending.clear()
        if not finished:
            time.sleep(options.poll_seconds)


def _follow_logs(items: Sequence[_Running], offsets: dict[str, int], follow: Callable[[str], None]) -> None:
    """Pass on the lines the jobs' training logs gained since the last call (whole lines only)."""
    for item in items:
        path = Path(item.job.log_file)
        if not path.is_file():
            continue
        with open(path, "rb") as f:
            f.seek(offsets.get(item.job.key, 0))
            data = f.read()
        end = data.rfind(b"\n") + 1
        offsets[item.job.key] = offsets.get(item.job.key, 0) + end
        for line in data[:end].decode("utf-8", errors="replace").splitlines():
            follow(line)


def _with_gpu(job: TrainingJob, gpu: int | None) -> TrainingJob:
    env = dict(job.env)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    elif "CUDA_VISIBLE_DEVICES" not in env:
        # submitit's local executor sets CUDA_VISIBLE_DEVICES="" without gpus_per_node: give the job
        # the GPUs this process sees
        env["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES", _all_gpus())
    return replace(job, env=env)


def _all_gpus() -> str:
    try:
        import torch

        return ",".join(str(i) for i in range(torch.cuda.device_count()))
    except Exception:  # noqa: BLE001 (no torch CUDA: no GPUs)
        return ""


def _local_executor(options: ClusterOptions, engine: Path):
    import submitit

    if options.cluster == "debug":
        return submitit.DebugExecutor(folder=engine / "%j")
    executor = submitit.LocalExecutor(folder=engine / "%j", max_num_timeout=options.slurm_max_num_timeout)
    executor.update_parameters(timeout_min=options.timeout_min, signal_delay_s=min(options.signal_delay_s,
                                                                                    max(1, options.timeout_min * 30)))
    return executor


def _start_slurm(todo, options, engine, records, out, first_alone, say) -> list[_Running]:
    import submitit

    running, to_submit = [], []
    for job in todo:
        record = records.get(job.key)
        if record and record.get("cluster") == "slurm" and record.get("job_id"):
            handle = submitit.SlurmJob(folder=engine / "%j", job_id=record["job_id"])
            handle.watcher.update()
            state = handle.watcher.get_state(record["job_id"], mode="cache").upper()
            if state.split()[0] in ACTIVE_SLURM_STATES:
                say(f"re-attached to {job.key} (SLURM job {record['job_id']}, {state})")
                out.attached[job.key] = record["job_id"]
                running.append(_Running(job, handle))
                continue
        to_submit.append(job)
    if not to_submit:
        return running
    executor = submitit.SlurmExecutor(folder=engine / "%j", max_num_timeout=options.slurm_max_num_timeout)
    executor.update_parameters(**options.slurm_parameters(common_exports(to_submit)))
    groups = [to_submit[:1], to_submit[1:]] if first_alone and len(to_submit) > 1 else [to_submit]
    for group in groups:
        with executor.batch():
            handles = [executor.submit(job) for job in group]
        for job, handle in zip(group, handles):
            records[job.key] = {"cluster": "slurm", "job_id": str(handle.job_id), "submitted": time.time()}
            out.submitted[job.key] = str(handle.job_id)
            running.append(_Running(job, handle))
        say(f"submitted {len(group)} job(s) to SLURM: {handles[0].job_id.split('_')[0]}")
        if len(groups) > 1 and group is groups[0]:
            executor.update_parameters(dependency=f"afterany:{handles[0].job_id}")
    return running


def _collect_finished(running: list[_Running], out: Submission, say, force: bool = False,
                      on_finished: Callable[[JobResult], None] | None = None) -> list[_Running]:
    finished = []
    for item in list(running):
        if not force and not item.handle.done():
            continue
        out.results[item.job.key] = _result_of(item)
        result = out.results[item.job.key]
        say(f"{'finished' if result.ok else 'FAILED'} {item.job.key} ({result.seconds:.0f} s)"
            + ("" if result.ok else f": {result.failed_step}"))
        running.remove(item)
        finished.append(item)
        if on_finished is not None:
            on_finished(result)
    return finished


def _wait(running: list[_Running], out: Submission, say, poll_seconds: float, on_finished=None) -> None:
    while running:
        if not _collect_finished(running, out, say, on_finished=on_finished):
            time.sleep(poll_seconds)


def _result_of(item: _Running) -> JobResult:
    """The job's result; a job that died (timeout too often, killed, cancelled) becomes a failed result."""
    try:
        result = item.handle.result()
        if isinstance(result, JobResult):
            return result
        message = f"unexpected result {result!r}"
    except Exception as e:  # noqa: BLE001 (submitit raises UncompletedJobError, FailedJobError, ...)
        message = f"{type(e).__name__}: {e}"
    job = item.job
    return JobResult(job.key, job.trainer, job.fold, job.seed, ok=False, state_after=job.state(),
                     failed_step="job", message=message[-4000:], log_file=job.log_file)
