"""The end-to-end demo: synthetic data, nnU-Net planning, training, prediction, evaluation, report.

Every nnU-Net step runs through nnU-Net's own commands (``nnUNetv2_plan_and_preprocess``,
``nnUNetv2_train``, ``nnUNetv2_predict``) as subprocesses whose ``nnUNet_raw``,
``nnUNet_preprocessed`` and ``nnUNet_results`` point into the demo's work folder, so the
user's own nnU-Net folders are never touched. The work folder records the settings and
the finished steps in ``demo_state.json``: a rerun with ``resume`` skips finished steps
(an unfinished training continues from its last checkpoint with ``--c``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

import numpy as np

from ..dataset_format import write_json_atomic
from ..errors import InputError
from .commands import CommandFailedError, nnunet_environment, nnunet_executable, run_command

#: File in the work folder that marks it as a demo folder and records its progress.
STATE_FILE = "demo_state.json"
#: What the demo writes into its work folder (removed by ``overwrite``).
DEMO_ENTRIES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "predictions", "evaluation", "logs",
                "report.md", "overview.png", "scale_recall.png", STATE_FILE)
PLANS_NAME = "nnUNetPlans_demo"
CONFIGURATION = "3d_fullres"
FOLD = "0"
DATASET_NAME = "SyntheticVessels"


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo's dataset, network and training.

    Attributes
    ----------
    dataset_id : int
        nnU-Net dataset ID (inside the work folder, so any free ID will do).
    n_train : int
        Cases in ``imagesTr``; the last ``n_val`` of them are fold 0's validation cases.
    n_val : int
        Validation cases. nnU-Net predicts them with test-time mirroring after training,
        which is slow on a CPU; keep this small.
    n_test : int
        Cases in ``imagesTs`` (predicted and evaluated).
    shape : tuple of 3 int
        Volume shape ``(nz, ny, nx)``.
    spacing : tuple of 3 float
        Voxel size ``(sz, sy, sx)`` in mm.
    seed : int
        Seed of the synthetic data.
    features_per_stage : tuple of int
        Feature maps per U-Net stage (its length is the number of stages).
    patch_size : tuple of 3 int
        Training patch size.
    batch_size : int
        Patches per training step.
    num_epochs, iterations_per_epoch, val_iterations_per_epoch : int
        Training length (nnU-Net's ``num_epochs``, ``num_iterations_per_epoch``,
        ``num_val_iterations_per_epoch``).
    """

    dataset_id: int = 880
    n_train: int = 9
    n_val: int = 1
    n_test: int = 3
    shape: tuple[int, int, int] = (48, 96, 96)
    spacing: tuple[float, float, float] = (1.0, 0.8, 0.8)
    seed: int = 0
    features_per_stage: tuple[int, ...] = (16, 32, 64, 128)
    patch_size: tuple[int, int, int] = (32, 64, 64)
    batch_size: int = 2
    num_epochs: int = 10
    iterations_per_epoch: int = 12
    val_iterations_per_epoch: int = 2

    def __post_init__(self) -> None:
        if not 1 <= self.dataset_id <= 999:
            raise InputError(f"dataset_id must be in 1..999, got {self.dataset_id}")
        if self.n_val < 1 or self.n_train - self.n_val < 1:
            raise InputError(f"need n_val >= 1 and n_train > n_val, got n_train={self.n_train}, n_val={self.n_val}")
        if self.n_test < 1:
            raise InputError(f"need n_test >= 1, got {self.n_test}")
        for name in ("shape", "patch_size", "spacing"):
            if len(getattr(self, name)) != 3 or min(getattr(self, name)) <= 0:
                raise InputError(f"{name} needs 3 positive values (z, y, x), got {getattr(self, name)}")
        for name in ("batch_size", "num_epochs", "iterations_per_epoch", "val_iterations_per_epoch"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if len(self.features_per_stage) < 2 or min(self.features_per_stage) < 1:
            raise InputError(f"features_per_stage needs at least 2 positive values, got {self.features_per_stage}")

    def to_json(self) -> dict[str, Any]:
        """The settings as plain JSON values (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def schedule(self) -> dict[str, int]:
        """The training length as nnU-Net's trainer attributes, for :mod:`nnunet_aux.training.schedule`."""
        return {"num_epochs": self.num_epochs, "num_iterations_per_epoch": self.iterations_per_epoch,
                "num_val_iterations_per_epoch": self.val_iterations_per_epoch}


#: A reduced run for tests and a first try (a few minutes on two CPU cores); it learns little.
QUICK_SETTINGS = DemoSettings(n_train=3, n_val=1, n_test=1, shape=(24, 48, 48), features_per_stage=(8, 16, 32),
                              patch_size=(16, 32, 32), num_epochs=1, iterations_per_epoch=3,
                              val_iterations_per_epoch=1)


@dataclass(frozen=True)
class Method:
    """A compared method: a key for folder names, a title for the report, an nnU-Net trainer."""

    key: str
    title: str
    trainer: str


METHODS = (
    Method("baseline", "nnU-Net binary baseline", "nnUNetTrainer_demo"),
    Method("scale_contrastive", "ScaleContrastiveLite (Sadikine et al.)", "nnUNetTrainerScaleContrastiveLite_demo"),
)


@dataclass
class DemoResult:
    """What a demo run produced."""

    report: Path
    heading: list[str]
    rows: list[list[str]]
    summaries: dict[str, dict[str, Any]]
    timings: dict[str, float]


def resolve_device(device: str) -> str:
    """``'auto'`` becomes ``'cuda'`` when torch sees a GPU, else ``'cpu'``.

    Examples
    --------
    >>> resolve_device("cpu")
    'cpu'
    """
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cpu":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise InputError("--device cuda was asked for, but torch sees no CUDA GPU")
    return "cpu"


def _prepare_workdir(workdir: Path, settings: DemoSettings, resume: bool, overwrite: bool) -> dict[str, Any]:
    """The run's state: a fresh one, or the recorded one when resuming."""
    state_file = workdir / STATE_FILE
    fresh = {"settings": settings.to_json(), "finished": {}}
    if resume and overwrite:
        raise InputError("resume and overwrite exclude each other")
    if workdir.exists() and not workdir.is_dir():
        raise InputError(f"{workdir} is a file, not a folder")
    if not workdir.exists() or not any(workdir.iterdir()):
        workdir.mkdir(parents=True, exist_ok=True)
        return fresh
    if not state_file.is_file():
        raise InputError(f"{workdir} is not empty and holds no {STATE_FILE}, so it is not a demo folder; "
                         "choose another folder with -o")
    if overwrite:
        # Only what the demo itself writes goes; anything else the user put there stays.
        for name in DEMO_ENTRIES:
            path = workdir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        return fresh
    if not resume:
        raise InputError(f"{workdir} holds an earlier demo run; use --resume to continue it or --overwrite "
                         "to start over")
    with open(state_file, encoding="utf-8") as f:
        state = json.load(f)
    if state.get("settings") != settings.to_json():
        raise InputError(f"{workdir} was run with other settings ({state.get('settings')}); "
                         "use --overwrite to start over with these")
    return state


class _Demo:
    """One run; each step is a method, called in :meth:`run` in order."""

    def __init__(self, workdir: Path, settings: DemoSettings, device: str, num_processes: int,
                 stream: TextIO | None, state: dict[str, Any]):
        from ..training import trainer_path
        from ..training.schedule import schedule_environment
        from .trainers import demo_trainer_path

        self.workdir, self.settings, self.device, self.stream, self.state = workdir, settings, device, stream, state
        self.num_processes = num_processes
        self.raw = workdir / "nnUNet_raw"
        self.dataset_folder = self.raw / f"Dataset{settings.dataset_id:03d}_{DATASET_NAME}"
        self.preprocessed = workdir / "nnUNet_preprocessed" / self.dataset_folder.name
        self.logs = workdir / "logs"
        # nnU-Net's own pools (export and metrics after training) handle one validation case:
        # one worker, as each spawned worker spends seconds importing nnU-Net.
        extra = {"nnUNet_def_n_proc": "1"}
        if device == "cpu":
            # One augmentation worker beside the training process; more only compete for the cores.
            extra["nnUNet_n_proc_DA"] = os.environ.get("nnUNet_n_proc_DA", "1")
        # torch.compile costs minutes of start-up, more than this short training gains.
        extra["nnUNet_compile"] = os.environ.get("nnUNet_compile", "false")
        # The demo trainers' length: the one override of the package (nnunet_aux.training.schedule).
        extra.update(schedule_environment(settings.schedule()))
        self.env = nnunet_environment(workdir, [demo_trainer_path(), trainer_path()], extra)
        # Test-time mirroring multiplies CPU prediction time by 8.
        self.disable_tta = device == "cpu"

    def say(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(text + "\n")
            self.stream.flush()

    def nnunet(self, name: str, *args: str, log: str) -> None:
        command = [nnunet_executable(name), *args]
        self.say("$ " + " ".join([name, *args]))
        run_command(command, self.env, self.logs / f"{log}.log", stream=self.stream)

    # ---------------------------------------------------------------- steps
    def write_dataset(self) -> None:
        from ..conversion import write_synthetic_dataset

        s = self.settings
        write_synthetic_dataset(s.dataset_id, s.n_train, s.n_test, shape=s.shape, spacing=s.spacing, seed=s.seed,
                                n_scales=3, num_processes=self.num_processes, overwrite=True, raw_root=self.raw,
                                name=DATASET_NAME, progress=self.stream is not None)

    def plan_and_preprocess(self) -> None:
        from .plans import write_small_plans, write_splits

        s = self.settings
        self.nnunet("nnUNetv2_plan_and_preprocess", "-d", str(s.dataset_id), "-c", CONFIGURATION,
                    "-np", str(self.num_processes), log="plan_and_preprocess")
        plans = write_small_plans(self.preprocessed, PLANS_NAME, s.features_per_stage, patch_size=s.patch_size,
                                  batch_size=s.batch_size, configuration=CONFIGURATION)
        cases = self.case_ids("imagesTr")
        splits = write_splits(self.preprocessed, cases[:-s.n_val], cases[-s.n_val:])
        self.say(f"wrote {plans} (U-Net {list(s.features_per_stage)}, patch {list(s.patch_size)}) and {splits}")

    def train(self, method: Method) -> None:
        """One job of :mod:`nnunet_aux.experiment.jobs`, run here: an interrupted training continues (``--c``)."""
        from ..experiment.jobs import TrainingJob
        from ..experiment.process import nnunet_command

        job = TrainingJob(f"demo/{method.key}", str(self.settings.dataset_id), CONFIGURATION, FOLD, method.trainer,
                          PLANS_NAME, self.device, str(self.results_folder(method)),
                          str(self.logs / f"train_{method.key}.log"), self.env, nnunet_command("nnUNetv2_train"),
                          echo=self.stream is not None)
        result = job()
        if not result.ok:
            raise CommandFailedError(f"training {method.trainer} failed ({result.failed_step}): {result.message}")

    def predict(self, method: Method) -> None:
        args = ["-i", str(self.dataset_folder / "imagesTs"), "-o", str(self.prediction_folder(method)),
                "-d", str(self.settings.dataset_id), "-c", CONFIGURATION, "-f", FOLD, "-p", PLANS_NAME,
                "-tr", method.trainer, "-device", self.device, "-npp", "1", "-nps", "1"]
        if self.disable_tta:
            args.append("--disable_tta")
        self.nnunet("nnUNetv2_predict", *args, log=f"predict_{method.key}")

    def evaluate(self, method: Method) -> None:
        from ..evaluation import evaluate_folders

        evaluate_folders(self.dataset_folder / "labelsTs", self.prediction_folder(method),
                         self.evaluation_file(method), dataset_json=self.dataset_folder / "dataset.json",
                         num_processes=self.num_processes, progress=self.stream is not None)

    def report(self) -> DemoResult:
        from .figures import overview_figure, scale_recall_figure
        from .report import results_table, scale_recalls, write_report

        summaries = {}
        for method in METHODS:
            with open(self.evaluation_file(method), encoding="utf-8") as f:
                summaries[method.title] = json.load(f)
        heading, rows = results_table(summaries)
        self.draw_overview(overview_figure)
        scale_recall_figure(scale_recalls(summaries), self.workdir / "scale_recall.png")
        case = self.case_ids("imagesTs")[0]
        timings = dict(self.state["finished"])
        notes = [
            f"Device: {self.device}. Test-time mirroring: {'off (CPU)' if self.disable_tta else 'on'} for the "
            "test cases; nnU-Net's final validation after training uses it in any case.",
            f"Pictures: test case `{case}`; in the prediction columns, vessel voxels found are coloured by their "
            "reference scale, false positives and missed vessel voxels have their own colours.",
            "Per-case metrics: `evaluation/<method>.json` and `.csv`; nnU-Net logs: `logs/`, "
            "`nnUNet_results/`.",
        ]
        figures = {"Axial slice (top) and projection along z (bottom): image, reference scales, predictions":
                   "overview.png", "Recall per vessel scale": "scale_recall.png"}
        settings = {**self.settings.to_json(), "device": self.device}
        report = self.workdir / "report.md"
        write_report(report, heading, rows, figures=figures, settings=settings, timings=timings, notes=notes)
        return DemoResult(report, heading, rows, summaries, timings)

    def draw_overview(self, overview_figure: Callable[..., None]) -> None:
        import SimpleITK as sitk

        from ..evaluation import labels_from_dataset_json

        vessel = next(s for s in labels_from_dataset_json(self.dataset_folder / "dataset.json") if s.scales)
        case = self.case_ids("imagesTs")[0]
        image_file = self.dataset_folder / "imagesTs" / f"{case}_0000.nii.gz"
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(image_file)))
        spacing = sitk.ReadImage(str(image_file)).GetSpacing()[::-1]
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(self.dataset_folder / "labelsTs" / f"{case}.nii.gz")))
        reference_scale = np.zeros(reference.shape, dtype=np.uint8)
        for index, value in enumerate(vessel.scales.values(), start=1):
            reference_scale[reference == value] = index
        predictions = {}
        for method in METHODS:
            predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(self.prediction_folder(method) / f"{case}.nii.gz")))
            predictions[method.title] = np.isin(predicted, vessel.prediction_values)
        overview_figure(image, reference_scale, predictions, self.workdir / "overview.png", spacing=spacing,
                        scale_names=tuple(vessel.scales))

    # ---------------------------------------------------------------- paths
    def case_ids(self, images: str) -> list[str]:
        suffix = "_0000.nii.gz"
        return sorted(p.name[:-len(suffix)] for p in (self.dataset_folder / images).glob(f"*{suffix}"))

    def results_folder(self, method: Method) -> Path:
        return (self.workdir / "nnUNet_results" / self.dataset_folder.name
                / f"{method.trainer}__{PLANS_NAME}__{CONFIGURATION}" / f"fold_{FOLD}")

    def prediction_folder(self, method: Method) -> Path:
        return self.workdir / "predictions" / method.key

    def evaluation_file(self, method: Method) -> Path:
        return self.workdir / "evaluation" / f"{method.key}.json"

    # ---------------------------------------------------------------- driver
    def steps(self) -> list[tuple[str, str, Callable[[], Any]]]:
        steps = [("dataset", "synthetic scale-decomposed dataset", self.write_dataset),
                 ("preprocess", "nnU-Net plan and preprocess, small demo plan", self.plan_and_preprocess)]
        for m in METHODS:
            steps.append((f"train_{m.key}", f"train {m.title} ({m.trainer})", lambda m=m: self.train(m)))
        for m in METHODS:
            steps.append((f"predict_{m.key}", f"predict the test cases with {m.title}", lambda m=m: self.predict(m)))
            steps.append((f"evaluate_{m.key}", f"evaluate {m.title}", lambda m=m: self.evaluate(m)))
        steps.append(("report", "report and pictures", self.report))
        return steps

    def run(self) -> DemoResult:
        steps = self.steps()
        result = None
        for number, (name, title, action) in enumerate(steps, start=1):
            if name in self.state["finished"]:
                self.say(f"[{number}/{len(steps)}] {title}: done in an earlier run, skipped")
                continue
            self.say(f"\n===== [{number}/{len(steps)}] {title} =====")
            start = time.perf_counter()
            result = action()
            seconds = time.perf_counter() - start
            if name != "report":  # the report is always redrawn, with the final timings
                self.state["finished"][name] = round(seconds, 1)
                write_json_atomic(self.state, self.workdir / STATE_FILE)  # a kill leaves the old state or the new
            self.say(f"----- {title}: {seconds:.0f} s")
        assert isinstance(result, DemoResult)
        return result


def run_demo(
    workdir: str | os.PathLike = "nnunet_aux_demo",
    settings: DemoSettings = DemoSettings(),
    *,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    num_processes: int | None = None,
    stream: TextIO | None = sys.stdout,
) -> DemoResult:
    """Run the whole demo in ``workdir`` and write ``workdir/report.md``.

    Steps: write a synthetic scale-decomposed dataset; ``nnUNetv2_plan_and_preprocess``;
    a small copy of nnU-Net's plan (:func:`nnunet_aux.demo.plans.write_small_plans`)
    and a one-fold split; ``nnUNetv2_train`` of the binary baseline and of
    ``nnUNetTrainerScaleContrastiveLite`` (:mod:`nnunet_aux.demo.trainers`, their length from
    :data:`~nnunet_aux.training.schedule.SCHEDULE_ENV_VAR`, which the demo sets);
    ``nnUNetv2_predict`` of the test cases;
    :func:`nnunet_aux.evaluation.evaluate_folders`; the report with a results table and
    pictures.

    Parameters
    ----------
    workdir : path-like, optional
        Work folder; it receives ``nnUNet_raw``, ``nnUNet_preprocessed``,
        ``nnUNet_results``, predictions, evaluations, logs and the report.
    settings : DemoSettings, optional
        Sizes; :data:`QUICK_SETTINGS` for a reduced run.
    device : {'auto', 'cpu', 'cuda'}, optional
        ``'auto'`` uses CUDA when torch sees a GPU.
    resume : bool, optional
        Continue an earlier run in ``workdir`` (same settings), skipping finished steps.
    overwrite : bool, optional
        Remove an earlier run's files from ``workdir`` first.
    num_processes : int, optional
        Worker processes for data writing, preprocessing and evaluation; default
        ``min(4, os.cpu_count())``.
    stream : text stream or None, optional
        Where step headers and the commands' output go; None runs silently.

    Returns
    -------
    result : DemoResult
        Report path, results table, evaluation summaries and wall time per step.

    Raises
    ------
    nnunet_aux.errors.InputError
        ``workdir`` is not empty and not an earlier demo run, or holds one and neither
        ``resume`` nor ``overwrite`` is given, or bad settings.
    nnunet_aux.demo.commands.CommandFailedError
        An nnU-Net command failed; the message holds its last lines and its log file.
    """
    workdir = Path(workdir).absolute()
    device = resolve_device(device)
    num_processes = min(4, os.cpu_count() or 1) if num_processes is None else int(num_processes)
    if num_processes < 1:
        raise InputError(f"num_processes must be at least 1, got {num_processes}")
    state = _prepare_workdir(workdir, settings, resume, overwrite)
    return _Demo(workdir, settings, device, num_processes, stream, state).run()


def table_text(heading: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The results table as aligned plain text, for the terminal.

    Examples
    --------
    >>> print(table_text(["a", "bb"], [["100", "2"]]))
    a    bb
    100  2
    """
    widths = [max(len(str(c)) for c in column) for column in zip(heading, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in [heading, *rows]]
    return "\n".join(lines)
