"""The outcome benchmark's tables: per regime and budget, mean +- std over seeds and paired differences.

Input: the runs of :func:`outcome_pipeline.collect_runs` (one dict per training with its
per-case metrics; an equal-iterations run that stands for an equal-wall-time run, because the
trainer's step time is within the tolerance of stock's, comes twice, the second time with
``budget = "equal_time"`` and ``reused``). The equal-wall-time budget reuses stock's
equal-iterations runs: stock gets ``N`` iterations in both.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Sequence

from outcome_stats import as_matrix, format_interval, format_mean_std, paired_bootstrap, paired_difference, seed_summary

STOCK = "nnUNetTrainer"
SCALES = ("small", "medium", "large")
#: Columns of the main table: (heading, metric key per case).
CASE_COLUMNS = [("Dice", "dice"), ("clDice", "cldice"), ("HD95 (mm)", "hd95")] + \
    [(f"recall {s}", f"recall_{s}") for s in SCALES] + [(f"Dice {s}", f"dice_{s}") for s in SCALES]
#: Paired differences against stock.
DELTA_COLUMNS = [("Δ Dice", "dice"), ("Δ clDice", "cldice"), ("Δ recall small", "recall_small")]
BUDGET_TITLES = {"equal_iterations": "(a) equal iterations", "equal_time": "(b) equal wall time"}


def runs_for_budget(runs: Sequence[dict], regime: str, budget: str) -> dict[str, dict[int, dict]]:
    """``{trainer: {seed: run}}`` of one regime and budget, with the reuse rules of the module doc."""
    own = {}
    for run in runs:
        if run["regime"] == regime and run["budget"] == "equal_iterations":
            own.setdefault(run["trainer"], {})[run["seed"]] = run
    if budget == "equal_iterations":
        return own
    out: dict[str, dict[int, dict]] = {STOCK: dict(own.get(STOCK, {}))}
    for run in runs:
        if run["regime"] == regime and run["budget"] == "equal_time":
            out.setdefault(run["trainer"], {})[run["seed"]] = run
    return out


def case_values(by_seed: dict[int, dict], key: str) -> dict[int, list[float | None]]:
    """``{seed: [value per test case, in case order]}``."""
    out = {}
    for seed, run in sorted(by_seed.items()):
        out[seed] = [run["cases"][case].get(key) for case in sorted(run["cases"])]
    return out


def step_ratios(by_trainer: dict[str, dict[int, dict]], trainer: str) -> list[float]:
    """Per seed: the trainer's measured step time over stock's (both from the equal-iterations runs)."""
    ratios = []
    for seed, run in by_trainer.get(trainer, {}).items():
        stock = by_trainer.get(STOCK, {}).get(seed)
        if stock and run["step_s"] > 0 and stock["step_s"] > 0:
            ratios.append(run["step_s"] / stock["step_s"])
    return ratios


def summary_row(trainer: str, by_seed: dict[int, dict], ratios: list[float]) -> dict[str, Any]:
    """One trainer's numbers: iterations, step ratio, and mean/std over seeds of every metric."""
    iterations = sorted(r["iterations"] for r in by_seed.values())
    row: dict[str, Any] = {"trainer": trainer, "seeds": sorted(by_seed), "iterations": iterations,
                           "step_ratio": statistics.fmean(ratios) if ratios else math.nan,
                           "reused": any(r.get("reused") for r in by_seed.values())}
    for _, key in CASE_COLUMNS:
        row[key] = seed_summary(as_matrix(case_values(by_seed, key)))
    for scale in SCALES:
        for prefix in ("", "best_"):
            values = [r.get("decoder_dice", {}).get(f"{prefix}scale_{scale}") for r in by_seed.values()]
            row[f"decoder_{prefix}{scale}"] = seed_summary(as_matrix([[v] for v in values]))
    return row


def _decoder_cell(row: dict[str, Any], scale: str) -> str:
    """The decoder's Dice at logit 0 and, in brackets, at the epoch's best threshold when logged."""
    cell = format_mean_std(row[f"decoder_{scale}"])
    best = row.get(f"decoder_best_{scale}")
    if best is not None and format_mean_std(best) != "–":
        cell += f" ({format_mean_std(best)})"
    return cell


def delta_row(trainer: str, by_trainer: dict[str, dict[int, dict]]) -> dict[str, Any]:
    """Paired differences trainer - stock (same seed, same case) with bootstrap 95 % intervals."""
    row: dict[str, Any] = {"trainer": trainer}
    for _, key in DELTA_COLUMNS:
        difference = paired_difference(case_values(by_trainer[trainer], key), case_values(by_trainer[STOCK], key))
        row[key] = paired_bootstrap(difference)
    return row


def aggregate(runs: Sequence[dict], regimes: Sequence[str], trainers: Sequence[str]) -> dict[str, Any]:
    """Summary rows and paired-difference rows per regime and budget."""
    out: dict[str, Any] = {}
    for regime in regimes:
        reference = runs_for_budget(runs, regime, "equal_iterations")
        for budget in BUDGET_TITLES:
            by_trainer = runs_for_budget(runs, regime, budget)
            rows, deltas = [], []
            for trainer in trainers:
                if not by_trainer.get(trainer):
                    continue
                # measured in the equal-iterations runs, or (--budgets equal_time) in this budget's own runs
                ratios = step_ratios(reference, trainer) or step_ratios(by_trainer, trainer)
                rows.append(summary_row(trainer, by_trainer[trainer], ratios))
                if trainer != STOCK and by_trainer.get(STOCK):
                    deltas.append(delta_row(trainer, by_trainer))
            out.setdefault(regime, {})[budget] = {"rows": rows, "deltas": deltas}
    return out


def _iterations_text(iterations: list[int]) -> str:
    if not iterations:
        return "–"
    if min(iterations) == max(iterations):
        return str(iterations[0])
    return f"{round(statistics.fmean(iterations))} ({min(iterations)}-{max(iterations)})"


def _short(trainer: str) -> str:
    return "stock nnUNetTrainer" if trainer == STOCK else trainer.replace("nnUNetTrainer", "")


def markdown_tables(aggregated: dict[str, Any]) -> str:
    """The main and paired-difference tables as markdown, per regime and budget."""
    lines = []
    head = ["trainer", "iterations", "step ratio", *[h for h, _ in CASE_COLUMNS],
            *[f"decoder Dice {s}" for s in SCALES]]
    for regime, budgets in aggregated.items():
        for budget, parts in budgets.items():
            lines += [f"#### {regime}, {BUDGET_TITLES[budget]}", "", "| " + " | ".join(head) + " |",
                      "|" + "---|" * len(head)]
            for row in parts["rows"]:
                name = _short(row["trainer"]) + (" (= (a))" if row["reused"] and row["trainer"] != STOCK else "")
                ratio = "–" if math.isnan(row["step_ratio"]) else f"{row['step_ratio']:.2f}"
                cells = [name, _iterations_text(row["iterations"]), ratio]
                cells += [format_mean_std(row[key], 2 if key == "hd95" else 3) for _, key in CASE_COLUMNS]
                cells += [_decoder_cell(row, s) for s in SCALES]
                lines.append("| " + " | ".join(cells) + " |")
            if parts["deltas"]:
                lines += ["", "| paired vs stock | " + " | ".join(h for h, _ in DELTA_COLUMNS) + " |",
                          "|" + "---|" * (len(DELTA_COLUMNS) + 1)]
                for row in parts["deltas"]:
                    cells = [_short(row["trainer"])] + [format_interval(row[key]) for _, key in DELTA_COLUMNS]
                    lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)
