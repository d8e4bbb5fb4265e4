"""The concrete trainers users name with ``-tr``.

Table 1 of paper 1 with stock commands, on a scale-decomposed dataset:

=====================  ==========================================================
binary baseline        ``nnUNetTrainer`` (stock)
multi-class baseline   ``nnUNetTrainer`` on the ``nnunet_aux multiclass`` variant
lambda_c = 0           ``nnUNetTrainerScaleAux``
lambda_c != 0          ``nnUNetTrainerScaleContrastive``
=====================  ==========================================================
"""

from __future__ import annotations

import torch

from ..dataset_format import read_scale_spec
from ..heads import decoder_convs_per_stage, encoder_spec
from .base import nnUNetTrainerAux
from .tasks import ScaleTask, default_scale_weights
from .variants import make_variants


class nnUNetTrainerScaleAux(nnUNetTrainerAux):
    """Scale-specific auxiliary decoders, L = L_mt + sum_s lambda_s L_s (paper 1, Eq. 5)."""

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

    def build_aux_tasks(self):
        spec = self.scale_spec
        weights = self.scale_loss_weights or default_scale_weights(len(spec.scale_labels))
        task = ScaleTask(
            encoder_spec(self.network), decoder_convs_per_stage(self.network), spec.scale_labels,
            spec.scale_names, self.make_region_loss, self.enable_deep_supervision, weights,
            contrastive_weight=self.contrastive_weight, temperature=self.contrastive_temperature,
            voxels_per_scale=self.contrastive_voxels_per_scale, sampling=self.contrastive_sampling,
            embedding_dim=self.projection_dim, projection_hidden=self.projection_hidden)
        return super().build_aux_tasks() + [task]


class nnUNetTrainerScaleContrastive(nnUNetTrainerScaleAux):
    """Scale decoders plus the multi-scale contrastive loss (paper 1, Eq. 9), lambda_c = 0.53, tau = 0.94."""

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


__all__ = ["nnUNetTrainerAux", "nnUNetTrainerScaleAux", "nnUNetTrainerScaleContrastive",
           "nnUNetTrainerScaleContrastiveHard"]
for _base in (nnUNetTrainerScaleAux, nnUNetTrainerScaleContrastive, nnUNetTrainerScaleContrastiveHard):
    for _name, _cls in make_variants(_base, __name__).items():
        globals()[_name] = _cls
        __all__.append(_name)
