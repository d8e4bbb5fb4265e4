"""Tables and figure of the learning-curve study, from the per-run JSON files alone (issue #23).

Reads ``<results>/<regime>/*.json`` (written by ``benchmarks/curves.py``; the shape is in its
docstring) and writes, without retraining anything:

- ``<out>/curves.png``: one panel per metric (Dice, clDice, recall of small and of medium
  vessels) against training wall time, one line per trainer: the mean over seeds of the
  per-seed mean over test cases, with a band from the lowest to the highest seed; a second row
  zooms on the last two thirds of stock's budget, where the plateaus are compared;
- ``<out>/curves.md``: the plateau table and the equal-wall-time table;
- with ``--update-docs``, the same tables between the ``<!-- curves:start -->`` and
  ``<!-- curves:end -->`` markers of README.md and benchmarks/RESULTS.md.

Definitions (per regime, per metric; seed curves are interpolated linearly in training
seconds between snapshots, never extrapolated):

- a trainer's **plateau value**: the mean over seeds of its snapshots in the last third of its
  iterations (the same snapshots for every seed, whatever the speed of the machine was);
- **plateau reached** (the criterion): the mean over seeds changes by less than ``--tolerance``
  (default 0.01, one point) over that last third, read two ways: the range (max - min) of those
  snapshots, and the change of the least-squares line through them over the third (the range never
  drops below the snapshot-to-snapshot noise, the fitted line measures the drift); both are reported;
- **time to plateau**: the first training time at which the mean-over-seeds curve comes within
  the tolerance of the plateau value;
- **Δ at stock's plateau time**: the trainer minus stock at the wall time where stock first
  reaches its plateau (interpolated per seed and case), with a 95 % paired bootstrap interval
  over seeds and test cases (``outcome_stats.paired_bootstrap``); likewise at the end of
  stock's budget.

Example::

    python benchmarks/curves_report.py --update-docs
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from outcome_stats import format_interval, paired_bootstrap  # noqa: E402

BENCHMARKS = Path(__file__).resolve().parent
STOCK = "nnUNetTrainer"
PANELS = (("dice", "Dice"), ("cldice", "clDice"), ("recall_small", "Recall, small vessels"),
          ("recall_medium", "Recall, medium vessels"))
TABLE_METRICS = (("dice", "Dice"), ("cldice", "clDice"), ("recall_small", "recall small"),
                 ("recall_medium", "recall medium"))
MARKERS = ("<!-- curves:start -->", "<!-- curves:end -->")


def load_runs(folder: str | Path) -> list[dict[str, Any]]:
    """Every run JSON under ``folder`` (``<regime>/<trainer>__seed<k>.json``), sorted."""
    runs = []
    for path in sorted(Path(folder).glob("*/*.json")):
        with open(path, encoding="utf-8") as f:
            run = json.load(f)
        if run.get("snapshots"):
            runs.append(run)
    return runs


def case_ids(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Test cases every snapshot of every run has."""
    sets = [set(s["cases"]) for r in runs for s in r["snapshots"]]
    return sorted(set.intersection(*sets)) if sets else []


def run_values(run: dict[str, Any], metric: str, cases: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(snapshot seconds, values of shape (snapshots, cases)); None -> NaN."""
    times = np.array([s["train_seconds"] for s in run["snapshots"]], dtype=float)
    values = np.array([[np.nan if s["cases"][c].get(metric) is None else float(s["cases"][c][metric])
                        for c in cases] for s in run["snapshots"]], dtype=float)
    order = np.argsort(times)
    return times[order], values[order]


def interpolate(times: np.ndarray, values: np.ndarray, at: float) -> np.ndarray:
    """Per-case values at ``at`` seconds, linear between snapshots, NaN outside their range.

    Examples
    --------
    >>> interpolate(np.array([10.0, 20.0]), np.array([[0.2], [0.4]]), 15.0).tolist()
    [0.30000000000000004]
    >>> bool(np.isnan(interpolate(np.array([10.0, 20.0]), np.array([[0.2], [0.4]]), 25.0)[0]))
    True
    """
    if not times[0] <= at <= times[-1]:
        return np.full(values.shape[1], np.nan)
    i = int(np.searchsorted(times, at, side="right")) - 1
    if i >= len(times) - 1:
        return values[-1].copy()
    w = (at - times[i]) / (times[i + 1] - times[i])
    return (1 - w) * values[i] + w * values[i + 1]


def by_trainer(runs: Sequence[dict[str, Any]]) -> dict[str, dict[int, dict[str, Any]]]:
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for run in runs:
        out.setdefault(run["trainer"], {})[int(run["seed"])] = run
    return out


def mean_curve(seed_runs: dict[int, dict[str, Any]], metric: str, cases: Sequence[str],
               grid: np.ndarray) -> np.ndarray:
    """Per seed (rows) and grid time (columns): the mean over test cases (NaN outside a seed's range)."""
    rows = []
    for seed in sorted(seed_runs):
        times, values = run_values(seed_runs[seed], metric, cases)
        rows.append([np.nanmean(interpolate(times, values, t)) if np.any(~np.isnan(interpolate(times, values, t)))
                     else np.nan for t in grid])
    return np.array(rows, dtype=float)


def common_grid(seed_runs: dict[int, dict[str, Any]], n: int = 200) -> np.ndarray:
    """Times every seed's curve covers."""
    starts = [min(s["train_seconds"] for s in r["snapshots"]) for r in seed_runs.values()]
    ends = [max(s["train_seconds"] for s in r["snapshots"]) for r in seed_runs.values()]
    return np.linspace(max(starts), min(ends), n)


def snapshot_means(seed_runs: dict[int, dict[str, Any]], metric: str,
                   cases: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(iterations every seed has a snapshot at, mean over seeds of the per-seed mean over cases there)."""
    common = sorted(set.intersection(*({s["iterations"] for s in r["snapshots"]} for r in seed_runs.values())))
    rows = []
    for run in seed_runs.values():
        by_it = {s["iterations"]: s for s in run["snapshots"]}
        rows.append([np.nanmean([np.nan if by_it[i]["cases"][c].get(metric) is None
                                 else float(by_it[i]["cases"][c][metric]) for c in cases]) for i in common])
    return np.array(common, dtype=float), np.nanmean(np.array(rows, dtype=float), axis=0)


def plateau(seed_runs: dict[int, dict[str, Any]], metric: str, cases: Sequence[str],
            tolerance: float) -> dict[str, Any]:
    """Plateau value, whether the criterion is met, its spread and the time it is first reached.

    The criterion is read on the snapshots in the last third of the trainer's iterations (the same
    snapshots for every seed), so that seeds trained at different speeds are compared at the same
    point of their schedule; the time to reach the plateau is read on the wall-time curve.
    """
    iterations, means = snapshot_means(seed_runs, metric, cases)
    budget = iterations[-1]
    last = iterations >= budget * 2 / 3
    snap_curve, in_third = means[last], iterations[last]
    value = float(np.nanmean(snap_curve))
    spread = float(np.nanmax(snap_curve) - np.nanmin(snap_curve))
    trend = _trend(in_third, snap_curve, budget / 3) if len(in_third) > 1 else float("nan")
    grid = common_grid(seed_runs)
    curve = np.nanmean(mean_curve(seed_runs, metric, cases, grid), axis=0)
    within = np.flatnonzero(np.abs(curve - value) <= tolerance)
    reached = float(grid[within[0]]) if len(within) else float("nan")
    return {"value": value, "spread": spread, "trend": trend, "met": spread < tolerance,
            "trend_met": abs(trend) < tolerance, "time_s": reached, "end_s": float(grid[-1]),
            "snapshots_in_last_third": int(last.sum())}


def _trend(times: np.ndarray, values: np.ndarray, duration: float) -> float:
    """Change over ``duration`` of the least-squares line through (times, values).

    Examples
    --------
    >>> round(_trend(np.array([0.0, 1.0, 2.0]), np.array([0.5, 0.6, 0.7]), 2.0), 6)
    0.2
    """
    ok = ~np.isnan(values)
    if ok.sum() < 2:
        return float("nan")
    slope = np.polyfit(times[ok], values[ok], 1)[0]
    return float(slope * duration)


def paired_at(trainer_runs: dict[int, dict[str, Any]], stock_runs: dict[int, dict[str, Any]], metric: str,
              cases: Sequence[str], at: float) -> dict[str, float] | None:
    """Trainer - stock at ``at`` seconds, per seed and case, with its bootstrap interval."""
    seeds = sorted(set(trainer_runs) & set(stock_runs))
    if not seeds:
        return None
    diff = []
    for seed in seeds:
        a = interpolate(*run_values(trainer_runs[seed], metric, cases), at)
        b = interpolate(*run_values(stock_runs[seed], metric, cases), at)
        diff.append(a - b)
    diff = np.array(diff)
    if np.all(np.isnan(diff)):
        return None
    return paired_bootstrap(diff)


def analyse(runs: Sequence[dict[str, Any]], tolerance: float = 0.01) -> dict[str, Any]:
    """Per regime: cases, per trainer and metric the plateau, and the paired differences against stock."""
    out: dict[str, Any] = {}
    for regime in sorted({r["regime"] for r in runs}):
        regime_runs = [r for r in runs if r["regime"] == regime]
        cases = case_ids(regime_runs)
        trainers = by_trainer(regime_runs)
        if STOCK not in trainers:
            continue
        stock = trainers[STOCK]
        result = {"cases": cases, "seeds": sorted(stock), "trainers": {}}
        stock_plateaus = {m: plateau(stock, m, cases, tolerance) for m, _ in TABLE_METRICS}
        for trainer, seed_runs in sorted(trainers.items(), key=lambda kv: kv[0] != STOCK):  # stock first
            rows = {}
            for metric, _ in TABLE_METRICS:
                p = stock_plateaus[metric] if trainer == STOCK else plateau(seed_runs, metric, cases, tolerance)
                rows[metric] = {**p, "delta_at_stock_plateau": None if trainer == STOCK else
                                paired_at(seed_runs, stock, metric, cases, stock_plateaus[metric]["time_s"]),
                                "delta_at_stock_end": None if trainer == STOCK else
                                paired_at(seed_runs, stock, metric, cases, stock_plateaus[metric]["end_s"])}
            iterations = [r["snapshots"][-1]["iterations"] for r in seed_runs.values()]
            result["trainers"][trainer] = {"seeds": sorted(seed_runs), "iterations": max(iterations),
                                           "metrics": rows}
        out[regime] = result
    return out


def _short(trainer: str) -> str:
    return trainer.replace("nnUNetTrainer", "") or "stock nnU-Net"


def _minutes(seconds: float) -> str:
    return "n/a" if seconds != seconds else f"{seconds / 60:.1f}"


def markdown(analysis: dict[str, Any], tolerance: float = 0.01) -> str:
    """The plateau table and the equal-wall-time table of each regime."""
    lines = []
    for regime, result in analysis.items():
        stock = result["trainers"][STOCK]["metrics"]
        met = all(stock[m]["met"] for m in ("dice", "recall_small"))
        trend_met = all(stock[m]["trend_met"] for m in ("dice", "recall_small"))
        lines += [f"**Regime {regime}**: {len(result['seeds'])} seed(s), {len(result['cases'])} test cases. "
                  f"Plateau criterion (stock's mean over seeds, Dice and small-vessel recall, over the snapshots "
                  f"in the last third of its iterations): range below {tolerance:g}: "
                  f"**{'met' if met else 'NOT met'}** (Dice {stock['dice']['spread']:.3f}, small recall "
                  f"{stock['recall_small']['spread']:.3f}); change of the fitted line below {tolerance:g}: "
                  f"**{'met' if trend_met else 'NOT met'}** (Dice {stock['dice']['trend']:+.3f}, small recall "
                  f"{stock['recall_small']['trend']:+.3f}).", ""]
        lines += ["Plateau value (mean over seeds of the snapshots in the last third of each trainer's iterations), "
                  "and minutes of "
                  "training to first come within one point of it:", "",
                  "| trainer | iterations | training min | " + " | ".join(f"{name} plateau (min)"
                                                                    for _, name in TABLE_METRICS) + " |",
                  "|---|---|---|" + "---|" * len(TABLE_METRICS)]
        for trainer, row in result["trainers"].items():
            cells = [f"{row['metrics'][m]['value']:.3f} ({_minutes(row['metrics'][m]['time_s'])})"
                     for m, _ in TABLE_METRICS]
            lines.append(f"| {_short(trainer)} | {row['iterations']} | {_minutes(row['metrics']['dice']['end_s'])} | "
                         + " | ".join(cells) + " |")
        lines += ["", "Paired difference against stock at equal training wall time (95 % bootstrap interval over "
                  "seeds and test cases), at stock's plateau time (per metric) and at the end of stock's budget:",
                  "", "| trainer | " + " | ".join(f"Δ {name} at plateau / at end" for _, name in TABLE_METRICS)
                  + " |", "|---|" + "---|" * len(TABLE_METRICS)]
        for trainer, row in result["trainers"].items():
            if trainer == STOCK:
                continue
            cells = []
            for metric, _ in TABLE_METRICS:
                a, b = row["metrics"][metric]["delta_at_stock_plateau"], row["metrics"][metric]["delta_at_stock_end"]
                cells.append(f"{format_interval(a) if a else 'n/a'} / {format_interval(b) if b else 'n/a'}")
            lines.append(f"| {_short(trainer)} | " + " | ".join(cells) + " |")
        lines += ["", "Read off at equal training wall time (an interval that excludes 0 is a gain or a loss; "
                  "one that holds 0 shows no difference):", ""]
        lines += [verdict(trainer, row, len(result["seeds"])) for trainer, row in result["trainers"].items()
                  if trainer != STOCK]
        lines.append("")
    return "\n".join(lines)


def classify(interval: dict[str, float] | None) -> str:
    """'gain', 'loss' or 'no difference' from a paired interval (trainer - stock); 'n/a' without one.

    Examples
    --------
    >>> classify({"mean": 0.05, "low": 0.01, "high": 0.09}), classify({"mean": 0.0, "low": -0.01, "high": 0.02})
    ('gain', 'no difference')
    """
    if not interval or interval.get("mean") is None or interval["mean"] != interval["mean"]:
        return "n/a"
    if interval["low"] > 0:
        return "gain"
    if interval["high"] < 0:
        return "loss"
    return "no difference"


def verdict(trainer: str, row: dict[str, Any], stock_seeds: int) -> str:
    """One line per trainer: each metric's gain / loss / no difference at stock's plateau time and at its end."""
    parts = []
    for metric, name in TABLE_METRICS:
        at = {when: row["metrics"][metric][f"delta_at_stock_{when}"] for when in ("plateau", "end")}
        words = {when: classify(at[when]) for when in at}
        mean = {when: f" {at[when]['mean']:+.3f}" if words[when] != "n/a" else "" for when in at}
        parts.append(f"{name} {words['plateau']}{mean['plateau']} / {words['end']}{mean['end']}")
    seeds = len(row["seeds"])
    caveat = "" if seeds >= stock_seeds else f" ({seeds} of {stock_seeds} seeds: not a verdict)"
    when = "at stock's plateau time / at the end of stock's budget"
    return f"- **{_short(trainer)}**{caveat}, {when}: " + "; ".join(parts)


def figure(runs: Sequence[dict[str, Any]], path: str | Path) -> None:
    """``curves.png``: per regime two rows of panels, one panel per metric, one line per trainer.

    The first row shows whole curves; the second zooms on the last two thirds of stock's budget,
    where the plateaus are compared (the first minutes, where some trainers start near 0, would
    otherwise squeeze the plateaus into a few pixels). A dotted line marks the end of stock's budget.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = sorted({r["regime"] for r in runs})
    fig, axes = plt.subplots(2 * len(regimes), len(PANELS), figsize=(4.2 * len(PANELS), 6.4 * len(regimes)),
                             squeeze=False)
    handles = {}
    for r, regime in enumerate(regimes):
        regime_runs = [run for run in runs if run["regime"] == regime]
        cases = case_ids(regime_runs)
        trainers = sorted(by_trainer(regime_runs).items(), key=lambda kv: kv[0] != STOCK)
        stock_end = common_grid(dict(trainers)[STOCK])[-1] / 60 if trainers and trainers[0][0] == STOCK else None
        for col, (metric, title) in enumerate(PANELS):
            full, zoom = axes[2 * r][col], axes[2 * r + 1][col]
            shown = []  # values inside the zoomed window, for its y-limits
            for index, (trainer, seed_runs) in enumerate(trainers):
                grid = common_grid(seed_runs)
                curves = mean_curve(seed_runs, metric, cases, grid)
                mean = np.nanmean(curves, axis=0)
                style = ({"color": "black", "linewidth": 2.2} if trainer == STOCK
                         else {"color": f"C{index % 10}", "linewidth": 1.4})
                for ax in (full, zoom):
                    (line,) = ax.plot(grid / 60, mean, label=_short(trainer), **style)
                    if len(seed_runs) > 1:
                        ax.fill_between(grid / 60, np.nanmin(curves, axis=0), np.nanmax(curves, axis=0),
                                        color=line.get_color(), alpha=0.15, linewidth=0)
                handles[_short(trainer)] = line
                if stock_end is not None:
                    window = grid / 60 >= stock_end / 3
                    shown += [np.nanmin(curves[:, window], initial=np.inf), np.nanmax(curves[:, window],
                                                                                     initial=-np.inf)]
            for ax, label in ((full, ""), (zoom, ", zoom")):
                ax.set_title(f"{title} ({regime}{label})", fontsize=10)
                ax.set_xlabel("training wall time (min)")
                ax.grid(alpha=0.3)
                if stock_end is not None:
                    ax.axvline(stock_end, color="black", linestyle=":", linewidth=1)
            finite = [v for v in shown if np.isfinite(v)]
            if stock_end is not None and finite:
                zoom.set_xlim(left=stock_end / 3)
                pad = max(0.01, 0.05 * (max(finite) - min(finite)))
                zoom.set_ylim(min(finite) - pad, max(finite) + pad)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(len(handles), 7), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_block(path: Path, text: str) -> bool:
    """Replace the text between the curves markers of a document; False when it has no markers."""
    content = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(MARKERS[0]) + ".*?" + re.escape(MARKERS[1]), flags=re.S)
    if not pattern.search(content):
        return False
    path.write_text(pattern.sub(lambda _: f"{MARKERS[0]}\n{text}\n{MARKERS[1]}", content), encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=BENCHMARKS / "results" / "curves",
                   help="folder of the per-run JSON files (default: benchmarks/results/curves)")
    p.add_argument("-o", "--out", type=Path, default=None,
                   help="where curves.png and curves.md go (default: the results folder's parent)")
    p.add_argument("--tolerance", type=float, default=0.01, help="plateau tolerance (default 0.01 = one point)")
    p.add_argument("--update-docs", action="store_true",
                   help="also replace the tables between the curves markers of README.md and benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    if (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "") != "utf8":
        sys.stdout.reconfigure(errors="replace")  # an ASCII console (LANG=C) gets '?' for 'Δ'; files stay UTF-8
    runs = load_runs(args.results)
    if not runs:
        print(f"no run files under {args.results}", file=sys.stderr)
        return 2
    out = args.out or args.results.parent
    out.mkdir(parents=True, exist_ok=True)
    analysis = analyse(runs, args.tolerance)
    text = markdown(analysis, args.tolerance)
    (out / "curves.md").write_text(text, encoding="utf-8")
    figure(runs, out / "curves.png")
    print(text)
    print(f"wrote {out / 'curves.md'} and {out / 'curves.png'} from {len(runs)} run file(s)")
    if args.update_docs:
        for doc in (BENCHMARKS.parent / "README.md", BENCHMARKS / "RESULTS.md"):
            print(f"{doc}: {'updated' if update_block(doc, text) else 'no curves markers, left alone'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
