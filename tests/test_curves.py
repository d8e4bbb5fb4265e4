"""The learning-curve study (issue #23): snapshot schedule, interpolation at equal wall time, plateau
criterion, paired differences, tables and figure from per-run JSON alone; and one tiny real run
(snapshots through nnU-Net, prediction of every snapshot, the per-run JSON, resumption)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
report = pytest.importorskip("curves_report")
curves = pytest.importorskip("curves")


def test_snapshot_schedule_and_budgets():
    assert curves.snapshot_iterations(1600, 25) == (50, 100, 200, 300, 400, 600, 800, 1000, 1200, 1400, 1600)
    assert curves.snapshot_iterations(8, 2) == (2, 4, 6, 8)
    # stock keeps its budget; a trainer 3.4 x as expensive per step gets 1600 / 3.4 x 1.15 -> whole epochs
    assert curves.trainer_iterations("nnUNetTrainer", 1600, 25, {"X": 3.4}, 1.15) == 1600
    assert curves.trainer_iterations("X", 1600, 25, {"X": 3.4}, 1.15) == 550  # 541.2 -> 22 epochs of 25
    assert curves.trainer_iterations("Unknown", 1600, 25, {}, 1.0) == 1600


def test_rerun_sets_finished_runs_aside_and_lets_a_stopped_rerun_continue(tmp_path):
    """``--rerun`` after a change to one trainer: its finished runs (JSON present) move aside with their run
    folders, nothing is deleted; another trainer's runs and an unfinished run (a stopped rerun) are kept."""
    from outcome_pipeline import Settings

    workdir, results = tmp_path / "work", tmp_path / "results"
    settings = Settings(regimes=("demo",), seeds=(0, 1), trainers=("nnUNetTrainer", "X"), iterations=100,
                        epochs=4, val_iterations=1, n_train=3, n_test=2, data_seed=0, workdir=workdir,
                        device="cpu", num_processes=1)
    study = curves.Curves(settings, None, results, {"X": 2.0}, 1.15, 25, "test")
    study.say = lambda text: None
    regime = curves.CURVE_REGIMES["demo"]
    runs = {run.key: run for run in study.runs(regime)}
    for key in ("nnUNetTrainer__seed0", "X__seed0"):  # finished: JSON and run folder
        study.result_file(runs[key]).parent.mkdir(parents=True, exist_ok=True)
        study.result_file(runs[key]).write_text(json.dumps({"commit": "abc123"}), encoding="utf-8")
        (runs[key].folder / "train.log").parent.mkdir(parents=True)
        (runs[key].folder / "train.log").write_text(key, encoding="utf-8")
    (runs["X__seed1"].folder).mkdir(parents=True)  # unfinished (stopped during an earlier --rerun)
    (runs["X__seed1"].folder / "train.log").write_text("half", encoding="utf-8")

    moved = study.discard(regime, ("X",))
    assert moved == [tmp_path / "results_discarded" / "demo" / "X__seed0__abc123.json"]
    assert json.loads(moved[0].read_text(encoding="utf-8")) == {"commit": "abc123"}
    assert not study.result_file(runs["X__seed0"]).exists() and not runs["X__seed0"].folder.exists()
    aside = list((workdir / "discarded").glob("X__seed0__*/train.log"))
    assert [f.read_text(encoding="utf-8") for f in aside] == ["X__seed0"]
    assert (runs["X__seed1"].folder / "train.log").read_text(encoding="utf-8") == "half"  # continues
    assert study.result_file(runs["nnUNetTrainer__seed0"]).is_file()  # stock untouched
    assert (runs["nnUNetTrainer__seed0"].folder / "train.log").is_file()
    assert study.discard(regime, ("X",)) == []  # a second --rerun (after a stop) finds nothing to set aside
    with pytest.raises(SystemExit, match="not among the trainers"):
        curves.main(["--trainers", "nnUNetTrainer", "--rerun", "Y", "--workdir", str(workdir),
                     "--results", str(results)])


def make_run(trainer, seed, times, values, regime="demo", cases=("a", "b")):
    """A run JSON: metric values per snapshot (same for every metric but recall_small = value / 2)."""
    return {"trainer": trainer, "seed": seed, "regime": regime, "plan": {}, "commit": "x",
            "snapshots": [{"iterations": 10 * (i + 1), "train_seconds": t,
                           "cases": {c: {"dice": v + 0.01 * j, "cldice": v, "hd95": 1.0, "recall_small": v / 2,
                                         "recall_medium": v, "recall_large": v} for j, c in enumerate(cases)}}
                          for i, (t, v) in enumerate(zip(times, values))]}


def test_interpolation_at_equal_wall_time():
    run = make_run("T", 0, [60.0, 120.0, 240.0], [0.2, 0.5, 0.8])
    times, values = report.run_values(run, "cldice", ["a", "b"])
    assert report.interpolate(times, values, 90.0).tolist() == pytest.approx([0.35, 0.35])
    assert report.interpolate(times, values, 240.0).tolist() == pytest.approx([0.8, 0.8])
    assert np.isnan(report.interpolate(times, values, 30.0)).all()  # never extrapolated
    assert np.isnan(report.interpolate(times, values, 300.0)).all()


def synthetic_study():
    """Stock plateaus at 0.8 from 300 s; 'Fast' reaches 0.9 but each step costs more; 2 seeds."""
    runs = []
    for seed, noise in ((0, 0.0), (1, 0.004)):
        runs.append(make_run("nnUNetTrainer", seed, [60, 150, 300, 450, 600, 750, 900],
                             [0.4, 0.7, 0.795 + noise, 0.8, 0.8, 0.8 + noise, 0.8]))
        runs.append(make_run("nnUNetTrainerFast", seed, [100, 250, 500, 750, 1000],
                             [0.3, 0.6, 0.85 + noise, 0.9, 0.9]))
    return runs


def test_plateau_criterion_and_time():
    runs = report.by_trainer(synthetic_study())
    p = report.plateau(runs["nnUNetTrainer"], "cldice", ["a", "b"], 0.01)
    # last third of 60..900 s: snapshots at 600, 750 and 900 s: means 0.8, 0.802, 0.8
    assert p["snapshots_in_last_third"] == 3 and p["met"]
    assert p["value"] == pytest.approx((0.8 + 0.802 + 0.8) / 3)
    assert p["spread"] == pytest.approx(0.002)
    assert p["trend"] == pytest.approx(0.0, abs=1e-9) and p["trend_met"]  # 0.8, 0.802, 0.8: no drift
    # the mean curve first comes within 0.01 of 0.8007 between 150 s (0.7) and 300 s (0.797)
    assert 150 < p["time_s"] <= 300
    q = report.plateau(runs["nnUNetTrainer"], "cldice", ["a", "b"], 0.001)
    assert not q["met"]


def test_paired_difference_at_stock_time():
    runs = report.by_trainer(synthetic_study())
    at = 300.0  # Fast, seed 0: between 250 s (0.6) and 500 s (0.85): 0.65; stock 0.795 -> -0.145
    d = report.paired_at(runs["nnUNetTrainerFast"], runs["nnUNetTrainer"], "cldice", ["a", "b"], at)
    seed1 = (0.6 + 0.2 * (0.854 - 0.6)) - 0.799
    assert d["mean"] == pytest.approx(((0.65 - 0.795) + seed1) / 2)
    assert d["low"] <= d["mean"] <= d["high"] and d["n_seeds"] == 2 and d["n_cases"] == 2


def test_tables_and_figure_from_json_alone(tmp_path):
    for run in synthetic_study():
        folder = tmp_path / "curves" / run["regime"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{run['trainer']}__seed{run['seed']}.json").write_text(json.dumps(run))
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{report.MARKERS[0]}\nold\n{report.MARKERS[1]}\nafter\n", encoding="utf-8")
    assert report.main(["--results", str(tmp_path / "curves"), "-o", str(tmp_path)]) == 0
    text = (tmp_path / "curves.md").read_text(encoding="utf-8")
    assert "Plateau criterion" in text and "**met**" in text
    assert "| stock nnU-Net | 70 | 15.0 |" in text and "| Fast | 50 | 16.7 |" in text  # minutes covered
    assert "Δ Dice at plateau / at end" in text
    # the verdict line: Fast is behind when stock reaches its plateau (~150-300 s: 0.4-0.6 vs 0.7-0.8) and
    # ahead at the end of stock's budget (900 s: 0.9 vs 0.8 in every seed and case, so the interval is a point)
    line = next(x for x in text.splitlines() if x.startswith("- **Fast**"))
    assert re.search(r"Dice loss -0\.\d{3} / gain \+0\.100;", line), line
    assert "not a verdict" not in line  # both trainers have 2 seeds
    assert report.classify({"mean": -0.01, "low": -0.02, "high": 0.001}) == "no difference"
    assert report.classify(None) == "n/a"
    png = (tmp_path / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # the IHDR chunk
    assert height / width > 0.3  # two rows of four panels (whole curves, then the zoom), one legend below
    assert report.update_block(doc, "new table") and doc.read_text(encoding="utf-8") == (
        f"before\n{report.MARKERS[0]}\nnew table\n{report.MARKERS[1]}\nafter\n")
    assert report.main(["--results", str(tmp_path / "empty")]) == 2


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc), children before grandchildren."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(encoding="utf-8").rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(0), []):
            found.append(child)
            todo.append(child)
    return found


def _crash_after_first_snapshot(command: list[str], workdir: Path) -> dict:
    """Run ``command`` until the training has saved its first snapshot and the checkpoint after it,
    then kill the whole process tree with SIGKILL (a node crash); returns the snapshots kept."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            listed = list(workdir.rglob("fold_0/snapshots.json"))
            latest = [p.with_name("checkpoint_latest.pth") for p in listed]
            if listed and latest[0].is_file() and latest[0].stat().st_mtime >= listed[0].stat().st_mtime:
                size = latest[0].stat().st_size
                time.sleep(0.2)  # the checkpoint after the snapshot is complete: the next epoch is running
                if latest[0].stat().st_size == size:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "the training ended before it could be interrupted"
        tree = [proc.pid, *_descendants(proc.pid)]
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    return json.loads(listed[0].read_text(encoding="utf-8"))


@pytest.mark.slow
def test_curves_quick_run_snapshots_resumes_and_reports(tmp_path):
    """A tiny real study (stock only; the iterations of the other trainers are unit-tested above): snapshots
    through nnU-Net, a crash after the first snapshot and the continuation (the snapshot is kept, the
    training goes on from nnU-Net's latest checkpoint), every snapshot predicted and scored, the run's JSON,
    a result rebuilt without retraining, the report."""
    workdir, results = tmp_path / "work", tmp_path / "results"
    command = [sys.executable, str(BENCHMARKS / "curves.py"), "--quick", "--workdir", str(workdir),
               "--results", str(results), "--iterations", "12", "--iterations-per-epoch", "2", "--n-test", "2",
               "--n-train", "3", "--trainers", "nnUNetTrainer"]
    kept = _crash_after_first_snapshot(command, workdir)
    fold = next(workdir.rglob("fold_0"))
    assert 2 in map(int, kept) and not (fold / "checkpoint_final.pth").exists()
    first_snapshot = (fold / "snapshot_0000002.pth").stat().st_mtime
    first = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=1500)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert (fold / "snapshot_0000002.pth").stat().st_mtime == first_snapshot  # kept, not retrained
    assert len(list(fold.glob("training_log_*.txt"))) == 2  # nnU-Net started twice: the second time with --c
    stock = json.loads((results / "demo" / "nnUNetTrainer__seed0.json").read_text(encoding="utf-8"))
    assert [s["iterations"] for s in stock["snapshots"]] == [2, 4, 6, 8, 10, 12]
    seconds = [s["train_seconds"] for s in stock["snapshots"]]
    assert seconds == sorted(seconds) and seconds[0] > 0
    for snapshot in stock["snapshots"]:
        assert len(snapshot["cases"]) == 2
        for values in snapshot["cases"].values():
            assert 0 <= values["dice"] <= 1 and "recall_small" in values and "cldice" in values
    assert stock["plan"]["patch_size"] == list(curves.CURVE_REGIMES["demo"].patch_size) and stock["commit"]

    # a deleted result is rebuilt from the kept snapshots, nothing is retrained
    mtime = (fold / "checkpoint_final.pth").stat().st_mtime
    (results / "demo" / "nnUNetTrainer__seed0.json").unlink()
    again = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert (fold / "checkpoint_final.pth").stat().st_mtime == mtime
    rebuilt = json.loads((results / "demo" / "nnUNetTrainer__seed0.json").read_text(encoding="utf-8"))
    assert rebuilt["snapshots"] == stock["snapshots"]

    assert report.main(["--results", str(results), "-o", str(tmp_path)]) == 0
    assert (tmp_path / "curves.png").is_file() and "Regime demo" in (tmp_path / "curves.md").read_text(encoding="utf-8")
