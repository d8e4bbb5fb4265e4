"""Voxel-level SimSiam on the encoder (Lee et al.)."""

from __future__ import annotations

import torch

from ..heads import encoder_spec
from .base import nnUNetTrainerAux
from .tasks import SimSiamTask
from .variants import add_variants


class nnUNetTrainerVoxelSimSiam(nnUNetTrainerAux):
    """Voxel-level SimSiam on the last three encoder stages, ``L = L_seg + lambda L_feature``.

    Projection and prediction heads (1x1x1-convolution MLPs, hidden width 64) on each of the
    ``simsiam_layers`` deepest encoder stages; the class-weighted negative cosine similarity
    between ``p`` and stop-gradient ``z`` of same-class voxels across the batch, summed over
    the layers (Eq. 7, ``w_f = 1``). At most ``simsiam_max_voxels`` voxels per layer,
    false negatives of the main output first (at most ``simsiam_max_false_negatives``).
    The loss term lies in ``[-layers, 0]``: the same-class pairs are averaged, not summed.

    References
    ----------
    .. [1] C. E. Lee, M. Chung and Y.-G. Shin, "Voxel-level Siamese representation learning
           for abdominal multi-organ segmentation", Eq. 4-8, Sect. IV-A.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        #: |F|, deepest encoder stages with a voxel-level feature layer
        self.simsiam_layers = 3
        #: lambda (Eq. 8); None = the paper's 10 for |F| = 3, 100 for |F| = 1
        self.simsiam_weight = None
        #: hidden width of the projection / prediction MLPs, and dimension of p and z (None = hidden)
        self.simsiam_hidden_dim = 64
        self.simsiam_embedding_dim = None
        #: voxels sampled per layer, and false negatives among them at most
        self.simsiam_max_voxels = 1700
        self.simsiam_max_false_negatives = 1000
        #: sample background voxels too (the paper samples foreground only)
        self.simsiam_include_background = False

    def build_aux_tasks(self):
        lm = self.label_manager
        task = SimSiamTask(encoder_spec(self.network), n_regions=len(lm.foreground_regions) if lm.has_regions else None,
                           ignore_label=None if lm.has_regions else lm.ignore_label, n_layers=self.simsiam_layers,
                           weight=self.simsiam_weight, hidden_channels=self.simsiam_hidden_dim,
                           embedding_channels=self.simsiam_embedding_dim, max_voxels=self.simsiam_max_voxels,
                           max_false_negatives=self.simsiam_max_false_negatives,
                           include_background=self.simsiam_include_background)
        return super().build_aux_tasks() + [task]


__all__ = ["nnUNetTrainerVoxelSimSiam"]
add_variants(globals(), nnUNetTrainerVoxelSimSiam)
