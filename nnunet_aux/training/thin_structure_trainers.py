"""Thin-structure peers as trainers: Skeleton Recall and soft-clDice, composable with the other tasks.

=========================================  ================================================
Skeleton Recall (Kirchhoff et al. 2024)    ``nnUNetTrainerSkeletonRecall``
soft-clDice (Shit et al. 2021)             ``nnUNetTrainerSoftClDice``
scale contrastive + Skeleton Recall        ``nnUNetTrainerScaleContrastiveSkeletonRecall``
                                           (in :mod:`.trainers`, with the other combinations)
=========================================  ================================================

Both add a loss term to nnU-Net's own loss and no network part: the inference network,
its cost and its checkpoint are stock nnU-Net's. They work on label and region datasets,
with the ignore label, deep supervision, 2d and 3d configurations and the cascade.
"""

from __future__ import annotations

import torch

from .base import nnUNetTrainerAux
from .skeleton_targets import PAPER_TUBE_RADIUS
from .tasks import SkeletonRecallTask, SoftClDiceTask, structure_channels
from .tasks.skeleton_recall import PAPER_SKELETON_RECALL_SMOOTH, PAPER_SKELETON_RECALL_WEIGHT
from .tasks.soft_cldice import PAPER_CLDICE_ALPHA, PAPER_CLDICE_ITERATIONS, PAPER_CLDICE_SMOOTH
from .variants import add_variants


class nnUNetTrainerSkeletonRecall(nnUNetTrainerAux):
    """nnU-Net's loss + w (1 - soft recall of the prediction on the tubed ground-truth skeleton).

    The skeleton of each foreground structure (label, or region of a region-based dataset)
    is computed on the CPU in the augmentation workers after nnU-Net's spatial transforms
    (scikit-image thinning, 2D for 2d configurations, 3D otherwise), widened into a tube and
    carried as extra target channels, downsampled for deep supervision like the other targets.

    References
    ----------
    .. [1] Y. Kirchhoff, M. R. Rokuss, S. Roy, B. Kovacs, C. Ulrich, T. Wald, M. Zenk, P. Vollmuth,
           J. Kleesiek, F. Isensee and K. Maier-Hein, "Skeleton Recall Loss for connectivity conserving
           and resource efficient segmentation of thin tubular structures", ECCV 2024, arXiv:2404.03010.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        #: w, weight of the Skeleton Recall term (Kirchhoff et al.'s weight_srec = 1)
        self.skeleton_recall_weight = PAPER_SKELETON_RECALL_WEIGHT
        #: dilations of the skeleton into a tube (their SkeletonTransform(do_tube=True): 2)
        self.skeleton_tube_radius = PAPER_TUBE_RADIUS
        #: smoothing of the recall (their 1e-5)
        self.skeleton_recall_smooth = PAPER_SKELETON_RECALL_SMOOTH
        #: recall at every deep-supervision output with nnU-Net's weights (their default: highest only)
        self.skeleton_recall_deep_supervision = False

    def build_aux_tasks(self):
        labels, channels = structure_channels(self.label_manager)
        task = SkeletonRecallTask(
            channels, labels, weight=self.skeleton_recall_weight, tube_radius=self.skeleton_tube_radius,
            smooth=self.skeleton_recall_smooth, batch_dice=self.configuration_manager.batch_dice,
            deep_supervision_weights=(self.deep_supervision_output_weights()
                                      if self.skeleton_recall_deep_supervision else None))
        return super().build_aux_tasks() + [task]


class nnUNetTrainerSoftClDice(nnUNetTrainerAux):
    """nnU-Net's loss + alpha (1 - soft-clDice) of the main output at full resolution.

    Shit et al. train with ``(1 - alpha) L_Dice + alpha L_clDice``; here nnU-Net's Dice + CE
    keeps weight 1 (its learning rate and schedule are tuned for it) and ``alpha L_clDice``
    is added, alpha = 0.5 as in their code.

    References
    ----------
    .. [1] S. Shit, J. C. Paetzold, A. Sekuboyina, I. Ezhov, A. Unger, A. Zhylka, J. P. W. Pluim,
           U. Bauer and B. H. Menze, "clDice - a novel topology-preserving loss function for tubular
           structure segmentation", CVPR 2021, arXiv:2003.07311.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        #: alpha, weight of the clDice term (their code: 0.5)
        self.cldice_weight = PAPER_CLDICE_ALPHA
        #: k, iterations of the soft skeleton (their code: 3; at least the largest radius in voxels)
        self.cldice_iterations = PAPER_CLDICE_ITERATIONS
        #: smoothing of T_prec and T_sens (their code: 1)
        self.cldice_smooth = PAPER_CLDICE_SMOOTH

    def build_aux_tasks(self):
        labels, channels = structure_channels(self.label_manager)
        task = SoftClDiceTask(channels, labels, weight=self.cldice_weight, iterations=self.cldice_iterations,
                              smooth=self.cldice_smooth)
        return super().build_aux_tasks() + [task]


class nnUNetTrainerSkeletonRecallSoftClDice(nnUNetTrainerSkeletonRecall, nnUNetTrainerSoftClDice):
    """Both thin-structure terms: nnU-Net's loss + w (1 - skeleton recall) + alpha (1 - soft-clDice)."""


__all__ = ["nnUNetTrainerSkeletonRecall", "nnUNetTrainerSoftClDice", "nnUNetTrainerSkeletonRecallSoftClDice"]
add_variants(globals(), nnUNetTrainerSkeletonRecall, nnUNetTrainerSoftClDice, nnUNetTrainerSkeletonRecallSoftClDice)
