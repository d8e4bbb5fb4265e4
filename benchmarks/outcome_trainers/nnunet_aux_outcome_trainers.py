"""The outcome benchmark's trainers: ``<Trainer>_outcome`` for stock nnU-Net and each nnunet_aux trainer.

Found by nnU-Net through ``nnUNet_extTrainer`` (``benchmarks/outcome.py`` puts this folder
on it, next to ``nnunet_aux trainer-path``), e.g.::

    NNUNET_AUX_OUTCOME='{"num_epochs": 10, "num_iterations_per_epoch": 25,
                         "num_val_iterations_per_epoch": 2, "seed": 0}' \\
    nnUNetv2_train 901 3d_fullres 0 -p nnUNetPlans_outcome -tr nnUNetTrainerScaleContrastiveLite_outcome

Each class is its base trainer, unchanged, except that

* the training length (``num_epochs``, ``num_iterations_per_epoch``,
  ``num_val_iterations_per_epoch``) and a seed come from the JSON in the environment
  variable :data:`ENV_VAR` (absent: nnU-Net's length, no seeding; so ``nnUNetv2_predict``,
  which only builds the network, needs nothing);
* ``random``, ``numpy`` and ``torch`` are seeded in ``__init__``, before nnU-Net builds
  and initialises the network in ``initialize()``;
* nnU-Net's final validation (after training) predicts without test-time mirroring;
* the wall time of every epoch's training phase (``on_train_epoch_start`` to
  ``on_train_epoch_end``: data loading and ``train_step`` of all its iterations, no
  validation) and validation phase is written to :data:`TIMING_FILE` in the fold folder.

A base trainer that does not import (e.g. one still being written) is skipped with a message.
"""

from __future__ import annotations

import json
import os
import random
import time

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

#: Environment variable holding the run's schedule and seed (JSON object).
ENV_VAR = "NNUNET_AUX_OUTCOME"
#: Per-epoch phase times, written into the fold folder.
TIMING_FILE = "outcome_timing.json"
SCHEDULE_KEYS = ("num_epochs", "num_iterations_per_epoch", "num_val_iterations_per_epoch", "save_every")
#: Learning curves: ``"snapshots": [iterations, ...]`` saves ``snapshot_<iterations>.pth`` at the end of the
#: epoch that completes that many training iterations, and records it in :data:`SNAPSHOTS_FILE`.
SNAPSHOTS_FILE = "snapshots.json"
#: Trainers of nnunet_aux that get an ``_outcome`` variant (those that import).
AUX_TRAINERS = ("nnUNetTrainerScaleAux", "nnUNetTrainerScaleContrastive", "nnUNetTrainerScaleContrastiveLite",
                "nnUNetTrainerScaleContrastiveHard", "nnUNetTrainerSkeletonRecall", "nnUNetTrainerSoftClDice",
                "nnUNetTrainerSkeletonRecallSoftClDice", "nnUNetTrainerScaleContrastiveSkeletonRecall",
                "nnUNetTrainerSkeletonRecallDS", "nnUNetTrainerCbDice", "nnUNetTrainerScaleContrastiveCbDice",
                "nnUNetTrainerScaleContrastiveLiteSkeletonRecall")


def read_settings() -> dict:
    """The run's settings from :data:`ENV_VAR` ({} when unset)."""
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return {}
    settings = json.loads(text)
    unknown = set(settings) - set(SCHEDULE_KEYS) - {"seed", "snapshots"}
    if unknown:
        raise ValueError(f"{ENV_VAR} has unknown keys {sorted(unknown)}; allowed: {SCHEDULE_KEYS}, 'seed' "
                         "and 'snapshots'")
    return settings


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global RNGs (network init, patch sampling in this process)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


class OutcomeMixin:
    """Schedule and seed from the environment, per-epoch phase timing; put it first in the bases."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        settings = read_settings()
        if "seed" in settings:
            seed_everything(int(settings["seed"]))  # before the base class builds anything random
        super().__init__(plans, configuration, fold, dataset_json, device)
        for key in SCHEDULE_KEYS:
            if key in settings:
                setattr(self, key, int(settings[key]))
        self.outcome_settings = settings
        self._phase_start = None

    def on_train_epoch_start(self):
        self._phase_start = time.perf_counter()
        self._cpu_start = time.process_time()
        super().on_train_epoch_start()

    def on_train_epoch_end(self, train_outputs):
        self._train_seconds = time.perf_counter() - self._phase_start
        # this process's CPU time (all its threads; not the augmentation workers): less load-sensitive
        self._train_cpu_seconds = time.process_time() - self._cpu_start
        super().on_train_epoch_end(train_outputs)
        self._phase_start = time.perf_counter()  # validation starts now

    def on_validation_epoch_end(self, val_outputs):
        super().on_validation_epoch_end(val_outputs)
        self._record_epoch(self._train_seconds, time.perf_counter() - self._phase_start)

    def on_epoch_end(self):
        iterations = (self.current_epoch + 1) * self.num_iterations_per_epoch
        if iterations in set(self.outcome_settings.get("snapshots", ())):
            self._save_snapshot(iterations)
        super().on_epoch_end()

    def _save_snapshot(self, iterations: int) -> None:
        """``snapshot_<iterations>.pth`` (nnU-Net's own checkpoint format, so ``nnUNetv2_predict -chk`` reads it)
        and its cumulative training-phase seconds in :data:`SNAPSHOTS_FILE`."""
        name = f"snapshot_{iterations:07d}.pth"
        self.save_checkpoint(os.path.join(self.output_folder, name))
        if self.local_rank != 0:
            return
        with open(os.path.join(self.output_folder, TIMING_FILE), encoding="utf-8") as f:
            epochs = json.load(f)["epochs"]
        done = [epochs[str(e)] for e in range(self.current_epoch + 1)]  # epochs redone after --c are overwritten
        path = os.path.join(self.output_folder, SNAPSHOTS_FILE)
        snapshots = {}
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                snapshots = json.load(f)
        snapshots[str(iterations)] = {"epoch": self.current_epoch, "checkpoint": name,
                                      "train_seconds": sum(e["train_s"] for e in done),
                                      "train_cpu_seconds": sum(e.get("train_cpu_s", 0.0) for e in done)}
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(snapshots, f, indent=1)
        os.replace(path + ".tmp", path)

    def perform_actual_validation(self, save_probabilities: bool = False):
        """nnU-Net's final validation without test-time mirroring, as the benchmark's test predictions.

        Mirroring multiplies CPU inference by 8 and the benchmark does not use this validation's
        scores. ``checkpoint_final.pth`` is written before (``on_train_end``) and keeps the
        trainer's mirroring axes, so ``nnUNetv2_predict`` without ``--disable_tta`` still mirrors.
        """
        axes = self.inference_allowed_mirroring_axes
        self.inference_allowed_mirroring_axes = None
        try:
            super().perform_actual_validation(save_probabilities)
        finally:
            self.inference_allowed_mirroring_axes = axes

    def _record_epoch(self, train_seconds: float, val_seconds: float) -> None:
        """Add this epoch to :data:`TIMING_FILE` (kept across ``--c`` continuations)."""
        if self.local_rank != 0:
            return
        path = os.path.join(self.output_folder, TIMING_FILE)
        timing = {"settings": self.outcome_settings, "epochs": {}}
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                timing["epochs"] = json.load(f).get("epochs", {})
        timing["epochs"][str(self.current_epoch)] = {
            "train_s": train_seconds, "val_s": val_seconds, "train_cpu_s": self._train_cpu_seconds,
            "iterations": self.num_iterations_per_epoch, "val_iterations": self.num_val_iterations_per_epoch}
        timing["torch_threads"] = torch.get_num_threads()
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(timing, f, indent=1)
        os.replace(path + ".tmp", path)


def _outcome_class(base: type) -> type:
    """``<base>_outcome``, defined as if written in this module (nnU-Net finds it by name)."""
    name = f"{base.__name__}_outcome"
    return type(name, (OutcomeMixin, base), {"__module__": __name__, "__qualname__": name,
                                               "__doc__": f"{base.__name__} with the outcome benchmark's "
                                                          "schedule, seed and timing."})


def _aux_bases() -> list:
    try:
        from nnunet_aux.training import trainers
    except Exception as e:  # noqa: BLE001 (another engineer's half-written module must not stop stock)
        print(f"nnunet_aux_outcome_trainers: nnunet_aux.training.trainers does not import ({e!r}); "
              "only nnUNetTrainer_outcome is defined")
        return []
    bases = []
    for name in AUX_TRAINERS:
        if hasattr(trainers, name):
            bases.append(getattr(trainers, name))
        else:
            print(f"nnunet_aux_outcome_trainers: {name} not found in nnunet_aux, skipped")
    return bases


__all__ = ["OutcomeMixin"]
for _base in [nnUNetTrainer, *_aux_bases()]:
    _cls = _outcome_class(_base)
    globals()[_cls.__name__] = _cls
    __all__.append(_cls.__name__)
