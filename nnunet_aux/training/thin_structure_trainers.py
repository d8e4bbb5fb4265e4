"""Thin-structure peers as trainers: Skeleton Recall and soft-clDice, composable with the other tasks.

=========================================  ================================================
Skeleton Recall (Kirchhoff et al. 2024)    ``nnUNetTrainerSkeletonRecall``,
                                           ``nnUNetTrainerSkeletonRecallDS`` (skeleton-recall 1.0.0's two)
soft-clDice (Shit et al. 2021)             ``nnUNetTrainerSoftClDice``
cbDice (Shi et al. 2024)                   ``nnUNetTrainerCbDice``, ``...CbDiceNoDeepSupervision``
scale contrastive + Skeleton Recall        ``nnUNetTrainerScaleContrastiveSkeletonRecall``
                                           (in :mod:`.trainers`, with the other combinations)
=========================================  ================================================

Each adds a loss term to nnU-Net's own loss and no network part: the inference network,
its cost and its checkpoint are stock nnU-Net's. They work on label and region datasets,
with the ignore label, deep supervision, 2d and 3d configurations and the cascade.
"""

from __future__ import annotations

import torch
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

from ..losses.cbdice import PAPER_CBDICE_ITERATIONS, PAPER_CBDICE_SMOOTH, distance_transform_runs_on_gpu
from .base import nnUNetTrainerAux
from .skeleton_targets import PAPER_SKELETON_TARGET, PAPER_TUBE_RADIUS
from .tasks import CbDiceTask, SkeletonRecallTask, SoftClDiceTask, structure_channels
from .tasks.skeleton_recall import PAPER_SKELETON_RECALL_SMOOTH, PAPER_SKELETON_RECALL_WEIGHT
from .tasks.soft_cldice import (
    PAPER_CLDICE_ALPHA,
    PAPER_CLDICE_EXCLUDE_BACKGROUND,
    PAPER_CLDICE_ITERATIONS,
    PAPER_CLDICE_SMOOTH,
)
from .variants import add_variants


class nnUNetTrainerSkeletonRecall(nnUNetTrainerAux):
    """nnU-Net's loss + w (1 - soft recall of the prediction on the tubed ground-truth skeleton).

    skeleton-recall 1.0.0's ``nnUNetTrainerSkeletonRecall`` (skeleton_recall/training/nnUNetTrainer/
    nnUNetTrainerSkeletonRecall.py): the skeleton of the union of the foreground (every label, or
    every region of a region-based dataset, which their trainer refuses) is computed on the CPU in
    the augmentation workers after nnU-Net's spatial transforms (scikit-image thinning, 2D for 2d
    configurations, 3D otherwise), widened into a tube and cut to each structure, carried as extra
    target channels. The recall is taken at full resolution only, weighted by nnU-Net's
    deep-supervision weight of that level (their loss runs inside nnU-Net's ``DeepSupervisionWrapper``
    and the lower levels' targets have no skeleton channel).

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
        #: recall at every deep-supervision output with nnU-Net's weights (their skeleton_deep_supervision:
        #: False here, True in nnUNetTrainerSkeletonRecallDS); False: full resolution with nnU-Net's weight w0
        self.skeleton_recall_deep_supervision = False
        #: "union" (their SkeletonTransform: skeleton of seg > 0, tube times the label map) or "per_structure"
        self.skeleton_target = PAPER_SKELETON_TARGET
        #: under DDP with batch_dice, pool the recall's sums over the GPUs (their AllGatherGrad)
        self.skeleton_recall_ddp_pooling = True

    def skeleton_recall_level_weights(self):
        """Weight of the recall at each output level, full resolution first (None: one output, weight 1)."""
        weights = self.deep_supervision_output_weights()
        if weights is None or self.skeleton_recall_deep_supervision:
            return weights
        return weights[:1]

    def build_aux_tasks(self):
        labels, channels = structure_channels(self.label_manager)
        task = SkeletonRecallTask(
            channels, labels, weight=self.skeleton_recall_weight, tube_radius=self.skeleton_tube_radius,
            smooth=self.skeleton_recall_smooth, batch_dice=self.configuration_manager.batch_dice,
            deep_supervision_weights=self.skeleton_recall_level_weights(), target_mode=self.skeleton_target,
            ddp=self.is_ddp and self.skeleton_recall_ddp_pooling)
        return super().build_aux_tasks() + [task]


class nnUNetTrainerSkeletonRecallDS(nnUNetTrainerSkeletonRecall):
    """skeleton-recall 1.0.0's ``nnUNetTrainerSkeletonRecallDS``: the skeleton is made before nnU-Net's
    deep-supervision downsampling and downsampled with the segmentation, and the recall is taken at every
    output level with nnU-Net's weights."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.skeleton_recall_deep_supervision = True


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
        #: alpha, weight of the clDice term (their soft_dice_cldice: alpha=0.5)
        self.cldice_weight = PAPER_CLDICE_ALPHA
        #: k, iterations of the soft skeleton (their soft_cldice: SoftSkeletonize(num_iter=10), iter_ unused)
        self.cldice_iterations = PAPER_CLDICE_ITERATIONS
        #: smoothing of T_prec and T_sens (their code: 1)
        self.cldice_smooth = PAPER_CLDICE_SMOOTH
        #: their exclude_background=False: the background channel counts, sums pooled over all channels
        self.cldice_exclude_background = PAPER_CLDICE_EXCLUDE_BACKGROUND
        #: True (a package setting): one clDice per foreground structure, averaged (their sums are pooled)
        self.cldice_per_structure = False

    def build_aux_tasks(self):
        labels, channels = structure_channels(self.label_manager)
        task = SoftClDiceTask(channels, labels, weight=self.cldice_weight, iterations=self.cldice_iterations,
                              smooth=self.cldice_smooth, exclude_background=self.cldice_exclude_background,
                              per_structure=self.cldice_per_structure)
        return super().build_aux_tasks() + [task]


#: Printed at the start of a CUDA training of the cbDice trainers when cuCIM or CuPy is missing.
CPU_DISTANCE_TRANSFORM_WARNING = (
    "WARNING: cbDice's distance transforms will run on the CPU (SciPy) for every sample of every step: "
    "cuCIM and CuPy are needed to run them on the GPU (pip install cucim-cu12 or cucim-cu13, matching "
    "the CUDA of your torch). Without them a step costs about 38 x stock's at nnU-Net's default 3D "
    "network (nnunet_aux benchmarks/RESULTS.md, 'On a GPU').")


class nnUNetTrainerCbDice(nnUNetTrainerAux):
    """nnU-Net's loss with a heavier CE + lambda (1 - cbDice) at every deep-supervision level.

    PengchengShi1220/cbDice's ``nnUNetTrainer_CE_DC_CBDC`` (nnUNetTrainer_variants/nnUNetTrainer_CE_DC_CBDC.py):
    per output level ``lambda_ce CE + lambda_dice Dice + lambda_cbdice cbDice`` with lambda_cbdice = 1,
    lambda_dice = 1, lambda_ce = lambda_dice + lambda_cbdice = 2, inside nnU-Net's deep-supervision
    weights; their ``..._NoDeepSupervision`` variant uses lambda_cbdice = 2, lambda_ce = 3
    (``nnUNetTrainerCbDiceNoDeepSupervision`` here). Dice and CE are nnU-Net's own (Dice + BCE on
    region datasets, whose foreground is the union of the regions); cbDice compares the foreground
    of the prediction (largest foreground logit against the background's) with the target's
    foreground, with soft skeletons (10 iterations) and MONAI's distance transforms, smoothing 1e-3.

    References
    ----------
    .. [1] P. Shi, J. Hu, Y. Yang, Z. Gao, W. Liu and T. Ma, "Centerline Boundary Dice Loss for Vascular
           Segmentation", MICCAI 2024, arXiv:2407.01517.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        #: lambda_cbdice; None: theirs, 1.0 with deep supervision (nnUNetTrainer_CE_DC_CBDC.py, line 20),
        #: 2.0 without (nnUNetTrainer_CE_DC_CBDC_NoDeepSupervision.py, line 10)
        self.cbdice_weight = None
        #: lambda_ce of nnU-Net's loss; None: theirs, lambda_dice + lambda_cbdice (same files; lambda_dice = 1)
        self.cbdice_ce_weight = None
        #: soft-skeleton iterations and smoothing (their cbdc_kwargs {'iter_': 10, 'smooth': 1e-3})
        self.cbdice_iterations = PAPER_CBDICE_ITERATIONS
        self.cbdice_smooth = PAPER_CBDICE_SMOOTH
        #: True (a package setting): ignored voxels leave prediction and target; False: theirs (y_true > 0 counts them)
        self.cbdice_mask_ignore = True

    def cbdice_loss_weights(self):
        """(lambda_cbdice, lambda_ce) after resolving the None defaults as their trainers do."""
        weight = self.cbdice_weight
        if weight is None:
            weight = 1.0 if self.enable_deep_supervision else 2.0
        ce = 1.0 + weight if self.cbdice_ce_weight is None else self.cbdice_ce_weight
        return float(weight), float(ce)

    def _build_loss(self):
        # nnU-Net's own Dice + CE (or + BCE) with its deep-supervision weights, CE weighted lambda_ce
        loss = super()._build_loss()
        inner = loss.loss if isinstance(loss, DeepSupervisionWrapper) else loss
        inner.weight_ce = self.cbdice_loss_weights()[1]
        return loss

    def warn_if_distance_transforms_leave_the_gpu(self) -> bool:
        """Print :data:`CPU_DISTANCE_TRANSFORM_WARNING` for a CUDA training without cuCIM; True if printed."""
        if self.device.type != "cuda" or distance_transform_runs_on_gpu():
            return False
        self.print_to_log_file(CPU_DISTANCE_TRANSFORM_WARNING, also_print_to_console=True)
        return True

    def build_aux_tasks(self):
        self.warn_if_distance_transforms_leave_the_gpu()
        labels, channels = structure_channels(self.label_manager)
        task = CbDiceTask(channels, labels, weight=self.cbdice_loss_weights()[0], iterations=self.cbdice_iterations,
                          smooth=self.cbdice_smooth, deep_supervision_weights=self.deep_supervision_output_weights(),
                          mask_ignore=self.cbdice_mask_ignore)
        return super().build_aux_tasks() + [task]

    def aux_hyperparameters(self):
        hp = super().aux_hyperparameters()
        if "cbdice" in hp:
            hp["cbdice"] = dict(hp["cbdice"], ce_weight=self.cbdice_loss_weights()[1])
        return hp


class nnUNetTrainerCbDiceNoDeepSupervision(nnUNetTrainerCbDice):
    """Their ``nnUNetTrainer_CE_DC_CBDC_NoDeepSupervision``: one output, lambda_cbdice = 2, lambda_ce = 3."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False


class nnUNetTrainerSkeletonRecallSoftClDice(nnUNetTrainerSkeletonRecall, nnUNetTrainerSoftClDice):
    """Both thin-structure terms: nnU-Net's loss + w (1 - skeleton recall) + alpha (1 - soft-clDice)."""


__all__ = ["nnUNetTrainerSkeletonRecall", "nnUNetTrainerSkeletonRecallDS", "nnUNetTrainerSoftClDice",
           "nnUNetTrainerCbDice", "nnUNetTrainerCbDiceNoDeepSupervision", "nnUNetTrainerSkeletonRecallSoftClDice"]
add_variants(globals(), nnUNetTrainerSkeletonRecall, nnUNetTrainerSkeletonRecallDS, nnUNetTrainerSoftClDice,
             nnUNetTrainerCbDice, nnUNetTrainerCbDiceNoDeepSupervision, nnUNetTrainerSkeletonRecallSoftClDice)
