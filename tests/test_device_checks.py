"""benchmarks/device_checks.sh: usage, bad settings, and a CPU dry run of its benchmark commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "device_checks.sh"


def run_script(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), **env}
    return subprocess.run(["bash", str(SCRIPT), *args], env=environment, capture_output=True, text=True,
                          timeout=600)


def test_help_prints_the_usage_and_runs_nothing(tmp_path):
    proc = run_script(tmp_path, "-h")
    assert proc.returncode == 0
    assert "DEVICE=cpu SIZE=tiny" in proc.stdout and "set -euo" not in proc.stdout
    assert not (tmp_path / "out").exists()


def test_unknown_size_is_refused_before_anything_is_written(tmp_path):
    proc = run_script(tmp_path, SIZE="huge", DEVICE="cpu")
    assert proc.returncode == 2
    assert "SIZE must be default, small or tiny (got 'huge')" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without GPU")
def test_cuda_without_a_gpu_says_how_to_dry_run(tmp_path):
    proc = run_script(tmp_path, SIZE="tiny")
    assert proc.returncode == 3
    assert "torch sees no GPU" in proc.stderr and "DEVICE=cpu SIZE=tiny" in proc.stderr


@pytest.mark.slow
def test_cpu_dry_run_writes_every_trainer_and_clef_figures(tmp_path):
    proc = run_script(tmp_path, DEVICE="cpu", SIZE="tiny", THREADS="1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "FAILED" not in proc.stdout
    trainers = json.loads((tmp_path / "out" / "trainers_eager.json").read_text(encoding="utf-8"))
    assert {"stock", "lite", "contrastive", "aux", "skeleton", "cldice", "clef"} <= set(trainers["step"])
    assert all(v > 0 for v in trainers["step"].values())
    assert trainers["args"]["device"] == "cpu" and trainers["args"]["patch"] == [32, 32, 32]
    assert set(trainers["loss_seconds"]["clef"]) == {"clef_warp", "clef_losses"}  # CLEF's affine T and losses
    assert not (tmp_path / "out" / "clef_compiled.json").exists()  # compiled CLEF runs on CUDA only
