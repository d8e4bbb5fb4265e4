"""The job layer and its executors (issue #22): SLURM arrays through fake sbatch/srun/sacct/scontrol/
scancel (tests/fake_slurm), the local executor's cap, GPUs, lock and requeue, resumption after a
killed controller, --no-wait / --collect / re-attachment, and --dry-run. nnUNetv2_train is a
stand-in script (no nnU-Net run); tests/test_experiment.py runs the real one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_experiment import make_nnunet_tree, touch

from nnunet_aux.errors import InputError
from nnunet_aux.experiment import run_experiment
from nnunet_aux.experiment.cluster import ClusterOptions, sbatch_header
from nnunet_aux.experiment.jobs import TrainingJob, fold_lock
from nnunet_aux.experiment.runner import dry_run_experiment

FAKE_SLURM = Path(__file__).parent / "fake_slurm"

# A stand-in for nnUNetv2_train: records its call (with start/end times and CUDA_VISIBLE_DEVICES), writes
# checkpoint_latest.pth, sleeps FAKE_SLEEP seconds unless continuing (--c), then writes what a finished
# fold holds: checkpoint_final.pth, the validation predictions and summary.json.
FAKE_TRAIN = r"""
import json, os, sys, time
import numpy as np, SimpleITK as sitk
dataset, configuration, fold, _, trainer, _, plans, _, device, *flags = sys.argv[1:]
start = time.time()
out = os.path.join(os.environ["nnUNet_results"], dataset, f"{trainer}__{plans}__{configuration}", f"fold_{fold}")
os.makedirs(os.path.join(out, "validation"), exist_ok=True)
if "--val" not in flags and "--c" not in flags:
    open(os.path.join(out, "checkpoint_latest.pth"), "w").close()
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
pre = os.path.join(os.environ["nnUNet_preprocessed"], dataset)
for case in json.load(open(os.path.join(pre, "splits_final.json")))[int(fold)]["val"]:
    image = sitk.ReadImage(os.path.join(pre, "gt_segmentations", case + ".nii.gz"))
    ref = sitk.GetArrayFromImage(image)
    pred = sitk.GetImageFromArray(np.select([np.isin(ref, (1, 2)), ref == 3], [1, 2], 0).astype(np.uint8))
    pred.CopyInformation(image)
    sitk.WriteImage(pred, os.path.join(out, "validation", case + ".nii.gz"))
open(os.path.join(out, "checkpoint_final.pth"), "w").close()
open(os.path.join(out, "validation", "summary.json"), "w").write("{}")
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps({"call": " ".join([trainer, fold, *flags]), "start": start, "end": time.time(),
                        "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
                        "results": os.environ["nnUNet_results"]}) + "\n")
"""


@pytest.fixture
def fake_tree(tmp_path, monkeypatch):
    """Dataset990 without trained folds, a stand-in nnUNetv2_train, and the calls it records."""
    import nnunet_aux.experiment.process as process
    import nnunet_aux.experiment.runner as runner

    script = tmp_path / "fake_nnUNetv2_train.py"
    script.write_text(FAKE_TRAIN)
    monkeypatch.setattr(process, "nnunet_command", lambda name: [sys.executable, str(script)])
    monkeypatch.setattr(runner, "missing_trainers", lambda trainers, env: [])
    pre, results, env = make_nnunet_tree(tmp_path / "n", [])
    env["FAKE_CALLS"] = str(tmp_path / "calls.jsonl")
    return {"pre": pre, "results": results, "env": env, "calls": tmp_path / "calls.jsonl",
            "out": tmp_path / "out", "script": script, "tmp": tmp_path}


def calls(tree) -> list[dict]:
    path = tree["calls"]
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    """Fake SLURM commands first on PATH; their records in the returned folder."""
    state = tmp_path / "slurm"
    monkeypatch.setenv("PATH", f"{FAKE_SLURM}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(state))
    return state


def submissions(state: Path) -> list[dict]:
    path = state / "submitted.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []


def experiment(tree, trainers=("TrainerA", "TrainerB"), folds=(0, 1), **kwargs):
    kwargs.setdefault("cluster", ClusterOptions(poll_seconds=0.2))
    return run_experiment(990, list(trainers), list(folds), device="cpu", env=tree["env"], num_processes=1,
                          figure=False, output_dir=tree["out"], **kwargs)


SLURM_OPTIONS = dict(cluster="slurm", slurm_partition="gpu", slurm_account="lab", slurm_qos="normal",
                     gpus_per_node=1, cpus_per_task=6, mem_gb=32, timeout_min=60, slurm_array_parallelism=2,
                     slurm_setup=("module load cuda/12",), poll_seconds=0.2)


def test_slurm_array_submits_once_resumes_and_tabulates(fake_tree, slurm):
    result = experiment(fake_tree, cluster=ClusterOptions(**SLURM_OPTIONS))
    assert result.ok, result.failures
    [submitted] = submissions(slurm)  # one array for the 4 (trainer, fold) jobs
    flags = submitted["flags"]
    assert flags["array"] == "0-3%2"
    assert (flags["partition"], flags["account"], flags["qos"]) == ("gpu", "lab", "normal")
    assert (flags["gpus-per-node"], flags["cpus-per-task"], flags["mem"], flags["time"]) == ("1", "6", "32GB", "60")
    assert flags["signal"] == "USR2@120" and flags["nodes"] == "1" and flags["ntasks-per-node"] == "1"
    script = submitted["script"]
    assert "module load cuda/12" in script
    assert f"export nnUNet_preprocessed={fake_tree['env']['nnUNet_preprocessed']}" in script
    assert "export nnUNet_n_proc_DA=5" in script  # 6 CPUs, one for the training process
    assert "-m submitit.core._submit" in script and "srun" in script
    assert sorted(c["call"] for c in calls(fake_tree)) == ["TrainerA 0", "TrainerA 1", "TrainerB 0", "TrainerB 1"]
    assert [row["folds"] for row in result.rows] == [2, 2]
    records = json.loads((fake_tree["out"] / "jobs.json").read_text(encoding="utf-8"))
    assert sorted(r["job_id"] for r in records.values()) == [f"{submitted['id']}_{i}" for i in range(4)]
    assert (fake_tree["out"] / "engine").is_dir() and (fake_tree["out"] / "logs" / "TrainerA__fold_0.log").is_file()

    again = experiment(fake_tree, cluster=ClusterOptions(**SLURM_OPTIONS))
    assert len(submissions(slurm)) == 1 and len(calls(fake_tree)) == 4  # nothing resubmitted or retrained
    assert again.markdown == result.markdown


def test_slurm_no_wait_collect_and_reattach(fake_tree, slurm):
    fake_tree["env"]["FAKE_SLEEP"] = "3"
    options = ClusterOptions(**SLURM_OPTIONS)
    submitted = experiment(fake_tree, cluster=options, wait=False)
    assert len(submitted.submitted) == 4 and len(submitted.missing) == 4 and not submitted.ok

    collected = experiment(fake_tree, cluster=options, collect=True)
    assert len(submissions(slurm)) == 1
    assert sorted(collected.missing) == sorted(submitted.missing)
    assert "| TrainerA | 0/2 |" in collected.markdown  # missing folds shown, not dropped

    finished = experiment(fake_tree, cluster=options)  # re-attaches to the queued/running array
    assert finished.ok and len(submissions(slurm)) == 1
    assert sorted(c["call"] for c in calls(fake_tree)) == ["TrainerA 0", "TrainerA 1", "TrainerB 0", "TrainerB 1"]


def test_slurm_resubmits_failed_jobs_only(fake_tree, slurm):
    options = ClusterOptions(**SLURM_OPTIONS)
    first = experiment(fake_tree, trainers=("TrainerA",), folds=(0,), cluster=options)
    assert first.ok
    # a job that died (cancelled on the cluster): its fold never finished
    touch(fake_tree["results"] / "TrainerB__nnUNetPlans__3d_fullres" / "fold_0" / "checkpoint_latest.pth")
    records = json.loads((fake_tree["out"] / "jobs.json").read_text(encoding="utf-8"))
    records["TrainerB/fold_0"] = {"cluster": "slurm", "job_id": "999_0", "submitted": 0}
    (slurm / "state").mkdir(exist_ok=True)
    (slurm / "state" / "999_0").write_text("CANCELLED")
    (fake_tree["out"] / "jobs.json").write_text(json.dumps(records))
    second = experiment(fake_tree, trainers=("TrainerA", "TrainerB"), folds=(0,), cluster=options)
    assert second.ok
    assert len(submissions(slurm)) == 2 and "array" not in submissions(slurm)[1]["flags"]  # a single job
    assert [c["call"] for c in calls(fake_tree)] == ["TrainerA 0", "TrainerB 0 --c"]


def test_slurm_timeout_requeues_and_continues(fake_tree, slurm):
    """A job that reaches its time limit is requeued by submitit and continues with --c."""
    fake_tree["env"]["FAKE_SLEEP"] = "60"
    options = ClusterOptions(cluster="slurm", timeout_min=1, signal_delay_s=54, poll_seconds=0.2)  # USR2 after 6 s
    result = experiment(fake_tree, trainers=("TrainerA",), folds=(0,), cluster=options)
    assert result.ok, result.failures
    assert [c["call"] for c in calls(fake_tree)] == ["TrainerA 0 --c"]  # the first attempt was stopped mid-way
    log = (slurm / "calls.log").read_text(encoding="utf-8")
    assert "scontrol requeue" in log
    train_log = (fake_tree["out"] / "logs" / "TrainerA__fold_0.log").read_text(encoding="utf-8")
    assert "[interrupted: stopping the command's process group]" in train_log
    assert train_log.count("$ ") == 2 and "-device cpu --c" in train_log


def test_first_job_alone_when_nnunet_unpacks(fake_tree, slurm):
    touch(fake_tree["pre"] / "nnUNetPlans_3d_fullres" / "case_000.npz")  # nnU-Net's numpy format
    result = experiment(fake_tree, cluster=ClusterOptions(**SLURM_OPTIONS))
    assert result.ok
    first, rest = submissions(slurm)
    assert "array" not in first["flags"] and rest["flags"]["array"] == "0-2%2"
    assert rest["flags"]["dependency"] == f"afterany:{first['id']}"


def test_local_cap_and_gpus(fake_tree):
    fake_tree["env"]["FAKE_SLEEP"] = "1.5"
    options = ClusterOptions(max_parallel=2, gpus=(3, 5), poll_seconds=0.2)
    result = experiment(fake_tree, folds=(0, 1), trainers=("TrainerA", "TrainerB", "TrainerC"), cluster=options)
    assert result.ok
    runs = calls(fake_tree)
    assert len(runs) == 6
    for run in runs:  # at most two at once, never two on one GPU
        overlapping = [r for r in runs if r["start"] < run["end"] and run["start"] < r["end"]]
        assert len(overlapping) <= 2
        assert len({r["gpu"] for r in overlapping}) == len(overlapping)
    assert {r["gpu"] for r in runs} == {"3", "5"}


def test_local_timeout_requeues_and_continues(fake_tree):
    fake_tree["env"]["FAKE_SLEEP"] = "60"
    options = ClusterOptions(timeout_min=0.15, poll_seconds=0.2)  # USR2 after 4.5 s
    result = experiment(fake_tree, trainers=("TrainerA",), folds=(0,), cluster=options)
    assert result.ok, result.failures
    assert [c["call"] for c in calls(fake_tree)] == ["TrainerA 0 --c"]


def test_a_locked_fold_is_waited_for_not_trained_twice(fake_tree):
    fold = fake_tree["results"] / "TrainerA__nnUNetPlans__3d_fullres" / "fold_0"
    holding = threading.Event()

    def other_job():
        with fold_lock(fold):
            holding.set()
            time.sleep(1.5)
            # the other job finishes the fold while holding the lock
            subprocess.run([sys.executable, str(fake_tree["script"]), "Dataset990_Tiny", "3d_fullres", "0", "-tr",
                            "TrainerA", "-p", "nnUNetPlans", "-device", "cpu"], env=fake_tree["env"], check=True)

    thread = threading.Thread(target=other_job)
    thread.start()
    holding.wait()
    result = experiment(fake_tree, trainers=("TrainerA",), folds=(0,), cluster=ClusterOptions("debug"))
    thread.join()
    assert result.ok and [c["call"] for c in calls(fake_tree)] == ["TrainerA 0"]  # the other job's only
    assert result.steps[0].command is None  # this job found the fold finished after the wait


DRIVER = r"""
import sys
import nnunet_aux.experiment.process as process
import nnunet_aux.experiment.runner as runner
process.nnunet_command = lambda name: [sys.executable, {script!r}]
runner.missing_trainers = lambda trainers, env: []
from nnunet_aux.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_killed_controller_then_rerun_trains_every_fold_once(fake_tree):
    """kill -9 of `nnunet_aux experiment --cluster local --max-parallel 2` mid-way; a re-run waits for the
    orphaned jobs (fold locks), trains the rest, and tabulates every fold."""
    driver = fake_tree["tmp"] / "driver.py"
    driver.write_text(DRIVER.format(script=str(fake_tree["script"])))
    env = {**fake_tree["env"], "FAKE_SLEEP": "3"}
    command = [sys.executable, str(driver), "experiment", "-d", "990", "--trainers", "TrainerA", "TrainerB",
               "--folds", "0", "1", "-device", "cpu", "-np", "1", "--no-figure", "-o", str(fake_tree["out"]),
               "--max-parallel", "2"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (fake_tree["out"] / "jobs.json").is_file() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # the first two jobs are training
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert len(calls(fake_tree)) == 0
    second = subprocess.run(command, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace",
                            timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert sorted(c["call"] for c in calls(fake_tree)) == ["TrainerA 0", "TrainerA 1", "TrainerB 0", "TrainerB 1"]
    assert "| TrainerA | 2/2 |" in second.stdout and "| TrainerB | 2/2 |" in second.stdout


def test_seeds_train_into_their_own_results_folders(fake_tree):
    result = experiment(fake_tree, trainers=("TrainerA",), folds=(0,), seeds=[0, 1],
                        cluster=ClusterOptions("debug"))
    assert result.ok and result.rows[0]["folds"] == 2 and result.rows[0]["folds_total"] == 2
    assert sorted(c["results"] for c in calls(fake_tree)) == [
        str(fake_tree["out"] / f"seed_{s}" / "nnUNet_results") for s in (0, 1)]


def test_dry_run_plan_estimate_and_commands(fake_tree, tmp_path):
    results = fake_tree["results"]
    touch(results / "TrainerA_50epochs__nnUNetPlans__3d_fullres" / "fold_0" / "checkpoint_final.pth")
    touch(results / "TrainerA_50epochs__nnUNetPlans__3d_fullres" / "fold_0" / "validation" / "summary.json")
    interrupted = results / "TrainerA_50epochs__nnUNetPlans__3d_fullres" / "fold_1"
    touch(interrupted / "checkpoint_latest.pth")
    log = "".join(f"2026-12-04 10:00:{e:02d}.000000: Epoch {e}\n2026-12-04 10:00:{e:02d}.5: Epoch time: "
                  f"{100 + e} s\n" for e in range(20))  # 20 finished epochs, median 109.5 s
    (interrupted / "training_log_2026_12_4_10_00_00.txt").write_text(log)
    options = ClusterOptions(**{**SLURM_OPTIONS, "slurm_array_parallelism": 8})
    commands = tmp_path / "commands.sh"
    text = dry_run_experiment(990, ["TrainerA_50epochs", "TrainerB_100epochs"], [0, 1], device="cuda",
                              env=fake_tree["env"], output_dir=fake_tree["out"], cluster=options,
                              write_commands=commands)
    assert "| TrainerA_50epochs | 0 | - | finished | `-` |" in text
    assert "| TrainerA_50epochs | 1 | - | interrupted |" in text and "-device cuda --c`" in text
    assert "3 of 4 job(s) to run" in text
    assert "#SBATCH --array=0-2%3" in text and "#SBATCH --partition=gpu" in text and "module load cuda/12" in text
    # (50 - 0) epochs resumed from checkpoint_latest (saved every 50: none yet) + 2 x 100 epochs, 109.5 s each
    hours = (50 + 100 + 100) * 109.5 / 3600
    assert f"Estimate: {hours:.1f} GPU-hours for 3 job(s)" in text
    assert f"at most {109.5 * 49 / 3600:.2f} GPU-hours lost per requeue" in text
    script = commands.read_text(encoding="utf-8").splitlines()
    jobs = [line for line in script if line.startswith("env ")]
    assert len(jobs) == 3 and all(f"nnUNet_results={results.parent}" in line for line in jobs)
    assert jobs[1].endswith("-device cuda --c >> " + str(fake_tree["out"] / "logs" / "TrainerA_50epochs__fold_1.log")
                            + " 2>&1")
    assert not (fake_tree["out"] / "jobs.json").exists() and not calls(fake_tree)  # nothing submitted
    with pytest.raises(InputError, match="does not overwrite"):
        dry_run_experiment(990, ["TrainerA"], [0], env=fake_tree["env"], write_commands=commands)


def test_dry_run_without_timing_asks_for_epoch_seconds(fake_tree):
    text = dry_run_experiment(990, ["TrainerA"], [0], env=fake_tree["env"], output_dir=fake_tree["out"])
    assert "give --epoch-seconds" in text
    text = dry_run_experiment(990, ["TrainerA"], [0], env=fake_tree["env"], output_dir=fake_tree["out"],
                              epoch_seconds=36, device="cpu")
    assert "Estimate: 10.0 CPU-hours for 1 job(s)" in text  # 1000 epochs x 36 s


@pytest.mark.parametrize("options, message", [
    (dict(cpus_per_task=1), "at least 2.*#2863"),
    (dict(cluster="pbs"), "--cluster must be one of"),
    (dict(max_parallel=0), "--max-parallel must be at least 1"),
    (dict(timeout_min=0), "--timeout-min must be positive"),
    (dict(gpus=(0, 0)), "distinct"),
    (dict(max_parallel=3, gpus=(0, 1)), "needs as many --gpus"),
    (dict(cluster="slurm", gpus=(0,)), "--gpus-per-node"),
])
def test_cluster_options_refused(options, message):
    with pytest.raises(InputError, match=message):
        ClusterOptions(**options).check()


def test_cli_refuses_bad_cluster_options(fake_tree, capsys, monkeypatch):
    from nnunet_aux.cli import main

    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, fake_tree["env"][key])
    code = main(["experiment", "-d", "990", "--trainers", "TrainerA", "--cpus-per-task", "1", "-device", "cpu"])
    assert code == 2 and "#2863" in capsys.readouterr().err
    code = main(["experiment", "-d", "990", "--trainers", "TrainerA", "--no-wait", "-device", "cpu"])
    assert code == 2 and "--no-wait needs --cluster slurm" in capsys.readouterr().err


def test_sbatch_header_is_what_submitit_writes(tmp_path):
    text = sbatch_header(ClusterOptions(**SLURM_OPTIONS), tmp_path, 5, ["export nnUNet_raw=/r"])
    assert "#SBATCH --array=0-4%2" in text and "#SBATCH --gpus-per-node=1" in text
    assert text.index("module load cuda/12") < text.index("export nnUNet_raw=/r") < text.index("srun")


def test_job_is_picklable_and_checkpointable(tmp_path):
    import pickle

    from submitit.helpers import Checkpointable

    job = TrainingJob("T/fold_0", "990", "3d_fullres", 0, "T", "P", "cpu", str(tmp_path / "fold_0"),
                      str(tmp_path / "l.log"), {"nnUNet_raw": "/r"}, ["nnUNetv2_train"])
    again = pickle.loads(pickle.dumps(job))
    assert again == job and isinstance(again, Checkpointable)
    assert job.checkpoint().function is job  # requeued as itself: the fold's files decide --c


def test_local_jobs_output_is_followed_live(fake_tree):
    lines = []
    result = experiment(fake_tree, trainers=("TrainerA",), folds=(0, 1), echo=lines.append)
    assert result.ok
    commands = [line for line in lines if line.startswith("$ ")]
    assert len(commands) == 2 and commands[0].endswith("-tr TrainerA -p nnUNetPlans -device cpu")
    assert lines.count("[exit code 0]") == 2


def test_on_finished_reports_each_job_as_it_ends(fake_tree):
    """A job's result reaches ``on_finished`` before the next local job starts (one at a time), so a study
    stopped mid-way keeps every finished job's outcome."""
    from nnunet_aux.experiment.cluster import run_jobs
    from nnunet_aux.experiment.runner import _checked_experiment, ensure_splits, experiment_jobs

    fake_tree["env"]["FAKE_SLEEP"] = "0.5"
    exp = _checked_experiment(990, ["TrainerA"], [0, 1], "3d_fullres", "nnUNetPlans", "cpu", fake_tree["out"],
                              None, fake_tree["env"], check_trainers=False)
    exp.num_processes = 1
    options = ClusterOptions(poll_seconds=0.1)
    jobs = experiment_jobs(exp, options)
    ensure_splits(exp.preprocessed, exp.plans, exp.configuration)
    reported = []
    submission = run_jobs(jobs, options, fake_tree["out"],
                          on_finished=lambda result: reported.append((result.key, result.ok, time.time())))
    assert [key for key, _, _ in reported] == [job.key for job in jobs] == list(submission.results)
    assert all(ok for _, ok, _ in reported)
    first_reported, second = reported[0][2], calls(fake_tree)[1]
    assert first_reported < second["start"]  # reported while the second job had not started yet
    assert run_jobs(jobs, options, fake_tree["out"], on_finished=reported.append).results == {}  # all complete
    assert len(reported) == 2
