"""Auxiliary tasks: one module each."""

from .cbdice import CbDiceTask, foreground_probability
from .classification import ClsTask, presence_accuracy, presence_auroc, presence_targets
from .clef import CLEFTask, CLEFTrainingModel
from .scale import ScaleTask, default_scale_weights
from .simsiam import SimSiamTask, default_simsiam_weight
from .skeleton_recall import SkeletonRecallTask, foreground_probabilities, structure_channels
from .soft_cldice import SoftClDiceTask

__all__ = ["CbDiceTask", "foreground_probability", "CLEFTask", "CLEFTrainingModel", "ClsTask", "ScaleTask",
           "SimSiamTask", "default_scale_weights", "default_simsiam_weight",
           "presence_accuracy", "presence_auroc", "presence_targets",
           "SkeletonRecallTask", "SoftClDiceTask", "foreground_probabilities", "structure_channels"]
