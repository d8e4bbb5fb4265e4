"""Helpers for tests that run real nnU-Net commands on tiny generated data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

BIN = Path(sys.executable).parent


def command(name: str) -> str:
    """A console script installed next to this Python (nnUNetv2_*, nnunet_aux)."""
    path = BIN / name
    return str(path) if path.exists() else shutil.which(name) or name


def run(args: Sequence[str], env: Dict[str, str], timeout: int = 900, cwd=None) -> subprocess.CompletedProcess:
    """Run a command; on failure, fail with the tail of its output."""
    proc = subprocess.run([command(args[0]), *map(str, args[1:])], env=env, cwd=cwd, capture_output=True,
                          text=True, encoding="utf-8", errors="replace", timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stdout[-4000:] + "\n---stderr---\n" + proc.stderr[-6000:])
        raise AssertionError(f"{' '.join(map(str, args))} failed with exit code {proc.returncode}:\n{tail}")
    return proc


def shrink_plans(preprocessed_dataset: Path, features=(8, 16, 32, 64, 64), plans: str = "nnUNetPlans",
                 batch_size: Optional[int] = None) -> dict:
    """Make the planned U-Net CPU-sized, keeping its stages, strides, blocks and data identifier.

    ``batch_size`` caps the planned batch sizes (the ResEnc presets plan 64 slices for a tiny 2d dataset).
    """
    path = preprocessed_dataset / f"{plans}.json"
    p = json.loads(path.read_text(encoding="utf-8"))
    for cfg in p["configurations"].values():
        if batch_size is not None and "batch_size" in cfg:
            cfg["batch_size"] = min(cfg["batch_size"], batch_size)
        arch = cfg.get("architecture")
        if arch is None:
            continue
        n = arch["arch_kwargs"]["n_stages"]
        arch["arch_kwargs"]["features_per_stage"] = [features[min(i, len(features) - 1)] for i in range(n)]
    path.write_text(json.dumps(p, indent=1), encoding="utf-8")
    return p


def write_splits(preprocessed_dataset: Path, train: Sequence[str], val: Sequence[str]) -> None:
    (preprocessed_dataset / "splits_final.json").write_text(json.dumps([{"train": list(train), "val": list(val)}]))


def nnunet_env(root: Path, **extra: str) -> Dict[str, str]:
    from nnunet_aux.training import trainer_path

    env = dict(os.environ)
    env.update(nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "preprocessed"),
               nnUNet_results=str(root / "results"), nnUNet_extTrainer=trainer_path(),
               nnUNet_n_proc_DA="1", nnUNet_compile="false", OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1",
               PYTHONIOENCODING="utf-8")
    env.update(extra)
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        Path(env[k]).mkdir(parents=True, exist_ok=True)
    return env
