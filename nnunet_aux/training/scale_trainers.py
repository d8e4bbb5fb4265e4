"""Scale-specific auxiliary decoders and the multi-scale contrastive loss (Sadikine et al.).

Table 1 of Sadikine et al. with stock commands, on a scale-decomposed dataset:

=====================  ==========================================================
binary baseline        ``nnUNetTrainer`` (stock)
multi-class baseline   ``nnUNetTrainer`` on the ``nnunet_aux multiclass`` variant
lambda_c = 0           ``nnUNetTrainerScaleAux``
lambda_c != 0          ``nnUNetTrainerScaleContrastive``
=====================  ==========================================================

plus ``nnUNetTrainerScaleContrastiveHard`` (anchors drawn hardest-first) and
``nnUNetTrainerScaleContrastiveLite`` (light decoders, issue #10).
"""

from __future__ import annotations

import torch

from ..dataset_format import read_scale_spec
from ..heads import encoder_spec, unwrap_network
from .base import nnUNetTrainerAux
from .tasks import ScaleTask, default_scale_weights
from .variants import add_variants


class nnUNetTrainerScaleAux(nnUNetTrainerAux):
    """Scale-specific auxiliary decoders, L = L_mt + sum_s lambda_s L_s (Sadikine et al., Eq. 5)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        # fail at construction, before any work, if the dataset has no scale decomposition
        self.scale_spec = read_scale_spec(dataset_json, source=f"dataset.json of {self.plans_manager.dataset_name}")
        #: lambda_s per scale, smallest first; None = paper's (0.78, 0.48, 0.54) for 3 scales
        self.scale_loss_weights = None
        #: lambda_c (Eq. 9); 0 = no contrastive loss and no projection heads
        self.contrastive_weight = 0.0
        #: tau (Eq. 8)
        self.contrastive_temperature = 0.94
        #: anchors drawn per scale and batch (the paper does not say; bounds cost)
        self.contrastive_voxels_per_scale = 512
        #: 'random' or 'hard' (voxels the scale's own decoder misses first)
        self.contrastive_sampling = "random"
        #: proj_s widths (Eq. 6; not given in the paper)
        self.projection_dim = 64
        self.projection_hidden = None
        #: feature maps of each D_s relative to nnU-Net's decoder: 1 = the paper's full decoders
        self.scale_decoder_width = 1.0
        #: stages of each D_s, deepest first: None = all (the paper), K > 0 the first K, -1 all but the
        #: highest-resolution one (its outputs and targets then start one level lower); or one value per
        #: scale, smallest first
        self.scale_decoder_stages = None
        #: how the scale masks reach lower resolutions (deep supervision, cut decoders, contrastive labels):
        #: 'nearest' (nnU-Net's) or 'max' (a coarse voxel belongs to a scale when any of its voxels does)
        self.scale_target_downsampling = "nearest"
        #: Dice of L_s over the whole batch (True) or per patch (False); None = the plan's batch_dice
        self.scale_batch_dice = None
        #: foreground weight of L_s's cross-entropy (the paper's "weighted cross-entropy"): None = unweighted,
        #: a number, or 'balanced' = the batch's inverse foreground frequency, capped at scale_bce_max_pos_weight
        self.scale_bce_pos_weight = None
        self.scale_bce_max_pos_weight = 50.0

    def build_aux_tasks(self):
        spec = self.scale_spec
        weights = self.scale_loss_weights or default_scale_weights(len(spec.scale_labels))
        task = ScaleTask(
            encoder_spec(self.network), unwrap_network(self.network).decoder, spec.scale_labels,
            spec.scale_names, self._make_scale_loss, self.enable_deep_supervision, weights,
            contrastive_weight=self.contrastive_weight, temperature=self.contrastive_temperature,
            voxels_per_scale=self.contrastive_voxels_per_scale, sampling=self.contrastive_sampling,
            embedding_dim=self.projection_dim, projection_hidden=self.projection_hidden,
            decoder_width=self.scale_decoder_width, decoder_stages=self.scale_decoder_stages,
            target_downsampling=self.scale_target_downsampling,
            loss_settings={"scale_batch_dice": self.scale_batch_dice, "scale_bce_pos_weight": self.scale_bce_pos_weight,
                           "scale_bce_max_pos_weight": self.scale_bce_max_pos_weight})
        return super().build_aux_tasks() + [task]

    def _make_scale_loss(self, levels=None):
        return self.make_region_loss(batch_dice=self.scale_batch_dice, bce_pos_weight=self.scale_bce_pos_weight,
                                     max_pos_weight=self.scale_bce_max_pos_weight, levels=levels)


class nnUNetTrainerScaleContrastive(nnUNetTrainerScaleAux):
    """Scale decoders plus the multi-scale contrastive loss (Sadikine et al., Eq. 9), lambda_c = 0.53, tau = 0.94."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.contrastive_weight = 0.53


class nnUNetTrainerScaleContrastiveHard(nnUNetTrainerScaleContrastive):
    """As ScaleContrastive, anchors drawn hardest-first."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.contrastive_sampling = "hard"


class nnUNetTrainerScaleContrastiveLite(nnUNetTrainerScaleContrastive):
    """ScaleContrastive with light scale decoders: 1/4 of the main decoder's width, no full-resolution stage.

    The paper's structure is kept (one decoder per scale on the shared encoder, skips, deep
    supervision, the contrastive loss on each D_s's deepest stage); the encoder's skips enter
    each D_s through a 1x1x1 reduction, and each D_s stops one stage before full resolution
    (its outputs and targets start at the second deep-supervision level). Step: 1.15-1.2 x stock
    on the CPU, against 3.4 x for full decoders (benchmarks/RESULTS.md). L_s's cross-entropy is
    class-balanced (the paper's "weighted cross-entropy": foreground weight = background /
    foreground voxels of the batch, up to 1000), which the rare scales need to learn at all
    (issue #10, benchmarks/RESULTS.md).
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.scale_decoder_width = 0.25
        # No full-resolution stage: on the CPU a narrow convolution there costs about what a full one
        # does, so narrowing alone left the step at 1.5 x stock, and keeping that stage for the
        # small-vessel decoder only (scale_decoder_stages = (None, -1, -1)) still costs 1.5 x
        # (benchmarks/RESULTS.md).
        self.scale_decoder_stages = -1
        # full class balance: with a cap of 50 the small and medium decoders stayed at Dice 0 for
        # 120 iterations on the demo data (0.03 % / 0.1 % of the voxels); see benchmarks/RESULTS.md
        self.scale_bce_pos_weight = "balanced"
        self.scale_bce_max_pos_weight = 1000.0


__all__ = ["nnUNetTrainerScaleAux", "nnUNetTrainerScaleContrastive", "nnUNetTrainerScaleContrastiveHard",
           "nnUNetTrainerScaleContrastiveLite"]
add_variants(globals(), nnUNetTrainerScaleAux, nnUNetTrainerScaleContrastive, nnUNetTrainerScaleContrastiveHard,
             nnUNetTrainerScaleContrastiveLite)
