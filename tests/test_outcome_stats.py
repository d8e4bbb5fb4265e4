"""Fast checks of the outcome benchmark's statistics (benchmarks/outcome_stats.py) and tables."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
stats = pytest.importorskip("outcome_stats")


def test_seed_summary_is_mean_and_sample_std_of_per_seed_means():
    matrix = np.array([[0.8, 0.6], [0.9, np.nan], [0.5, 0.5]])
    s = stats.seed_summary(matrix)
    per_seed = [0.7, 0.9, 0.5]
    assert s["mean"] == pytest.approx(np.mean(per_seed))
    assert s["std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert s["n_seeds"] == 3


def test_seed_summary_single_seed_and_all_undefined():
    assert stats.seed_summary(np.array([[0.2, 0.4]]))["std"] == 0.0
    s = stats.seed_summary(np.full((2, 3), np.nan))
    assert math.isnan(s["mean"]) and s["n_seeds"] == 0


def test_bootstrap_interval_contains_mean_and_is_reproducible():
    rng = np.random.default_rng(0)
    d = 0.05 + 0.02 * rng.standard_normal((3, 12))
    a = stats.paired_bootstrap(d, n_boot=2000)
    b = stats.paired_bootstrap(d, n_boot=2000)
    assert a == b
    assert a["low"] < a["mean"] < a["high"]
    assert a["mean"] == pytest.approx(d.mean())
    assert 0 < a["low"] and a["high"] < 0.1  # a clear positive effect stays clear


def test_bootstrap_widens_with_seed_spread():
    # Same case noise; one design has a large between-seed spread: its interval must be wider.
    rng = np.random.default_rng(1)
    noise = 0.01 * rng.standard_normal((3, 10))
    narrow = stats.paired_bootstrap(noise, n_boot=2000)
    wide = stats.paired_bootstrap(noise + np.array([[-0.1], [0.0], [0.1]]), n_boot=2000)
    assert wide["high"] - wide["low"] > 3 * (narrow["high"] - narrow["low"])


def test_bootstrap_skips_nan_and_handles_empty():
    d = np.array([[0.1, np.nan], [0.1, np.nan]])
    r = stats.paired_bootstrap(d, n_boot=500)
    assert r["mean"] == pytest.approx(0.1) and r["low"] == pytest.approx(0.1)
    assert math.isnan(stats.paired_bootstrap(np.full((2, 2), np.nan))["mean"])
    assert math.isnan(stats.paired_bootstrap(np.zeros((0, 0)))["mean"])


def test_paired_difference_uses_common_seeds_only():
    d = stats.paired_difference({0: [1.0, 2.0], 1: [3.0, 4.0]}, {1: [1.0, None], 2: [0.0, 0.0]})
    assert d.shape == (1, 2) and d[0, 0] == 2.0 and math.isnan(d[0, 1])


def test_wall_time_iterations_and_split():
    assert stats.wall_time_iterations(200, 1.0, 2.0) == 100
    assert stats.wall_time_iterations(200, 2.0, 1.0) == 400
    assert stats.wall_time_iterations(200, 1.0, 1.029) is None
    assert stats.wall_time_iterations(1, 1.0, 100.0) == 1
    with pytest.raises(ValueError):
        stats.wall_time_iterations(10, 0.0, 1.0)
    assert stats.split_iterations(200, 10) == (10, 20)
    assert stats.split_iterations(65, 10) == (10, 6)
    assert stats.split_iterations(3, 10) == (3, 1)


def test_formatting():
    assert stats.format_mean_std({"mean": 0.5, "std": 0.01, "n_seeds": 2}) == "0.500 ± 0.010"
    assert stats.format_mean_std({"mean": 0.5, "std": 0.0, "n_seeds": 1}) == "0.500"
    assert stats.format_interval({"mean": -0.01, "low": -0.02, "high": 0.0}) == "-0.010 [-0.020, +0.000]"


def _run(trainer, seed, budget, dice, step=1.0, iterations=10):
    cases = {f"c{i}": {"dice": d, "cldice": d, "hd95": 1.0, "recall_small": d, "recall_medium": None,
                       "recall_large": d, "dice_small": d, "dice_medium": d, "dice_large": d}
             for i, d in enumerate(dice)}
    return {"regime": "demo", "seed": seed, "budget": budget, "trainer": trainer, "iterations": iterations,
            "step_s": step, "decoder_dice": {"scale_small": 0.3}, "cases": cases}


def test_aggregate_tables_reuse_stock_and_pair_by_seed():
    report = pytest.importorskip("outcome_report")
    runs = [_run("nnUNetTrainer", s, "equal_iterations", [0.5, 0.6]) for s in (0, 1)]
    runs += [_run("nnUNetTrainerScaleAux", s, "equal_iterations", [0.6, 0.7], step=3.0) for s in (0, 1)]
    runs += [_run("nnUNetTrainerScaleAux", s, "equal_time", [0.55, 0.65], step=3.0, iterations=3) for s in (0, 1)]
    out = report.aggregate(runs, ["demo"], ["nnUNetTrainer", "nnUNetTrainerScaleAux"])
    a, b = out["demo"]["equal_iterations"], out["demo"]["equal_time"]
    assert a["rows"][1]["step_ratio"] == pytest.approx(3.0)
    assert a["deltas"][0]["dice"]["mean"] == pytest.approx(0.1)
    assert b["rows"][0]["trainer"] == "nnUNetTrainer" and b["rows"][1]["iterations"] == [3, 3]
    assert b["deltas"][0]["dice"]["mean"] == pytest.approx(0.05)
    text = report.markdown_tables(out)
    assert "(b) equal wall time" in text and "Δ Dice" in text and "ScaleAux" in text
    assert "| 0.300 ± 0.000 |" in text  # decoder Dice; no best-threshold value logged, no bracket
    for run in runs:
        run["decoder_dice"]["best_scale_small"] = 0.45
    text = report.markdown_tables(report.aggregate(runs, ["demo"], ["nnUNetTrainer", "nnUNetTrainerScaleAux"]))
    assert "| 0.300 ± 0.000 (0.450 ± 0.000) |" in text


def test_collect_runs_counts_a_reused_run_for_both_budgets(tmp_path):
    import json

    pipeline = pytest.importorskip("outcome_pipeline")
    run = _run("nnUNetTrainerScaleContrastiveLite", 0, "equal_iterations", [0.5])
    folder = tmp_path / "demo" / "runs" / "seed0" / "equal_iterations" / run["trainer"]
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({k: v for k, v in run.items() if k != "cases"}))
    (folder / "evaluation.json").write_text(json.dumps({"cases": run["cases"]}))
    reuse = tmp_path / "demo" / "runs" / "seed0" / "equal_time" / run["trainer"]
    reuse.mkdir(parents=True)
    (reuse / pipeline.REUSE_FILE).write_text("{}")
    runs = pipeline.collect_runs(tmp_path, ("demo",))
    assert sorted(r["budget"] for r in runs) == ["equal_iterations", "equal_time"]
    assert [r.get("reused") for r in runs if r["budget"] == "equal_time"] == [True]


def test_step_ratio_flag_fixes_the_equal_wall_time_budget():
    outcome = pytest.importorskip("outcome")
    args = outcome.parse_args(["--quick", "--step-ratio", "nnUNetTrainerScaleContrastiveLite=1.16"])
    settings = outcome.make_settings(args, [])
    assert dict(settings.step_ratios) == {"nnUNetTrainerScaleContrastiveLite": 1.16}
    # 150 stock iterations -> round(150 / 1.16) for the trainer; within the tolerance -> None (reuse (a))
    assert stats.wall_time_iterations(150, 1.0, 1.16) == 129
    assert stats.wall_time_iterations(150, 1.0, 1.02) is None
    for bad in (["Lite"], ["Lite=0"], ["Lite=x"], ["=1.2"]):
        with pytest.raises(SystemExit, match="--step-ratio"):
            outcome.parse_step_ratios(bad)


def test_budgets_equal_time_alone_trains_the_others_only_at_equal_wall_time(tmp_path, monkeypatch):
    outcome = pytest.importorskip("outcome")
    pipeline = pytest.importorskip("outcome_pipeline")
    lite = "nnUNetTrainerScaleContrastiveLite"
    argv = ["--quick", "--regimes", "demo", "--trainers", "nnUNetTrainer", lite, "--budgets", "equal_time",
            "--iterations", "100", "--epochs", "10", "--workdir", str(tmp_path)]
    with pytest.raises(SystemExit, match="needs --step-ratio for"):
        outcome.make_settings(outcome.parse_args(argv), argv)
    argv += ["--step-ratio", f"{lite}=1.25"]
    settings = outcome.make_settings(outcome.parse_args(argv), argv)
    assert settings.budgets == ("equal_time",)
    trainings, _ = pipeline.estimate_seconds(settings, lambda t: 1.0)
    assert trainings == 2  # stock's N iterations and the trainer's N / 1.25
    bench = pipeline.Benchmark(settings)
    done = []
    monkeypatch.setattr(bench, "prepare_regime", lambda regime: None)
    monkeypatch.setattr(bench, "say", lambda text: None)
    def do_runs(runs):  # the job layer's batch of runs, stood in for: record what would train
        done.extend((run.budget, run.trainer, run.epochs * run.iterations_per_epoch) for run in runs)
        return {f"{run.budget}/{run.trainer}": {"step_s": 1.0} for run in runs}

    monkeypatch.setattr(bench, "do_runs", do_runs)
    bench.run_regime(pipeline.REGIMES["demo"])
    assert done == [("equal_iterations", "nnUNetTrainer", 100), ("equal_time", lite, 80)]
    # the tables: stock alone at equal iterations; at equal wall time the trainer, its step ratio from its own runs
    report = pytest.importorskip("outcome_report")
    runs = [_run("nnUNetTrainer", 0, "equal_iterations", [0.5, 0.6], step=1.0, iterations=100),
            _run(lite, 0, "equal_time", [0.6, 0.6], step=1.3, iterations=80)]
    out = report.aggregate(runs, ["demo"], ["nnUNetTrainer", lite])
    assert [r["trainer"] for r in out["demo"]["equal_iterations"]["rows"]] == ["nnUNetTrainer"]
    rows = out["demo"]["equal_time"]["rows"]
    assert rows[1]["step_ratio"] == pytest.approx(1.3) and rows[1]["iterations"] == [80]
    assert out["demo"]["equal_time"]["deltas"][0]["dice"]["mean"] == pytest.approx(0.05)
