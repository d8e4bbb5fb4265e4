"""Outcome benchmark: does an auxiliary trainer segment vessels better than stock nnU-Net? (issue #10)

Through nnU-Net's own commands, on the synthetic ``demo`` and ``clinical`` regimes
(:mod:`nnunet_aux.synthetic.presets`), for several training seeds:

1. data: ``--n-train`` training cases (the last one is fold 0's only validation case, so
   nnU-Net's final validation stays cheap) and ``--n-test`` test cases. Training labels carry
   the scales of ``decompose_vessels`` (what users have); the test cases are scored against
   the generator's TRUE scales, written by a second ``write_synthetic_dataset`` call with
   ``true_scales=True`` and the same data seed (identical cases; the test images of both
   are checked to be equal voxel by voxel);
2. ``nnUNetv2_plan_and_preprocess``, then a small plan ``nnUNetPlans_outcome``: U-Net of 4
   stages with 16-32-64-128 features, patch 32 x 64 x 64 in both regimes (the clinical
   volumes have 32 slices), batch 2;
3. per seed, each trainer of ``--trainers`` through ``nnUNetv2_train ... -tr <Trainer>_outcome``
   (``benchmarks/outcome_trainers/``: the trainer unchanged, schedule and seed from the
   environment, per-epoch phase timing):
   (a) equal iterations: ``--iterations`` N each, as ``--epochs`` epochs of N / epochs;
   (b) equal wall time: every other trainer gets round(N t_stock / t_trainer) iterations,
   t the MEASURED median seconds per training iteration of the (a) runs of the same seed:
   the wall time of each epoch's training phase (data loading and train steps, from
   ``on_train_epoch_start`` to ``on_train_epoch_end``) over its iterations, so nnU-Net's
   per-epoch validation (the same ``--val-iterations`` for all) is not counted; skipped
   (the (a) run stands) when t_stock / t_trainer is within 3 % of 1. nnU-Net's final
   validation of the one validation case runs without test-time mirroring (its scores are
   not used; the checkpoint keeps the trainer's mirroring axes);
4. ``nnUNetv2_predict`` of the test cases, ``--disable_tta`` for every run (CPU time);
5. evaluation of the predicted vessel region (its prediction values from the dataset.json
   nnU-Net predicted with, i.e. from ``regions_class_order``) against the true-scale
   reference: Dice, clDice, HD95 of the whole tree, recall and Dice per true scale
   (:func:`nnunet_aux.evaluation.scale_metrics`); plus each scale decoder's own Dice on its
   (decomposed) scale in nnU-Net's validation of the last epoch (``val_dice_scale_*``).

Statistics: per trainer and budget, mean +- std (ddof 1) over seeds of the per-seed mean over
test cases; paired differences against stock (same seed, same case) with a 95 % percentile
bootstrap interval resampling seeds and test cases (``outcome_stats.py``, numpy, fixed seed).

Output in ``--workdir``: everything, resumable (rerun the same command to continue), a
``results.json`` with every run's per-case numbers and ``table.md`` (printed too).

Every (regime, seed, budget, trainer) training, with its test-set prediction, is one job of
:mod:`nnunet_aux.experiment.jobs`, run through submitit with the same flags as
``nnunet_aux experiment`` (``--cluster local|slurm|debug``, ``--max-parallel``, ``--gpus``,
``--timeout-min``, ``--slurm-*``, ...; job ids in ``<workdir>/jobs/jobs.json``), so the study a
2-core CPU cannot finish is one command on a cluster.

Examples::

    python benchmarks/outcome.py --quick               # sanity run, minutes
    python benchmarks/outcome.py                       # full run, hours on a 2-core CPU
    python benchmarks/outcome.py --device cuda --cluster slurm --slurm-partition gpu \
        --gpus-per-node 1 --cpus-per-task 8 --iterations 5000   # on a SLURM cluster
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from outcome_pipeline import REGIMES, STOCK, Benchmark, Settings, collect_runs, estimate_seconds  # noqa: E402
from outcome_report import aggregate, markdown_tables  # noqa: E402

DEFAULT_TRAINERS = ("nnUNetTrainer", "nnUNetTrainerScaleAux", "nnUNetTrainerScaleContrastive",
                    "nnUNetTrainerScaleContrastiveLite", "nnUNetTrainerSkeletonRecall", "nnUNetTrainerSoftClDice")
QUICK_TRAINERS = ("nnUNetTrainer", "nnUNetTrainerScaleContrastiveLite")
#: Full run / --quick defaults of the sizing flags.
FULL = {"seeds": [0, 1, 2], "iterations": 150, "epochs": 10, "val_iterations": 2, "n_train": 9, "n_test": 10}
QUICK = {"seeds": [0], "iterations": 6, "epochs": 2, "val_iterations": 1, "n_train": 4, "n_test": 3}
#: Rough step time per trainer relative to stock (benchmarks/RESULTS.md, "Trainers"), for the estimate only.
RELATIVE_STEP = {"nnUNetTrainerScaleAux": 3.1, "nnUNetTrainerScaleContrastive": 3.1,
                 "nnUNetTrainerScaleContrastiveLite": 1.15, "nnUNetTrainerSkeletonRecall": 1.04,
                 "nnUNetTrainerSoftClDice": 1.3, "nnUNetTrainerScaleContrastiveSkeletonRecall": 3.4}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Full-run defaults: " + json.dumps(FULL) + "; --quick: " + json.dumps(QUICK))
    p.add_argument("--quick", action="store_true",
                   help="sanity run in minutes: 1 seed, 4 training + 3 test cases, 6 iterations (2 epochs of 3), "
                        "trainers stock + ScaleContrastiveLite (explicit flags still override)")
    p.add_argument("--regimes", nargs="+", choices=sorted(REGIMES), default=["demo", "clinical"],
                   help="synthetic regimes (presets) to run (default: demo clinical)")
    p.add_argument("--seeds", nargs="+", type=int, help="training seeds (default 0 1 2; --quick: 0)")
    p.add_argument("--trainers", nargs="+",
                   help="trainer class names; nnUNetTrainer (stock) is the reference of the paired differences "
                        "and of the equal-wall-time budget; names that do not import are skipped "
                        f"(default: {' '.join(DEFAULT_TRAINERS)}; --quick: {' '.join(QUICK_TRAINERS)})")
    p.add_argument("--iterations", type=int, help="N, training iterations of the equal-iterations budget "
                                                   f"(default {FULL['iterations']}; --quick {QUICK['iterations']})")
    p.add_argument("--epochs", type=int, help="epochs every training is split into (nnU-Net validates and "
                                               f"logs once per epoch; default {FULL['epochs']}; --quick "
                                               f"{QUICK['epochs']})")
    p.add_argument("--val-iterations", type=int, help="nnU-Net's validation iterations per epoch, the same for all "
                                                       f"(default {FULL['val_iterations']}; --quick "
                                                       f"{QUICK['val_iterations']})")
    p.add_argument("--n-train", type=int, help="training cases including the one validation case "
                                                f"(default {FULL['n_train']}; --quick {QUICK['n_train']})")
    p.add_argument("--n-test", type=int, help=f"test cases (default {FULL['n_test']}; --quick {QUICK['n_test']})")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic cases (default 0)")
    p.add_argument("--workdir", type=Path, help="work folder (default benchmarks/out/outcome, "
                                                 "--quick: benchmarks/out/outcome_quick); rerun to resume")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu",
                   help="device of training and prediction (default cpu; auto = cuda when torch sees one)")
    p.add_argument("-np", "--num-processes", type=int, default=min(2, os.cpu_count() or 1),
                   help="worker processes for data writing, preprocessing and evaluation (default: min(2, CPUs))")
    p.add_argument("--tolerance", type=float, default=0.03,
                   help="skip the equal-wall-time run when t_stock / t_trainer is within this of 1 (default 0.03)")
    p.add_argument("--step-ratio", nargs="+", default=[], metavar="TRAINER=R",
                   help="fix a trainer's step time relative to stock for the equal-wall-time budget, e.g. "
                        "nnUNetTrainerScaleContrastiveLite=1.16 from benchmarks/bench_trainers.py, instead of the "
                        "median step times of the (a) runs (use it when other work shares the machine)")
    p.add_argument("--budgets", nargs="+", choices=["equal_iterations", "equal_time"],
                   default=["equal_iterations", "equal_time"],
                   help="comparisons to run (default both): 'equal_time' alone trains the other trainers only "
                        "at equal wall time, with the step ratios of --step-ratio (required for each of them); "
                        "stock's N-iteration run is the reference of both")
    p.add_argument("--verbose", action="store_true", help="show nnU-Net's own output (always in the logs)")
    from nnunet_aux.experiment.cli import add_cluster_arguments

    # the same executor flags as `nnunet_aux experiment`: every (trainer, seed) training is one job
    add_cluster_arguments(p, experiment_flags=False)
    return p.parse_args(argv)


def parse_step_ratios(items: list[str]) -> tuple[tuple[str, float], ...]:
    """``["Trainer=1.16", ...]`` as ``(("Trainer", 1.16), ...)``."""
    ratios = []
    for item in items:
        name, _, value = item.partition("=")
        try:
            ratio = float(value)
        except ValueError:
            ratio = float("nan")
        if not name or not ratio > 0:
            raise SystemExit(f"--step-ratio {item!r}: expected TRAINER=R with R > 0")
        ratios.append((name, ratio))
    return tuple(ratios)


def available_trainers(names: list[str]) -> list[str]:
    """The names that exist (stock, or a class of nnunet_aux.training.trainers); the others are reported."""
    try:
        from nnunet_aux.training import trainers
    except Exception as e:  # noqa: BLE001 (a half-written trainer module must not stop stock)
        print(f"nnunet_aux.training.trainers does not import ({e!r}): only {STOCK} can run")
        trainers = None
    kept = []
    for name in dict.fromkeys(names):
        if name == STOCK or (trainers is not None and hasattr(trainers, name)):
            kept.append(name)
        else:
            print(f"skipping {name}: not found in nnunet_aux.training.trainers")
    return kept


def make_settings(args: argparse.Namespace, argv: list[str]) -> Settings:
    """Flags over the --quick or full defaults."""
    defaults = QUICK if args.quick else FULL
    pick = lambda name: getattr(args, name) if getattr(args, name) is not None else defaults[name]  # noqa: E731
    trainers = available_trainers(args.trainers or list(QUICK_TRAINERS if args.quick else DEFAULT_TRAINERS))
    workdir = args.workdir or Path(__file__).resolve().parent / "out" / ("outcome_quick" if args.quick else "outcome")
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = Settings(regimes=tuple(args.regimes), seeds=tuple(pick("seeds")), trainers=tuple(trainers),
                        iterations=pick("iterations"), epochs=pick("epochs"), val_iterations=pick("val_iterations"),
                        n_train=pick("n_train"), n_test=pick("n_test"), data_seed=args.data_seed,
                        workdir=workdir.absolute(), device=device, num_processes=args.num_processes,
                        tolerance=args.tolerance, step_ratios=parse_step_ratios(args.step_ratio),
                        budgets=tuple(dict.fromkeys(args.budgets)),
                        verbose=args.verbose,
                        command="python " + " ".join(shlex.quote(a) for a in ["benchmarks/outcome.py", *argv]))
    check_settings(settings)
    return settings


def check_settings(s: Settings) -> None:
    if not s.trainers:
        raise SystemExit("no trainer left to run")
    if min(s.iterations, s.epochs, s.val_iterations, s.num_processes) < 1:
        raise SystemExit("--iterations, --epochs, --val-iterations and -np must be at least 1")
    if s.n_train < 2 or s.n_test < 1:
        raise SystemExit("need --n-train >= 2 (one is the validation case) and --n-test >= 1")
    if "equal_iterations" not in s.budgets:
        missing = [t for t in s.trainers if t != STOCK and t not in dict(s.step_ratios)]
        if missing:
            raise SystemExit(f"--budgets equal_time without equal_iterations needs --step-ratio for {missing} "
                             "(their step time is measured in the equal-iterations runs otherwise)")


def announce(s: Settings) -> None:
    """The plan and a rough duration, before anything runs."""
    # stock seconds per iteration (32x64x64, batch 2; 2.2 s measured 2026-12-02)
    base = 2.2 if s.device == "cpu" else 0.1
    trainings, seconds = estimate_seconds(s, lambda t: base * RELATIVE_STEP.get(t, 1.0))
    print(f"outcome benchmark: regimes {list(s.regimes)}, seeds {list(s.seeds)}, trainers {list(s.trainers)}")
    print(f"  {s.iterations} iterations ({s.epochs} epochs), {s.val_iterations} validation iterations per epoch, "
          f"{s.n_train} training + {s.n_test} test cases, device {s.device}, work folder {s.workdir}")
    print(f"  up to {trainings} trainings (equal-iterations runs + equal-wall-time runs of the non-stock "
          f"trainers); rough estimate {seconds / 3600:.1f} h on an idle machine (finished steps are reused)",
          flush=True)


def write_outputs(s: Settings, failures: list[str]) -> str:
    """results.json and table.md from every finished run in the work folder; returns the tables."""
    runs = collect_runs(s.workdir, s.regimes)
    runs = [r for r in runs if r["trainer"] in s.trainers and r["seed"] in s.seeds]
    aggregated = aggregate(runs, s.regimes, s.trainers)
    header = [f"Command: `{s.command}`", "",
              f"Regimes {list(s.regimes)}, seeds {list(s.seeds)}, {s.n_train} training cases (1 of them fold 0's "
              f"validation case) and {s.n_test} test cases per regime; plan: U-Net 16-32-64-128, patch 32x64x64, "
              f"batch 2; device {s.device}; prediction without test-time mirroring. Scores against the generator's "
              "true scales; mean ± std over seeds of the per-seed mean over test cases; paired differences vs stock "
              "with 95 % bootstrap intervals (seeds and cases resampled). 'step ratio': measured seconds per "
              "training iteration over stock's (equal-iterations runs). 'decoder Dice': each scale decoder's Dice on "
              "its own scale in nnU-Net's validation of the last epoch.", ""]
    table = "\n".join(header) + "\n" + markdown_tables(aggregated)
    if failures:
        table += "\nFailed runs:\n" + "\n".join(f"- {f.splitlines()[0]}" for f in failures) + "\n"
    (s.workdir / "table.md").write_text(table + "\n", encoding="utf-8")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in s.__dict__.items()}
    with open(s.workdir / "results.json", "w", encoding="utf-8") as f:
        json.dump(_no_nan({"settings": settings, "aggregate": aggregated, "runs": runs, "failures": failures}), f,
                  indent=1, allow_nan=False)
    return table


def _no_nan(value):
    """NaN (an undefined mean) becomes null, so that results.json is standard JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_no_nan(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    from nnunet_aux.errors import InputError
    from nnunet_aux.experiment.cli import cluster_options

    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    s = make_settings(args, argv)
    cluster = cluster_options(args)
    try:
        cluster.check()
    except InputError as e:
        raise SystemExit(f"error: {e}") from None
    s.workdir.mkdir(parents=True, exist_ok=True)
    announce(s)
    bench = Benchmark(s, cluster)
    started = time.perf_counter()
    for name in s.regimes:
        bench.run_regime(REGIMES[name])
    table = write_outputs(s, bench.failures)
    print("\n" + table)
    print(f"done in {(time.perf_counter() - started) / 60:.1f} min; {s.workdir / 'table.md'}, "
          f"{s.workdir / 'results.json'}")
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
