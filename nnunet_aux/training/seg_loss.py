"""nnU-Net's segmentation loss for auxiliary binary masks."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from torch import nn


class BalancedBCEWithLogitsLoss(nn.Module):
    """Binary cross-entropy with the foreground weighted by its inverse frequency in the batch.

    ``pos_weight = clip(n_background / n_foreground, 1, max_pos_weight)``, computed on each
    call from the target (voxels of every sample and channel together), is the classic
    class-balanced "weighted cross-entropy". A fixed ``pos_weight`` can be given instead.
    Same call signature and reduction options as :class:`torch.nn.BCEWithLogitsLoss`, so it
    can stand in for nnU-Net's BCE inside ``DC_and_BCE_loss``.

    Why: a scale that covers 0.03 % of the voxels (small vessels) drives an unweighted
    sigmoid output to ~0 everywhere within a few iterations; there the soft Dice gradient is
    scaled by ``p (1 - p) ~ 0`` and the head stops learning (issue #10). Weighting the rare
    foreground keeps its gradient alive.

    Parameters
    ----------
    pos_weight : float or 'balanced'
        Fixed foreground weight, or ``'balanced'`` for the batch's inverse frequency.
    max_pos_weight : float
        Upper bound of the balanced weight (a target of 1 voxel in a million would
        otherwise get 10^6).
    reduction : {'mean', 'none'}
        As in :class:`torch.nn.BCEWithLogitsLoss`.

    References
    ----------
    .. [1] Sadikine et al., ISBI 2023, Eq. 5: "L_mt and L_s combine Dice and weighted
           cross-entropy" (the weighting is not specified; inverse class frequency is the
           usual choice).

    Examples
    --------
    >>> import torch
    >>> loss = BalancedBCEWithLogitsLoss("balanced", max_pos_weight=100)
    >>> target = torch.zeros(1, 1, 10); target[..., 0] = 1
    >>> float(loss.current_pos_weight(target))
    9.0
    """

    def __init__(self, pos_weight="balanced", max_pos_weight: float = 50.0, reduction: str = "mean"):
        super().__init__()
        if pos_weight != "balanced" and not (isinstance(pos_weight, (int, float)) and pos_weight > 0):
            raise ValueError(f"pos_weight must be 'balanced' or a positive number, got {pos_weight!r}")
        if not max_pos_weight >= 1:
            raise ValueError(f"max_pos_weight must be >= 1, got {max_pos_weight!r}")
        self.pos_weight = pos_weight
        self.max_pos_weight = float(max_pos_weight)
        self.reduction = reduction

    def current_pos_weight(self, target: torch.Tensor) -> torch.Tensor:
        if self.pos_weight != "balanced":
            return torch.tensor(float(self.pos_weight), device=target.device)
        positives = target.float().sum()
        negatives = target.numel() - positives
        return (negatives / positives.clamp(min=1)).clamp(1.0, self.max_pos_weight).detach()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = self.current_pos_weight(target).to(logits.dtype)
        loss = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), pos_weight=weight,
                                                  reduction=self.reduction)
        return loss


def build_region_loss(batch_dice: bool, ddp: bool, use_ignore_label: bool,
                      deep_supervision_weights: Optional[Sequence[float]], compile_dice: bool = False,
                      bce_pos_weight: Union[None, float, str] = None, max_pos_weight: float = 50.0) -> nn.Module:
    """Dice + binary cross-entropy, as nnU-Net trains its regions (``nnUNetTrainer._build_loss``).

    Auxiliary masks get the same loss family and the same deep-supervision weights as the
    main task (Sadikine et al., Eq. 5: "L_mt and L_s combine Dice and weighted cross-entropy"; we use
    nnU-Net's region loss, whose BCE is unweighted, so that L_s and L_mt stay comparable).

    Parameters
    ----------
    batch_dice : bool
        From the plan's configuration.
    ddp : bool
        Whether Dice statistics are gathered across DDP ranks.
    use_ignore_label : bool
        If True the target's last channel is the ignore mask.
    deep_supervision_weights : sequence of float or None
        Weights per output, highest resolution first; None without deep supervision.
    compile_dice : bool
        Compile the Dice term like nnU-Net does when ``nnUNet_compile`` is on.
    bce_pos_weight : float or 'balanced', optional
        Weight of foreground voxels in the binary cross-entropy, the "weighted cross-entropy"
        of Sadikine et al., Eq. 5 (:class:`BalancedBCEWithLogitsLoss`). None (nnU-Net's loss)
        weights both classes 1.
    max_pos_weight : float
        Upper bound of the ``'balanced'`` weight.
    """
    loss = DC_and_BCE_loss({}, {"batch_dice": batch_dice, "do_bg": True, "smooth": 1e-5, "ddp": ddp},
                           use_ignore_label=use_ignore_label, dice_class=MemoryEfficientSoftDiceLoss)
    if bce_pos_weight is not None:
        loss.ce = BalancedBCEWithLogitsLoss(bce_pos_weight, max_pos_weight,
                                            reduction="none" if use_ignore_label else "mean")
    if compile_dice:
        loss.dc = torch.compile(loss.dc)
    if deep_supervision_weights is not None:
        loss = DeepSupervisionWrapper(loss, list(deep_supervision_weights))
    return loss


def with_ignore_channel(target: torch.Tensor, valid: Optional[torch.Tensor]) -> torch.Tensor:
    """Append nnU-Net's ignore channel (True = ignored) to a binary target, if there is one."""
    if valid is None:
        return target
    return torch.cat((target.bool(), ~valid), 1)
