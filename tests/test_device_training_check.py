"""benchmarks/device_training_check.sh: usage, bad settings, and a CPU dry run of nnU-Net's commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "device_training_check.sh"


def run_script(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
                   "WORK": str(tmp_path / "work"), **env}
    return subprocess.run(["bash", str(SCRIPT), *args], env=environment, capture_output=True, text=True,
                          encoding="utf-8", timeout=900)


def test_help_prints_the_usage_and_runs_nothing(tmp_path):
    proc = run_script(tmp_path, "-h")
    assert proc.returncode == 0
    assert "DEVICE=cpu SIZE=tiny" in proc.stdout and "set -euo" not in proc.stdout
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


def test_unknown_size_is_refused_before_anything_is_written(tmp_path):
    proc = run_script(tmp_path, SIZE="huge", DEVICE="cpu")
    assert proc.returncode == 2
    assert "SIZE must be default or tiny (got 'huge')" in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


@pytest.mark.parametrize("setting, value", [("ITERATIONS", "0"), ("ITERATIONS", "ten"), ("NP", "-2")])
def test_bad_counts_are_refused_before_anything_is_written(tmp_path, setting, value):
    proc = run_script(tmp_path, DEVICE="cpu", SIZE="tiny", **{setting: value})
    assert proc.returncode == 2
    assert f"{setting} must be a positive integer (got '{value}')" in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without GPU")
def test_cuda_without_a_gpu_says_how_to_dry_run(tmp_path):
    proc = run_script(tmp_path, SIZE="tiny")
    assert proc.returncode == 3
    assert "DEVICE=cpu SIZE=tiny" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_dry_run_trains_predicts_and_reports_the_step_time(tmp_path):
    proc = run_script(tmp_path, DEVICE="cpu", SIZE="tiny", ITERATIONS="2", NP="2", TRAINERS="nnUNetTrainer")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "plan: patch [32, 48, 48]" in proc.stdout
    report = json.loads((tmp_path / "out" / "training_check.json").read_text(encoding="utf-8"))
    assert set(report) == {"nnUNetTrainer"}
    assert report["nnUNetTrainer"]["iterations"] == 2 and report["nnUNetTrainer"]["s_per_iteration"] > 0
    assert "ms/iteration (epoch 2, training phase) = 1.00 x stock" in proc.stdout
    scores = json.loads((tmp_path / "out" / "evaluate.json").read_text(encoding="utf-8"))
    assert len(scores["metric_per_case"]) == 2  # the two test cases were predicted and scored
