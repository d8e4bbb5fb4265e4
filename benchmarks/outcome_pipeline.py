"""The outcome benchmark's steps: data, nnU-Net planning, training, prediction, evaluation.

Every nnU-Net step is nnU-Net's own command, run as a subprocess whose ``nnUNet_raw``,
``nnUNet_preprocessed`` and ``nnUNet_results`` point into the work folder
(:func:`nnunet_aux.demo.commands.nnunet_environment`). Layout::

    <workdir>/<regime>/data_settings.json        what the data and plan were made with
    <workdir>/<regime>/nnUNet_raw/               training dataset (decomposed scales, as users have)
    <workdir>/<regime>/truth_raw/                same cases, the generator's true scales (test references)
    <workdir>/<regime>/nnUNet_preprocessed/      nnU-Net's plan + the small plan + splits
    <workdir>/<regime>/runs/seed<k>/<budget>/<trainer>/
        run_settings.json   schedule and seed;  nnUNet_results/  this run's model
        run.json            iterations, measured step time, decoders' own Dice
        predictions/        nnUNetv2_predict output (``.done`` when complete)
        evaluation.json     per-case metrics against the true scales
        train.log, predict.log

Every step is skipped when its output is complete, so a killed run continues where it stopped
(an unfinished training continues from its last checkpoint with ``--c``).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

BENCHMARKS = Path(__file__).resolve().parent
#: Folder that nnU-Net's ``nnUNet_extTrainer`` must include to find the ``*_outcome`` trainers.
TRAINER_FOLDER = BENCHMARKS / "outcome_trainers"
ENV_VAR = "NNUNET_AUX_OUTCOME"  # read by outcome_trainers/nnunet_aux_outcome_trainers.py
TIMING_FILE = "outcome_timing.json"
PLANS_NAME = "nnUNetPlans_outcome"
CONFIGURATION = "3d_fullres"
FOLD = "0"
STOCK = "nnUNetTrainer"
BUDGETS = ("equal_iterations", "equal_time")
#: Marks an equal-wall-time run that was not needed: the equal-iterations run stands for it.
REUSE_FILE = "reuse.json"


@dataclass(frozen=True)
class Regime:
    """A synthetic image regime (a preset of :mod:`nnunet_aux.synthetic.presets`) and its small plan."""

    name: str
    dataset_id: int
    dataset_name: str
    patch_size: tuple[int, int, int]
    features_per_stage: tuple[int, ...] = (16, 32, 64, 128)
    batch_size: int = 2


#: demo: 64 x 96 x 96 voxels of 1.0 x 0.8 x 0.8 mm; clinical: 32 x 96 x 96 of 2.0 x 0.8 x 0.8 mm
#: (the patch takes all 32 slices). Same U-Net and patch voxels for both.
REGIMES = {
    "demo": Regime("demo", 901, "OutcomeDemo", (32, 64, 64)),
    "clinical": Regime("clinical", 902, "OutcomeClinical", (32, 64, 64)),
}


@dataclass(frozen=True)
class Settings:
    """Everything a benchmark run depends on (see ``benchmarks/outcome.py -h``)."""

    regimes: tuple[str, ...]
    seeds: tuple[int, ...]
    trainers: tuple[str, ...]
    iterations: int
    epochs: int
    val_iterations: int
    n_train: int
    n_test: int
    data_seed: int
    workdir: Path
    device: str
    num_processes: int
    tolerance: float = 0.03
    #: step time relative to stock per trainer, fixed from a controlled measurement (``bench_trainers.py``)
    #: instead of the wall times of the (a) runs, which other load on the machine distorts
    step_ratios: tuple[tuple[str, float], ...] = ()
    #: which comparisons to run; ``("equal_time",)`` alone trains the non-stock trainers only at equal
    #: wall time (needs their ``step_ratios``; stock's N-iteration run is the reference of both)
    budgets: tuple[str, ...] = ("equal_iterations", "equal_time")
    verbose: bool = False
    command: str = ""


@dataclass
class RunSpec:
    """One training: regime, seed, budget, trainer and its schedule."""

    regime: Regime
    seed: int
    budget: str
    trainer: str
    epochs: int
    iterations_per_epoch: int
    val_iterations: int
    folder: Path = field(init=False)
    workdir: Path = field(default=Path("."), repr=False)

    def __post_init__(self) -> None:
        self.folder = self.workdir / self.regime.name / "runs" / f"seed{self.seed}" / self.budget / self.trainer

    @property
    def iterations(self) -> int:
        return self.epochs * self.iterations_per_epoch

    def schedule(self) -> dict[str, int]:
        """The JSON of :data:`ENV_VAR` for this run."""
        return {"num_epochs": self.epochs, "num_iterations_per_epoch": self.iterations_per_epoch,
                "num_val_iterations_per_epoch": self.val_iterations, "seed": self.seed}

    def fold_folder(self) -> Path:
        return (self.folder / "nnUNet_results" / dataset_folder_name(self.regime)
                / f"{self.trainer}_outcome__{PLANS_NAME}__{CONFIGURATION}" / f"fold_{FOLD}")


def dataset_folder_name(regime: Regime) -> str:
    return f"Dataset{regime.dataset_id:03d}_{regime.dataset_name}"


def _write_json(path: Path, content: Any) -> None:
    """Write JSON atomically (a killed run never leaves half a file that looks finished)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(content, f, indent=1, allow_nan=True)
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class Benchmark:
    """Runs the steps; :meth:`say` prints progress lines, nnU-Net's output goes to the logs."""

    def __init__(self, settings: Settings, cluster: Any = None):
        from nnunet_aux.experiment.cluster import ClusterOptions

        self.s = settings
        #: where the trainings run (:mod:`nnunet_aux.experiment.cluster`; default: here, one at a time)
        self.cluster = cluster or ClusterOptions()
        self.start = time.perf_counter()
        self.failures: list[str] = []

    def say(self, text: str) -> None:
        minutes = (time.perf_counter() - self.start) / 60
        print(f"[{time.strftime('%H:%M:%S')} +{minutes:5.1f} min] {text}", flush=True)

    def env(self, regime: Regime, results: Path | None = None, schedule: dict | None = None) -> dict[str, str]:
        """nnU-Net's environment for this regime (and run)."""
        from nnunet_aux.demo.commands import nnunet_environment
        from nnunet_aux.training import trainer_path

        extra = {"nnUNet_def_n_proc": "1", "nnUNet_compile": os.environ.get("nnUNet_compile", "false")}
        if self.s.device == "cpu":
            # One augmentation worker beside the training process; more only compete for the cores.
            extra["nnUNet_n_proc_DA"] = os.environ.get("nnUNet_n_proc_DA", "1")
        env = nnunet_environment(self.s.workdir / regime.name, [str(TRAINER_FOLDER), trainer_path()], extra)
        if results is not None:
            env["nnUNet_results"] = str(results)
        env[ENV_VAR] = json.dumps(schedule) if schedule else ""
        return env

    def nnunet(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        from nnunet_aux.demo.commands import nnunet_executable, run_command

        run_command([nnunet_executable(name), *args], env, log, stream=sys.stdout if self.s.verbose else None)

    # ------------------------------------------------------------------ data and plan
    def raw_folder(self, regime: Regime, truth: bool = False) -> Path:
        return self.s.workdir / regime.name / ("truth_raw" if truth else "nnUNet_raw") / dataset_folder_name(regime)

    def preprocessed_folder(self, regime: Regime) -> Path:
        return self.s.workdir / regime.name / "nnUNet_preprocessed" / dataset_folder_name(regime)

    def data_settings(self, regime: Regime) -> dict[str, Any]:
        return {"preset": regime.name, "n_train": self.s.n_train, "n_test": self.s.n_test,
                "data_seed": self.s.data_seed, "regime": asdict(regime)}

    def prepare_regime(self, regime: Regime) -> None:
        """Datasets, nnU-Net plan and preprocessing, small plan and split (skipped when done)."""
        record = self.s.workdir / regime.name / "data_settings.json"
        wanted = json.loads(json.dumps(self.data_settings(regime)))
        if record.is_file():
            if _read_json(record) != wanted:
                raise SystemExit(f"{record} was made with other settings ({_read_json(record)}); "
                                 "use another --workdir (or delete that regime's folder)")
        if not (self.raw_folder(regime) / "dataset.json").is_file() or \
                not (self.raw_folder(regime, truth=True) / "dataset.json").is_file():
            self.say(f"[{regime.name}] writing {self.s.n_train} training + {self.s.n_test} test cases "
                     f"(preset {regime.name}) and their true-scale references")
            self.write_datasets(regime)
        _write_json(record, wanted)
        if not (self.preprocessed_folder(regime) / f"{PLANS_NAME}.json").is_file():
            self.say(f"[{regime.name}] nnUNetv2_plan_and_preprocess, small plan "
                     f"{list(regime.features_per_stage)} patch {list(regime.patch_size)} batch {regime.batch_size}")
            self.plan_and_preprocess(regime)

    def write_datasets(self, regime: Regime) -> None:
        """Training dataset (decomposed scales) and the same cases with the generator's true scales.

        Both calls use the same data seed, so the cases are identical; only the scale labels
        differ. The test images of the two are compared voxel by voxel.
        """
        from nnunet_aux.conversion import write_synthetic_dataset

        common = dict(dataset_id=regime.dataset_id, n_train=self.s.n_train, n_test=self.s.n_test,
                      seed=self.s.data_seed, n_scales=3, num_processes=self.s.num_processes, overwrite=True,
                      name=regime.dataset_name, preset=regime.name, progress=self.s.verbose)
        write_synthetic_dataset(raw_root=self.raw_folder(regime).parent, true_scales=False, **common)
        write_synthetic_dataset(raw_root=self.raw_folder(regime, truth=True).parent, true_scales=True, **common)
        self.check_same_test_images(regime)

    def check_same_test_images(self, regime: Regime) -> None:
        import numpy as np
        import SimpleITK as sitk

        for image in sorted((self.raw_folder(regime) / "imagesTs").glob("*.nii.gz")):
            other = self.raw_folder(regime, truth=True) / "imagesTs" / image.name
            a, b = sitk.ReadImage(str(image)), sitk.ReadImage(str(other))
            if not np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b)) or \
                    a.GetSpacing() != b.GetSpacing():
                raise RuntimeError(f"{image} and {other} differ: the true-scale references do not match")

    def case_ids(self, regime: Regime, images: str) -> list[str]:
        suffix = "_0000.nii.gz"
        return sorted(p.name[:-len(suffix)] for p in (self.raw_folder(regime) / images).glob(f"*{suffix}"))

    def plan_and_preprocess(self, regime: Regime) -> None:
        from nnunet_aux.demo.plans import write_small_plans, write_splits

        self.nnunet("nnUNetv2_plan_and_preprocess",
                    ["-d", str(regime.dataset_id), "-c", CONFIGURATION, "-np", str(self.s.num_processes)],
                    self.env(regime), self.s.workdir / regime.name / "plan_and_preprocess.log")
        cases = self.case_ids(regime, "imagesTr")
        # The last training case is fold 0's only validation case: nnU-Net's final validation stays cheap.
        write_splits(self.preprocessed_folder(regime), cases[:-1], cases[-1:])
        write_small_plans(self.preprocessed_folder(regime), PLANS_NAME, regime.features_per_stage,
                          patch_size=regime.patch_size, batch_size=regime.batch_size, configuration=CONFIGURATION)

    # ------------------------------------------------------------------ one run
    def check_run_settings(self, run: RunSpec) -> None:
        record = run.folder / "run_settings.json"
        if record.is_file() and _read_json(record) != run.schedule():
            raise SystemExit(f"{record} holds another schedule ({_read_json(record)}, now {run.schedule()}); "
                             "use another --workdir (or delete that run's folder)")
        _write_json(record, run.schedule())

    def job(self, run: RunSpec):
        """The run's training and test-set prediction as one job of :mod:`nnunet_aux.experiment.jobs`.

        The job carries nnU-Net's variables, the run's schedule and seed (:data:`ENV_VAR`) and
        whatever differs from this process's environment; the rest comes from where it runs.
        Training continues from the last checkpoint (``--c``) after an interruption; the
        prediction (``--disable_tta``: CPU time) is redone unless marked complete.
        """
        from nnunet_aux.experiment.jobs import FollowUp, TrainingJob
        from nnunet_aux.experiment.process import nnunet_command

        env = self.env(run.regime, run.folder / "nnUNet_results", run.schedule())
        env = {k: v for k, v in env.items() if k.startswith("nnUNet_") or k in (ENV_VAR, "PYTHONUNBUFFERED")
               or os.environ.get(k) != v}
        env.update(self.cluster.job_environment())
        out = run.folder / "predictions"
        predict = [*nnunet_command("nnUNetv2_predict"), "-i", str(self.raw_folder(run.regime) / "imagesTs"),
                   "-o", str(out), "-d", str(run.regime.dataset_id), "-c", CONFIGURATION, "-f", FOLD,
                   "-p", PLANS_NAME, "-tr", f"{run.trainer}_outcome", "-device", self.s.device, "-npp", "1",
                   "-nps", "1", "--disable_tta"]
        key = f"{run.regime.name}/seed{run.seed}/{run.budget}/{run.trainer}"
        return TrainingJob(key, str(run.regime.dataset_id), CONFIGURATION, FOLD, f"{run.trainer}_outcome",
                           PLANS_NAME, self.s.device, str(run.fold_folder()), str(run.folder / "train.log"), env,
                           nnunet_command("nnUNetv2_train"), seed=run.seed, num_gpus=self.cluster.num_gpus,
                           follow_ups=(FollowUp("predict", tuple(predict), str(run.folder / "predict.log"),
                                                str(out / ".done"), str(out)),),
                           echo=self.s.verbose)

    def record_run(self, run: RunSpec) -> dict[str, Any]:
        """``run.json``: schedule, measured step time, decoders' own Dice (read once, after training)."""
        path = run.folder / "run.json"
        if path.is_file():
            return _read_json(path)
        fold = run.fold_folder()
        timing = _read_json(fold / TIMING_FILE)["epochs"]
        per_iteration = [e["train_s"] / e["iterations"] for e in timing.values()]
        info = {"regime": run.regime.name, "seed": run.seed, "budget": run.budget, "trainer": run.trainer,
                **run.schedule(), "iterations": run.iterations,
                "step_s": statistics.median(per_iteration), "step_s_per_epoch": per_iteration,
                "step_cpu_s": statistics.median(e.get("train_cpu_s", float("nan")) / e["iterations"]
                                                for e in timing.values()),
                "val_s_per_epoch": [e["val_s"] for e in timing.values()],
                **checkpoint_logging(fold / "checkpoint_final.pth")}
        _write_json(path, info)
        return info

    def evaluate(self, run: RunSpec, pred: Path | None = None, path: Path | None = None) -> None:
        """Score the predicted vessel region against the generator's true scales (default: the run's
        ``predictions/`` into ``evaluation.json``)."""
        from nnunet_aux.evaluation import LabelSpec, evaluate_folders, labels_from_dataset_json

        path = path or run.folder / "evaluation.json"
        if path.is_file():
            return
        pred = pred or run.folder / "predictions"
        truth = self.raw_folder(run.regime, truth=True)
        # Prediction values of the vessel region from the dataset.json nnU-Net predicted with
        # (regions_class_order decides them); reference values and scales from the truth dataset.
        predicted = next(s for s in labels_from_dataset_json(pred / "dataset.json") if s.scales)
        reference = next(s for s in labels_from_dataset_json(truth / "dataset.json") if s.scales)
        spec = LabelSpec("vessel", reference.reference_values, predicted.prediction_values, reference.scales)
        summary = evaluate_folders(truth / "labelsTs", pred, None, labels=[spec],
                                   num_processes=self.s.num_processes, progress=False)
        _write_json(path, {"label": spec.to_json(), "cases": {c["case"]: flat_metrics(c["metrics"]["vessel"])
                                                                for c in summary["metric_per_case"]}})

    def do_runs(self, runs: list[RunSpec]) -> dict[str, dict[str, Any] | None]:
        """Train and predict every run as one job each (:func:`nnunet_aux.experiment.cluster.run_jobs`),
        then record and evaluate them here; per run key its info, None (and a failure noted) when it failed."""
        from nnunet_aux.experiment.cluster import run_jobs

        for run in runs:
            self.check_run_settings(run)
        jobs = {job.key: (run, job) for run in runs for job in [self.job(run)]}
        for key, (run, job) in jobs.items():
            if not job.is_complete():
                self.say(f"  {key}: {run.iterations} iterations ({run.epochs} epochs x {run.iterations_per_epoch}), "
                         f"log {run.folder / 'train.log'}")
        submission = run_jobs([job for _, job in jobs.values()], self.cluster, self.s.workdir / "jobs",
                              say=self.say)
        infos: dict[str, dict[str, Any] | None] = {}
        for key, (run, job) in jobs.items():
            result = submission.results.get(key)
            if (result is not None and not result.ok) or not job.is_complete():
                message = f"{key}: " + (result.message if result is not None else "did not finish")
                self.failures.append(message)
                self.say("  FAILED " + message.splitlines()[0] + f" (log in {run.folder})")
                infos[key] = None
                continue
            info = self.record_run(run)
            self.evaluate(run)
            scores = _read_json(run.folder / "evaluation.json")["cases"]
            dice = statistics.fmean(c["dice"] for c in scores.values())
            self.say(f"  {run.trainer}, seed {run.seed}: step {info['step_s']:.2f} s, test Dice {dice:.3f}")
            infos[key] = info
        return infos

    # ------------------------------------------------------------------ the whole benchmark
    def run_regime(self, regime: Regime) -> None:
        """(a) every seed's equal-iterations runs as one batch of jobs, then (b) the equal-wall-time runs."""
        from outcome_stats import split_iterations, wall_time_iterations

        self.prepare_regime(regime)
        epochs, ipe = split_iterations(self.s.iterations, self.s.epochs)
        self.say(f"[{regime.name}] (a) equal iterations: {epochs * ipe} each, seeds {list(self.s.seeds)}")
        runs_a = [RunSpec(regime, seed, "equal_iterations", trainer, epochs, ipe, self.s.val_iterations,
                          workdir=self.s.workdir)
                  for seed in self.s.seeds for trainer in self.s.trainers
                  if trainer == STOCK or "equal_iterations" in self.s.budgets]  # else its step ratio is given
        infos = {(r.seed, r.trainer): info for r, info in zip(runs_a, self.do_runs(runs_a).values())}
        if "equal_time" not in self.s.budgets:
            return
        fixed = dict(self.s.step_ratios)
        runs_b = []
        for seed in self.s.seeds:
            stock = infos.get((seed, STOCK))
            if stock is None:
                self.say(f"[{regime.name}] seed {seed}: no stock run, so no equal-wall-time runs")
                continue
            self.say(f"[{regime.name}] seed {seed}, (b) equal wall time (stock step {stock['step_s']:.2f} s)")
            for trainer in self.s.trainers:
                info = infos.get((seed, trainer), {})
                if trainer == STOCK or (info is None and trainer not in fixed):
                    continue
                ratio = fixed.get(trainer) or info["step_s"] / stock["step_s"]
                n = wall_time_iterations(epochs * ipe, 1.0, ratio, self.s.tolerance)
                source = "given" if trainer in fixed else "measured"
                if n is None:
                    self.say(f"  {trainer}: step time ({source}) within {self.s.tolerance:.0%} of stock, "
                             f"(a) stands for (b)")
                    reuse = RunSpec(regime, seed, "equal_time", trainer, epochs, ipe, self.s.val_iterations,
                                    workdir=self.s.workdir)
                    _write_json(reuse.folder / REUSE_FILE, {"step_ratio": ratio, "step_ratio_source": source})
                    continue
                self.say(f"  {trainer}: step {ratio:.3f} x stock ({source}): {n} iterations")
                e_b, ipe_b = split_iterations(n, self.s.epochs)
                runs_b.append(RunSpec(regime, seed, "equal_time", trainer, e_b, ipe_b, self.s.val_iterations,
                                      workdir=self.s.workdir))
        if runs_b:
            self.do_runs(runs_b)


def checkpoint_logging(checkpoint: Path) -> dict[str, Any]:
    """Last epoch's values of the decoders' own Dice (``val_dice_*``) and nnU-Net's pseudo Dice."""
    import torch

    logging = torch.load(checkpoint, map_location="cpu", weights_only=False)["logging"]
    decoders = {key[len("val_dice_"):]: float(values[-1]) for key, values in logging.items()
                if key.startswith("val_dice_") and values}
    pseudo = logging.get("mean_fg_dice") or [float("nan")]
    return {"decoder_dice": decoders, "pseudo_dice": float(pseudo[-1])}


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float | None]:
    """One case's vessel metrics as flat keys: dice, cldice, hd95, ..., recall_<scale>, dice_<scale>."""
    out = {key: metrics[key] for key in ("dice", "cldice", "hd95", "jaccard", "assd", "n_ref", "n_pred")}
    for scale, values in metrics.get("scales", {}).items():
        out[f"recall_{scale}"] = values["recall"]
        out[f"dice_{scale}"] = values["dice"]
    return out


def collect_runs(workdir: Path, regimes: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every finished run under ``workdir`` (run.json and evaluation.json), with its per-case metrics."""
    runs = []
    for regime in regimes:
        for info_file in sorted((workdir / regime / "runs").glob("seed*/*/*/run.json")):
            evaluation = info_file.parent / "evaluation.json"
            if evaluation.is_file():
                runs.append({**_read_json(info_file), "cases": _read_json(evaluation)["cases"]})
        for reuse in sorted((workdir / regime / "runs").glob(f"seed*/equal_time/*/{REUSE_FILE}")):
            # the trainer's equal-iterations run, counted for the equal-wall-time budget too
            own = [r for r in runs if r["regime"] == regime and r["budget"] == "equal_iterations"
                   and r["seed"] == int(reuse.parts[-4][len("seed"):]) and r["trainer"] == reuse.parts[-2]]
            runs += [{**r, "budget": "equal_time", "reused": True} for r in own]
    return runs


def estimate_seconds(s: Settings, step_guess: Callable[[str], float]) -> tuple[int, float]:
    """(number of trainings, rough seconds) before anything is measured.

    ``step_guess(trainer)`` is a guessed seconds per iteration. Per training: its iterations,
    its validation iterations (about half a step each), about 60 s of nnU-Net start-up and
    final validation (no mirroring), and about 40 s + 3 s per test case of prediction and
    evaluation (guesses for an idle 2-core CPU; a loaded machine is many times slower). The
    equal-wall-time runs each cost about the stock run's training time.
    """
    n_regimes, n_seeds = len(s.regimes), len(s.seeds)
    non_stock = [t for t in s.trainers if t != STOCK]
    per_run_overhead = (60 if s.device == "cpu" else 30) + 40 + 3 * s.n_test
    seconds = 0.0
    run_a = [t for t in s.trainers if t == STOCK or "equal_iterations" in s.budgets]
    for trainer in run_a:
        seconds += s.iterations * step_guess(trainer) + s.epochs * s.val_iterations * 0.5 * step_guess(trainer)
        seconds += per_run_overhead
    n_b = len(non_stock) if STOCK in s.trainers and "equal_time" in s.budgets else 0
    seconds += n_b * (s.iterations * step_guess(STOCK) + per_run_overhead)
    trainings = n_regimes * n_seeds * (len(run_a) + n_b)
    return trainings, seconds * n_regimes * n_seeds + n_regimes * 120
