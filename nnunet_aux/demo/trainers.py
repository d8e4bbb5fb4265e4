"""The demo's trainers: stock and scale-contrastive training (light decoders), shortened for a CPU.

The training length comes from the plans file (key
:data:`nnunet_aux.demo.plans.SCHEDULE_KEY`, written by the demo), so the same classes
serve the full and the quick demo, and the schedule is saved with the model in
nnU-Net's results folder. nnU-Net finds them through ``nnUNet_extTrainer``
(:func:`demo_trainer_path`).
"""

from __future__ import annotations

import os

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from ..errors import InputError
from ..training.trainers import nnUNetTrainerScaleContrastiveLite
from .plans import SCHEDULE_KEY

#: Attributes of nnU-Net's trainer that the schedule may set.
SCHEDULE_ATTRIBUTES = ("num_epochs", "num_iterations_per_epoch", "num_val_iterations_per_epoch")


def apply_schedule(trainer: nnUNetTrainer, plans: dict) -> None:
    """Set the trainer's training length from ``plans[SCHEDULE_KEY]`` (absent: nnU-Net's)."""
    schedule = plans.get(SCHEDULE_KEY, {})
    unknown = set(schedule) - set(SCHEDULE_ATTRIBUTES)
    if unknown:
        raise InputError(f"{SCHEDULE_KEY} in the plans has unknown keys {sorted(unknown)}; "
                         f"allowed: {SCHEDULE_ATTRIBUTES}")
    for key, value in schedule.items():
        setattr(trainer, key, int(value))


class nnUNetTrainer_demo(nnUNetTrainer):
    """Stock ``nnUNetTrainer`` (the binary baseline) with the demo's training length."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        apply_schedule(self, plans)


class nnUNetTrainerScaleContrastiveLite_demo(nnUNetTrainerScaleContrastiveLite):
    """``nnUNetTrainerScaleContrastiveLite`` with the demo's training length.

    The light variant (1.2-1.3 x a stock step) rather than the paper's three full decoders
    (3.4 x): at the demo's few CPU iterations the full decoders' unweighted L_s leaves the
    scale decoders stuck at 0 (issue #10), so the demo would show a method that has not
    started to work.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        apply_schedule(self, plans)


def demo_trainer_path() -> str:
    """The folder nnU-Net's ``nnUNet_extTrainer`` must include to find the demo trainers."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "trainer_path")
