"""Learning curves: does it help once training has converged? (issue #23)

Each (trainer, seed) trains ONCE, through ``nnUNetv2_train`` with the outcome trainers
(``benchmarks/outcome_trainers``: the trainer unchanged, schedule and seed from the
environment), for as long as stock nnU-Net trains times a margin, in WALL TIME: a trainer whose
step costs r x stock's gets ``--iterations / r`` (x ``--margin``) iterations, so every curve
covers stock's budget and the expensive ones end at fewer iterations. Along the way the trainer
saves snapshots (nnU-Net checkpoints) at the same fractions of its budget (denser early); every
snapshot predicts the test cases (``benchmarks/predict_snapshots.py``, no test-time mirroring)
and is scored against the generator's TRUE scales (Dice, clDice, HD95, recall and Dice per
scale). The training-phase wall time up to each snapshot is measured (data loading and train
steps; nnU-Net's per-epoch validation excluded).

Every finished run writes one small JSON into ``--results`` (default ``benchmarks/results/curves``),
readable without the package::

    {"trainer": str, "seed": int, "regime": "demo" | "clinical", "plan": {...}, "commit": str,
     "snapshots": [{"iterations": int, "train_seconds": float,
                    "cases": {"<case id>": {"dice": float, "cldice": float, "hd95": float,
                                            "recall_small": float, "recall_medium": float,
                                            "recall_large": float, ...}}}], ...}

Tables and the figure come from those files alone: ``python benchmarks/curves_report.py``.

Resumable: re-run the same command; finished runs (their JSON exists) are skipped, an
interrupted training continues from its last epoch (``save_every`` 1), predicted snapshots are
kept. Every training is one job of :mod:`nnunet_aux.experiment.jobs`, so the same command runs
on a cluster with the executor flags of ``nnunet_aux experiment`` (``--cluster slurm
--device cuda ...``) and longer budgets.

After a change to one trainer, ``--rerun TRAINER`` sets its finished runs aside (nothing is deleted) and
trains only its seeds again (3 runs, about 1.7 hours of the 2-core CPU for the demo study); the other
trainers' JSON files stay valid, so the study need not be redone from scratch.

Examples::

    python benchmarks/curves.py --quick                 # pipeline check, minutes
    python benchmarks/curves.py                         # the study, hours on a 2-core CPU
    python benchmarks/curves.py --rerun nnUNetTrainerScaleContrastiveLite   # after a change to Lite
    python benchmarks/curves_report.py                  # tables + figure from benchmarks/results/curves
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from outcome_pipeline import CONFIGURATION, FOLD, STOCK, Benchmark, Regime, RunSpec, Settings, _read_json, _write_json  # noqa: E402

BENCHMARKS = Path(__file__).resolve().parent
#: A smaller plan than the outcome benchmark's, so that stock nnU-Net reaches a plateau on a 2-core CPU
#: (chosen by a pilot run: benchmarks/RESULTS.md "Learning curves").
CURVE_REGIMES = {
    "demo": Regime("demo", 903, "CurvesDemo", patch_size=(32, 48, 48), features_per_stage=(16, 32, 64, 128),
                   batch_size=2),
    "clinical": Regime("clinical", 904, "CurvesClinical", patch_size=(32, 48, 48),
                       features_per_stage=(16, 32, 64, 128), batch_size=2),
}
DEFAULT_TRAINERS = ("nnUNetTrainer", "nnUNetTrainerScaleContrastive", "nnUNetTrainerScaleContrastiveLite",
                    "nnUNetTrainerSkeletonRecall", "nnUNetTrainerSoftClDice", "nnUNetTrainerCbDice",
                    "nnUNetTrainerScaleContrastiveLiteSkeletonRecall")
#: Step time relative to stock in a real ``nnUNetv2_train`` of the curves' small plan (patch 32 x 48 x 48,
#: features 16-128, batch 2) on the 2-core CPU; override with --step-ratio. It sets each trainer's iterations
#: so that its curve covers stock's wall time (the margin absorbs an error of the ratio). Measured
#: 2026-12-04: ``bench_trainers.py --patch 32 48 48 --features 16 32 64 128`` gives the train_step alone
#: (stock 0.32 s; full decoders 3.12 x, ScaleAux 2.97 x, soft-clDice 2.73 x, cbDice 1.68 x, Lite and
#: Lite + Skeleton Recall 1.24 x, Skeleton Recall 1.01 x); a real epoch adds ~0.14 s per iteration of data
#: loading and logging that every trainer pays alike (stock 0.46 s per iteration in the study), which brings
#: the full decoders to 2.5-2.7 x (measured in the study: 1.1-1.25 s per iteration) and Lite to 1.15 x
#: (measured). The ratios of nnU-Net's default plan (full decoders 3.4 x, soft-clDice 3.35 x, cbDice 2.85 x;
#: RESULTS.md, "Thin-structure peers") would leave those curves 15-40 % short of stock's budget here.
#: The two losses overlap more with the data loading than that sum says; their seed-0 runs measured
#: soft-clDice 0.80 s per iteration (1.74 x; with 2.2 its 1675 iterations ended at 22.4 min, short of the
#: margin, so it is 1.75 now: 2125 iterations) and cbDice 0.61 s (1.3 x; 1.5 gives 2475 iterations,
#: 25.0 min, which covers stock's longest seed, and is kept so that its seeds share one snapshot schedule).
STEP_RATIOS = {"nnUNetTrainerScaleAux": 2.5, "nnUNetTrainerScaleContrastive": 2.5,
               "nnUNetTrainerScaleContrastiveLite": 1.2, "nnUNetTrainerSkeletonRecall": 1.02,
               "nnUNetTrainerSkeletonRecallDS": 1.03, "nnUNetTrainerSoftClDice": 1.75, "nnUNetTrainerCbDice": 1.5,
               "nnUNetTrainerScaleContrastiveLiteSkeletonRecall": 1.2}
#: Snapshots at these fractions of each run's iterations (denser early; the last third holds three).
SNAPSHOT_FRACTIONS = (1 / 32, 1 / 16, 1 / 8, 3 / 16, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4, 7 / 8, 1)
FULL = {"seeds": [0, 1, 2], "iterations": 3200, "iterations_per_epoch": 25, "val_iterations": 2, "n_train": 9,
        "n_test": 8}
QUICK = {"seeds": [0], "iterations": 16, "iterations_per_epoch": 2, "val_iterations": 1, "n_train": 4,
         "n_test": 2}
QUICK_TRAINERS = ("nnUNetTrainer", "nnUNetTrainerScaleContrastiveLite")
METRICS = ("dice", "cldice", "hd95", "recall_small", "recall_medium", "recall_large", "dice_small",
           "dice_medium", "dice_large")


@dataclass
class CurveRun(RunSpec):
    """One (trainer, seed) training with snapshots."""

    snapshots: tuple[int, ...] = field(default=())

    def schedule(self) -> dict[str, Any]:
        return {**super().schedule(), "snapshots": list(self.snapshots), "save_every": 1}

    @property
    def key(self) -> str:
        return f"{self.trainer}__seed{self.seed}"


def snapshot_iterations(total: int, per_epoch: int, fractions=SNAPSHOT_FRACTIONS) -> tuple[int, ...]:
    """Iterations of the snapshots: each fraction of ``total``, rounded up to whole epochs.

    Examples
    --------
    >>> snapshot_iterations(800, 25)
    (25, 50, 100, 150, 200, 300, 400, 500, 600, 700, 800)
    """
    return tuple(sorted({max(1, math.ceil(total * f / per_epoch)) * per_epoch for f in fractions}))


def trainer_iterations(trainer: str, stock_iterations: int, per_epoch: int, ratios: dict[str, float],
                       margin: float) -> int:
    """Iterations of a trainer that cover stock's wall time: ``stock / ratio x margin``, whole epochs."""
    if trainer == STOCK:
        return stock_iterations
    ratio = ratios.get(trainer, 1.0)
    return max(1, math.ceil(stock_iterations / ratio * margin / per_epoch)) * per_epoch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Full-run defaults: " + json.dumps(FULL) + "; --quick: " + json.dumps(QUICK))
    p.add_argument("--quick", action="store_true", help="pipeline check in minutes (explicit flags still override)")
    p.add_argument("--regime", choices=sorted(CURVE_REGIMES), default="demo", help="synthetic regime (default demo)")
    p.add_argument("--trainers", nargs="+", help=f"default: {' '.join(DEFAULT_TRAINERS)}; names that do not "
                                                 "import are skipped")
    p.add_argument("--seeds", nargs="+", type=int, help="training seeds (default 0 1 2)")
    p.add_argument("--iterations", type=int, help="stock nnU-Net's iterations (default 3200)")
    p.add_argument("--iterations-per-epoch", type=int, help="nnU-Net epoch length (default 25)")
    p.add_argument("--val-iterations", type=int, help="nnU-Net's validation iterations per epoch (default 2)")
    p.add_argument("--n-train", type=int, help="training cases, the last is fold 0's validation case (default 9)")
    p.add_argument("--n-test", type=int, help="test cases (default 8)")
    p.add_argument("--margin", type=float, default=1.15,
                   help="each non-stock trainer trains stock's wall time times this (default 1.15)")
    p.add_argument("--step-ratio", nargs="+", default=[], metavar="TRAINER=R",
                   help="step time relative to stock, overriding the table in this file")
    p.add_argument("--rerun", nargs="+", default=[], metavar="TRAINER",
                   help="after a change to these trainers: set their finished runs aside (the JSON to "
                        "<results>_discarded/, the run folder to <workdir>/discarded/) and train them again; "
                        "the other trainers' runs are kept, so only these cost time (stop their running jobs first)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic cases (default 0)")
    p.add_argument("--workdir", type=Path, help="work folder (default benchmarks/out/curves[_quick])")
    p.add_argument("--results", type=Path, help="per-run JSON files (default benchmarks/results/curves; "
                                                 "--quick: <workdir>/results)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="device (default cpu)")
    p.add_argument("-np", "--num-processes", type=int, default=min(2, os.cpu_count() or 1),
                   help="processes for data writing, preprocessing and evaluation (default min(2, CPUs))")
    p.add_argument("--verbose", action="store_true", help="show nnU-Net's own output (always in the logs)")
    from nnunet_aux.experiment.cli import add_cluster_arguments

    add_cluster_arguments(p, experiment_flags=False)
    return p.parse_args(argv)


class Curves(Benchmark):
    """The outcome benchmark's data, plan and evaluation, with one snapshotting training per (trainer, seed)."""

    def __init__(self, settings: Settings, cluster, results: Path, ratios: dict[str, float], margin: float,
                 per_epoch: int, command: str):
        super().__init__(settings, cluster)
        self.results, self.ratios, self.margin = results, ratios, margin
        self.per_epoch, self.command = per_epoch, command

    def runs(self, regime: Regime) -> list[CurveRun]:
        runs = []
        for seed in self.s.seeds:
            for trainer in self.s.trainers:
                n = trainer_iterations(trainer, self.s.iterations, self.per_epoch, self.ratios, self.margin)
                runs.append(CurveRun(regime, seed, "curve", trainer, n // self.per_epoch, self.per_epoch,
                                     self.s.val_iterations, workdir=self.s.workdir,
                                     snapshots=snapshot_iterations(n, self.per_epoch)))
        return runs

    def result_file(self, run: CurveRun) -> Path:
        return self.results / run.regime.name / f"{run.key}.json"

    def curve_job(self, run: CurveRun):
        from nnunet_aux.experiment.jobs import FollowUp

        job = self.job(run)  # training + the final checkpoint's test prediction
        model = run.fold_folder().parent
        predict = (sys.executable, str(BENCHMARKS / "predict_snapshots.py"), "-m", str(model), "-f", FOLD,
                   "-i", str(self.raw_folder(run.regime) / "imagesTs"), "-o", str(run.folder / "snapshot_predictions"),
                   "-device", self.s.device)
        snapshots = FollowUp("predict snapshots", predict, str(run.folder / "predict_snapshots.log"),
                             str(run.folder / "snapshot_predictions" / ".done"))
        from dataclasses import replace

        return replace(job, key=f"{run.regime.name}/{run.key}", follow_ups=(snapshots,))

    def discard(self, regime: Regime, trainers: tuple[str, ...]) -> list[Path]:
        """Set aside the finished runs of ``trainers``, so that :meth:`run_all` trains them again.

        A run is finished when its JSON exists; its JSON moves to ``<results>_discarded/<regime>/`` (with the
        commit it was made at in the name) and its run folder to ``<workdir>/discarded/``: nothing is
        deleted. An unfinished run (no JSON: it was stopped, perhaps during an earlier ``--rerun``) is left to
        continue, so that a stopped rerun resumes instead of starting over.
        """
        stamp = time.strftime("%Y%m%d-%H%M%S")
        discarded = self.results.with_name(self.results.name + "_discarded")
        moved = []
        for run in self.runs(regime):
            result = self.result_file(run)
            if run.trainer not in trainers or not result.is_file():
                continue
            commit = str(_read_json(result).get("commit", "unknown"))
            target = discarded / regime.name / f"{run.key}__{commit}.json"
            folder = self.s.workdir / "discarded" / f"{run.key}__{stamp}"
            if target.exists() or folder.exists():
                raise SystemExit(f"--rerun: {target if target.exists() else folder} exists; move it away first")
            target.parent.mkdir(parents=True, exist_ok=True)
            result.rename(target)
            if run.folder.exists():
                folder.parent.mkdir(parents=True, exist_ok=True)
                run.folder.rename(folder)
            self.say(f"  --rerun {run.key}: {result.name} -> {target}" + (f"; run folder -> {folder}"
                                                                          if folder.exists() else ""))
            moved.append(target)
        return moved

    def run_all(self, regime: Regime) -> list[str]:
        from nnunet_aux.experiment.cluster import run_jobs

        self.prepare_regime(regime)
        runs = [r for r in self.runs(regime) if not self.result_file(r).is_file()]
        for run in runs:
            self.check_run_settings(run)
            self.say(f"  {run.key}: {run.iterations} iterations, snapshots {list(run.snapshots)}")
        jobs = {job.key: (run, job) for run in runs for job in [self.curve_job(run)]}
        written: list[str] = []

        def keep(run: CurveRun, job, result) -> None:
            """Score and write a run's JSON; a failure is recorded, never raised (other jobs may still run)."""
            if (result is not None and not result.ok) or not job.is_complete():
                message = f"{job.key}: " + (result.message if result is not None else "did not finish")
                self.failures.append(message)
                self.say("  FAILED " + message.splitlines()[0])
                return
            try:
                written.append(str(self.write_result(run)))
            except Exception as e:  # noqa: BLE001 (an unreadable snapshot must not stop the other runs)
                self.failures.append(f"{job.key}: scoring failed: {traceback.format_exc()}")
                self.say(f"  FAILED {job.key}: scoring failed: {type(e).__name__}: {e}")

        # Each run's JSON is written as soon as its job ends, so that a study stopped later (a time
        # limit, a killed controller) keeps every finished run, not only those of a completed batch.
        submission = run_jobs([job for _, job in jobs.values()], self.cluster, self.s.workdir / "jobs",
                              say=self.say, on_finished=lambda result: keep(*jobs[result.key], result))
        for key, (run, job) in jobs.items():
            if key not in submission.results:  # complete before this call (nothing to run) or never ended
                keep(run, job, None)
        return written

    def write_result(self, run: CurveRun) -> Path:
        """Score every snapshot and write the run's JSON (the shape in the module's description)."""
        fold = run.fold_folder()
        snapshots = _read_json(fold / "snapshots.json")
        out = []
        for iterations in sorted(int(k) for k in snapshots):
            pred = run.folder / "snapshot_predictions" / f"it_{iterations}"
            evaluation = run.folder / "snapshot_evaluations" / f"it_{iterations}.json"
            self.evaluate(run, pred=pred, path=evaluation)
            cases = _read_json(evaluation)["cases"]
            info = snapshots[str(iterations)]
            out.append({"iterations": iterations, "epoch": info["epoch"], "train_seconds": info["train_seconds"],
                        "train_cpu_seconds": info.get("train_cpu_seconds"),
                        "cases": {case: {k: v for k, v in values.items() if k in METRICS}
                                  for case, values in sorted(cases.items())}})
        timing = _read_json(fold / "outcome_timing.json")
        record = {"trainer": run.trainer, "seed": run.seed, "regime": run.regime.name,
                  "plan": {"features_per_stage": list(run.regime.features_per_stage),
                           "patch_size": list(run.regime.patch_size), "batch_size": run.regime.batch_size,
                           "configuration": CONFIGURATION, "iterations": run.iterations,
                           "iterations_per_epoch": run.iterations_per_epoch, "val_iterations": run.val_iterations,
                           "n_train": self.s.n_train, "n_test": self.s.n_test, "data_seed": self.s.data_seed},
                  "commit": git_commit(), "device": self.s.device, "torch_threads": timing.get("torch_threads"),
                  "host_cpus": os.cpu_count(), "command": self.command, "snapshots": out}
        _write_json(self.result_file(run), record)
        self.say(f"  {run.key}: wrote {self.result_file(run)} (last snapshot Dice "
                 f"{sum(c['dice'] for c in out[-1]['cases'].values()) / len(out[-1]['cases']):.3f})")
        return self.result_file(run)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=BENCHMARKS, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    from outcome import available_trainers, parse_step_ratios

    from nnunet_aux.errors import InputError
    from nnunet_aux.experiment.cli import cluster_options

    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    d = QUICK if args.quick else FULL
    pick = lambda name: getattr(args, name) if getattr(args, name) is not None else d[name]  # noqa: E731
    trainers = available_trainers(args.trainers or list(QUICK_TRAINERS if args.quick else DEFAULT_TRAINERS))
    if STOCK not in trainers:
        raise SystemExit(f"{STOCK} is the reference and must be among the trainers")
    unknown = sorted(set(args.rerun) - set(trainers))
    if unknown:
        raise SystemExit(f"--rerun {' '.join(unknown)}: not among the trainers of this study ({' '.join(trainers)})")
    workdir = (args.workdir or BENCHMARKS / "out" / ("curves_quick" if args.quick else "curves")).absolute()
    results = (args.results or (workdir / "results" if args.quick else BENCHMARKS / "results" / "curves")).absolute()
    per_epoch = pick("iterations_per_epoch")
    iterations = pick("iterations")
    if min(iterations, per_epoch, pick("val_iterations")) < 1 or iterations % per_epoch:
        raise SystemExit("--iterations must be a positive multiple of --iterations-per-epoch")
    if not args.margin >= 1:
        raise SystemExit("--margin must be at least 1 (each curve must cover stock's wall time)")
    settings = Settings(regimes=(args.regime,), seeds=tuple(pick("seeds")), trainers=tuple(trainers),
                        iterations=iterations, epochs=iterations // per_epoch, val_iterations=pick("val_iterations"),
                        n_train=pick("n_train"), n_test=pick("n_test"), data_seed=args.data_seed, workdir=workdir,
                        device=args.device, num_processes=args.num_processes, verbose=args.verbose)
    cluster = cluster_options(args)
    try:
        cluster.check()
    except InputError as e:
        raise SystemExit(f"error: {e}") from None
    ratios = {**STEP_RATIOS, **dict(parse_step_ratios(args.step_ratio))}
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/curves.py", *argv])
    curves = Curves(settings, cluster, results, ratios, args.margin, per_epoch, command)
    workdir.mkdir(parents=True, exist_ok=True)
    regime = CURVE_REGIMES[args.regime]
    print(f"learning curves: regime {regime.name}, trainers {trainers}, seeds {list(settings.seeds)}, stock "
          f"{iterations} iterations; results in {results}", flush=True)
    started = time.perf_counter()
    curves.discard(regime, tuple(args.rerun))
    written = curves.run_all(regime)
    print(f"{len(written)} run(s) written in {(time.perf_counter() - started) / 60:.1f} min; "
          f"{len(curves.failures)} failed", flush=True)
    for failure in curves.failures:
        print("FAILED: " + failure, file=sys.stderr)
    return 1 if curves.failures else 0


if __name__ == "__main__":
    sys.exit(main())
