"""cbDice (Shi et al., MICCAI 2024) on nnU-Net's main output: a task without parameters or targets of its own.

As PengchengShi1220/cbDice's ``DC_and_CE_and_CBDC_loss`` (loss/compound_cbdice_loss.py) runs it: the
cbDice term of the foreground (all structures merged) at every deep-supervision output, with
nnU-Net's weights (their ``nnUNetTrainer_CE_DC_CBDC`` wraps the whole loss in nnU-Net's
``DeepSupervisionWrapper``).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from ...losses.cbdice import PAPER_CBDICE_ITERATIONS, PAPER_CBDICE_SMOOTH, cbdice_loss
from ..task import AuxBatch
from .skeleton_recall import MainOutputTask, _levels, check_count


def foreground_probability(logits: torch.Tensor, channels: Sequence[int], regions: bool) -> torch.Tensor:
    """The probability map of the foreground (all structures merged), (B, 1, ...), float32.

    Label datasets: their "differentiable binarization" (cbdice_loss.py, lines 25-29): the largest
    foreground logit against the background logit, ``softmax([z_0, max_k z_k])[1]`` (the gradient goes
    to the largest foreground channel only, as ``torch.max``'s). Region datasets (a package extension):
    ``sigmoid(max_k z_k)``, the probability of the most likely region.

    Parameters
    ----------
    logits : Tensor (B, K, ...)
    channels : sequence of int
        Output channels of the foreground structures.
    regions : bool

    Returns
    -------
    Tensor, float32, (B, 1, ...)

    Examples
    --------
    >>> foreground_probability(torch.tensor([[[0.0], [1.0], [-1.0]]]), [1, 2], regions=False)
    tensor([[[0.7311]]])
    """
    z = logits.float()
    fg = torch.max(z[:, list(channels)], dim=1, keepdim=True)[0]
    if regions:
        return torch.sigmoid(fg)
    return torch.softmax(torch.cat([z[:, :1], fg], 1), 1)[:, 1:2]


class CbDiceTask(MainOutputTask):
    """L = L_nnU-Net + lambda (1 - cbDice) at every deep-supervision level.

    Parameters
    ----------
    channels : sequence of int
        Output channel of each structure.
    labels : sequence of tuple of int, optional
        Label values of each structure (label datasets); None for region datasets.
    weight : float
        lambda_cbdice (their trainer: 1 with deep supervision, 2 without).
    iterations, smooth : int, float
        Soft-skeleton iterations and smoothing (their trainers: 10, 1e-3).
    deep_supervision_weights : sequence of float, optional
        Weight of each output level, highest resolution first (nnU-Net's); None: one output, weight 1.
    mask_ignore : bool
        True (a package setting): voxels under nnU-Net's ignore label are removed from the prediction and
        the target. False: their code, whose target ``y_true > 0`` counts ignored voxels as foreground.

    References
    ----------
    .. [1] P. Shi, J. Hu, Y. Yang, Z. Gao, W. Liu and T. Ma, "Centerline Boundary Dice Loss for Vascular
           Segmentation", MICCAI 2024, arXiv:2407.01517.
    """

    name = "cbdice"

    def __init__(self, channels: Sequence[int], labels: Optional[Sequence[Tuple[int, ...]]] = None,
                 weight: float = 1.0, iterations: int = PAPER_CBDICE_ITERATIONS, smooth: float = PAPER_CBDICE_SMOOTH,
                 deep_supervision_weights: Optional[Sequence[float]] = None, mask_ignore: bool = True):
        super().__init__()
        self.init_structures(channels, labels, weight, "cbDice", match_labels=False)
        self.iterations = check_count("iterations", iterations)
        self.smooth = float(smooth)
        self.deep_supervision_weights = (None if deep_supervision_weights is None
                                         else [float(w) for w in deep_supervision_weights])
        self.mask_ignore = bool(mask_ignore)

    def hyperparameters(self) -> Dict[str, Any]:
        return {"weight": self.weight, "iterations": self.iterations, "smooth": self.smooth,
                "deep_supervision_weights": self.deep_supervision_weights, "mask_ignore": self.mask_ignore,
                "labels": self.labels, "output_channels": self.channels}

    def target_mask(self, main_target: torch.Tensor) -> torch.Tensor:
        """The binary foreground (B, 1, ...) of nnU-Net's main target.

        Label datasets: their ``y_true > 0`` (nnU-Net's ignore label included; see ``mask_ignore``).
        Region datasets: the union of the structures' region channels.
        """
        if self.labels is None:
            return main_target[:, :len(self.channels)].bool().any(1, keepdim=True)
        return main_target[:, :1] > 0

    def compute_losses(self, outputs: Dict[str, Any], batch: AuxBatch) -> Dict[str, torch.Tensor]:
        logits = outputs["logits"]
        deep = isinstance(logits, (list, tuple))
        weights = self.deep_supervision_weights if (deep and self.deep_supervision_weights is not None) else [1.0]
        n = len(weights)
        levels = zip(weights, _levels(logits, n), _levels(batch.main_target, n), _levels(batch.valid, n))
        loss = None
        for w, lg, target, valid in levels:
            if w == 0:
                continue
            p = foreground_probability(lg, self.channels, regions=self.labels is None)
            term = w * cbdice_loss(p, self.target_mask(target), self.iterations, self.smooth,
                                   valid if self.mask_ignore else None)
            loss = term if loss is None else loss + term
        return {"cbdice": loss}
