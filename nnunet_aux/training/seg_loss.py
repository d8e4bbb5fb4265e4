"""nnU-Net's segmentation loss for auxiliary binary masks."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from torch import nn


def build_region_loss(batch_dice: bool, ddp: bool, use_ignore_label: bool,
                      deep_supervision_weights: Optional[Sequence[float]], compile_dice: bool = False) -> nn.Module:
    """Dice + binary cross-entropy, as nnU-Net trains its regions (``nnUNetTrainer._build_loss``).

    Auxiliary masks get the same loss family and the same deep-supervision weights as the
    main task (paper 1, Eq. 5: "L_mt and L_s combine Dice and weighted cross-entropy"; we use
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
    """
    loss = DC_and_BCE_loss({}, {"batch_dice": batch_dice, "do_bg": True, "smooth": 1e-5, "ddp": ddp},
                           use_ignore_label=use_ignore_label, dice_class=MemoryEfficientSoftDiceLoss)
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
