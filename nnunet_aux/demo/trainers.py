"""The demo's trainers: stock and scale-contrastive training (light decoders), shortened for a CPU.

The training length comes from the environment variable
:data:`nnunet_aux.training.schedule.SCHEDULE_ENV_VAR` (a JSON schedule, the same override the
benchmarks' ``*_outcome`` trainers read), which the demo sets for its ``nnUNetv2_train``
commands; so the same classes serve the full and the quick demo. nnU-Net records the length
in the fold folder's ``debug.json``. nnU-Net finds these classes through ``nnUNet_extTrainer``
(:func:`demo_trainer_path`).
"""

from __future__ import annotations

import os

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from ..training.schedule import ScheduleFromEnvironment
from ..training.trainers import nnUNetTrainerScaleContrastiveLite


class nnUNetTrainer_demo(ScheduleFromEnvironment, nnUNetTrainer):
    """Stock ``nnUNetTrainer`` (the binary baseline), its length from the environment's schedule."""


class nnUNetTrainerScaleContrastiveLite_demo(ScheduleFromEnvironment, nnUNetTrainerScaleContrastiveLite):
    """``nnUNetTrainerScaleContrastiveLite``, its length from the environment's schedule.

    The light variant (1.2-1.3 x a stock step) rather than the paper's three full decoders
    (3.4 x): at the demo's few CPU iterations the full decoders' unweighted L_s leaves the
    scale decoders stuck at 0 (issue #10), so the demo would show a method that has not
    started to work.
    """


def demo_trainer_path() -> str:
    """The folder nnU-Net's ``nnUNet_extTrainer`` must include to find the demo trainers."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "trainer_path")
