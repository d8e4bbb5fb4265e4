"""Auxiliary losses and voxel sampling, pure torch (no nnU-Net import).

- :mod:`.contrastive`: supervised contrastive loss between vessel scales
  (Sadikine et al. 2023, Eq. 7-8).
- :mod:`.simsiam`: class-weighted voxel-level SimSiam loss over several feature
  layers (Lee, Chung and Shin, Eq. 4-7).
- :mod:`.focal`: binary focal loss for multi-label presence classification (CMU-Net).
- :mod:`.sampling`: which voxels of a batch enter the voxel-level losses.
- :mod:`.clef`: CLEF's decoding, discriminativeness and equivariance losses and its random
  affine transform (Kuleshov, Goncharov and Soboleva, Eq. 1-2).
- :mod:`.skeleton_recall`: soft recall on the tubed ground-truth skeleton (Kirchhoff et al. 2024).
- :mod:`.soft_cldice`: soft skeletons and the soft-clDice loss (Shit et al. 2021).
- :mod:`.cbdice`: the centerline boundary Dice loss (Shi et al. 2024), MONAI's distance transform.
"""

from . import clef
from .cbdice import cbdice_loss, cbdice_radius_weights, distance_transform, soft_cbdice
from .clef import *  # noqa: F401,F403  (CLEF's losses and random affine transform)
from .contrastive import ScaleContrastiveLoss, scale_contrastive_loss
from .focal import FocalLoss, binary_focal_loss
from .sampling import gather_voxels, sample_simsiam_voxels, sample_voxels, voxel_hardness
from .simsiam import VoxelSimSiamLoss, simsiam_class_weights, voxel_simsiam_loss
from .skeleton_recall import all_ranks_sum, skeleton_recall_loss, soft_skeleton_recall
from .soft_cldice import soft_cldice, soft_cldice_loss, soft_dilate, soft_erode, soft_open, soft_skeleton

__all__ = [
    *clef.__all__,
    "FocalLoss",
    "ScaleContrastiveLoss",
    "VoxelSimSiamLoss",
    "binary_focal_loss",
    "gather_voxels",
    "sample_simsiam_voxels",
    "sample_voxels",
    "scale_contrastive_loss",
    "simsiam_class_weights",
    "voxel_hardness",
    "voxel_simsiam_loss",
    "all_ranks_sum",
    "cbdice_loss",
    "cbdice_radius_weights",
    "distance_transform",
    "soft_cbdice",
    "skeleton_recall_loss",
    "soft_skeleton_recall",
    "soft_cldice",
    "soft_cldice_loss",
    "soft_dilate",
    "soft_erode",
    "soft_open",
    "soft_skeleton",
]
