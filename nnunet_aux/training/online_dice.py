"""nnU-Net's online ("pseudo") Dice counts of the main output, for validation steps."""

from __future__ import annotations

from typing import Dict

import numpy as np
import torch
from nnunetv2.training.loss.dice import get_tp_fp_fn_tn


def online_dice_counts(output: torch.Tensor, target: torch.Tensor, label_manager) -> Dict[str, np.ndarray]:
    """True/false positive and false negative counts per class or region.

    The computation of ``nnUNetTrainer.validation_step`` after its forward pass, so that
    trainers which run their own forward (network plus auxiliary heads) log the same
    pseudo Dice as stock nnU-Net.

    Parameters
    ----------
    output : Tensor
        Highest-resolution main logits (B, C, ...).
    target : Tensor
        nnU-Net's target at that resolution.
    label_manager : nnunetv2 LabelManager

    Returns
    -------
    counts : dict
        ``tp_hard``, ``fp_hard``, ``fn_hard`` as numpy arrays, background excluded.
    """
    axes = [0] + list(range(2, output.ndim))
    if label_manager.has_regions:
        predicted = (torch.sigmoid(output) > 0.5).long()
    else:
        predicted = torch.zeros(output.shape, device=output.device, dtype=torch.float16)
        predicted.scatter_(1, output.argmax(1)[:, None], 1)
    mask = None
    if label_manager.has_ignore_label:
        if not label_manager.has_regions:
            mask = (target != label_manager.ignore_label).float()
            target = torch.where(target == label_manager.ignore_label, torch.zeros_like(target), target)
        else:
            mask = ~target[:, -1:].bool()
            target = target[:, :-1]
    tp, fp, fn, _ = get_tp_fp_fn_tn(predicted, target, axes=axes, mask=mask)
    tp, fp, fn = (t.detach().cpu().numpy() for t in (tp, fp, fn))
    if not label_manager.has_regions:
        tp, fp, fn = tp[1:], fp[1:], fn[1:]
    return {"tp_hard": tp, "fp_hard": fp, "fn_hard": fn}
