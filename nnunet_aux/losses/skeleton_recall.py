r"""Soft skeleton recall (Kirchhoff et al., ECCV 2024), pure torch.

The Skeleton Recall loss rewards a segmentation for covering the (tubed) skeleton of the
ground truth: thin structures that the prediction breaks lose skeleton voxels, which costs
far more recall than the few boundary voxels that Dice would count. The skeleton itself is
computed on the CPU from the ground truth (:mod:`nnunet_aux.training.skeleton_targets`);
the loss only needs the prediction's probabilities and that binary skeleton.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import distributed as dist

from ._numerics import autocast_disabled

__all__ = ["soft_skeleton_recall", "skeleton_recall_loss", "all_ranks_sum"]


class _AllRanksSum(torch.autograd.Function):
    """Sum of a tensor over the DDP ranks whose backward sums the ranks' gradients.

    The same gradient as nnU-Net's ``AllGatherGrad`` followed by ``.sum(0)``
    (nnunetv2/utilities/ddp_allgather.py, "stolen from pytorch lightning"): every rank computes the
    same pooled loss, its gradient with respect to the local summand is the sum over ranks of the
    incoming gradients.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def all_ranks_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over every process of the default process group, differentiably.

    Without an initialised ``torch.distributed`` group (or with one process) it returns ``tensor``.

    Parameters
    ----------
    tensor : Tensor

    Returns
    -------
    Tensor, same shape: the sum over ranks. Its backward gives each rank the sum over ranks of the
    gradients, as nnU-Net's ``AllGatherGrad`` does, so that after DDP's gradient averaging the
    parameters get the gradient of the loss pooled over all ranks.

    Examples
    --------
    >>> all_ranks_sum(torch.tensor([1.0, 2.0]))  # a single process
    tensor([1., 2.])
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    return _AllRanksSum.apply(tensor)


def soft_skeleton_recall(probabilities: torch.Tensor, skeleton: torch.Tensor, valid: Optional[torch.Tensor] = None,
                         batch_dice: bool = True, smooth: float = 1e-5, ddp: bool = False) -> torch.Tensor:
    r"""Soft recall of the prediction on the ground-truth skeleton, per structure.

    .. math::

        \mathrm{Rec}_c = \frac{\sum_i p_{ic}\, s_{ic} + \epsilon}{\sum_i s_{ic} + \epsilon},

    sums over the voxels of each sample (and over the batch with ``batch_dice``), as in
    ``SoftSkeletonRecallLoss`` of Kirchhoff et al.'s nnU-Net code ([1]_, Sect. 3.2). A structure
    whose skeleton is empty has recall exactly 1 (its loss term is 0 and has a zero gradient).

    Parameters
    ----------
    probabilities : Tensor (B, C, ...)
        Predicted probabilities of the C foreground structures (softmax without the background
        channel, or sigmoid of region logits).
    skeleton : Tensor (B, C, ...)
        Binary (tubed) ground-truth skeleton of each structure.
    valid : Tensor (B, 1, ...) of bool, optional
        False on voxels under nnU-Net's ignore label: they count neither way.
    batch_dice : bool
        Pool the sums over the batch (nnU-Net's ``batch_dice``) instead of one recall per sample.
    smooth : float
        :math:`\epsilon` (Kirchhoff et al. use 1e-5).
    ddp : bool
        With ``batch_dice``: pool the sums over every DDP process too, differentiably (their
        ``SoftSkeletonRecallLoss`` with ``ddp=True``: ``AllGatherGrad``, skeleton_recall/training/loss/dice.py,
        lines 47-49). No effect without an initialised process group.

    Returns
    -------
    recall : Tensor, float32, (C,) with ``batch_dice``, else (B, C)

    References
    ----------
    .. [1] Y. Kirchhoff, M. R. Rokuss, S. Roy, B. Kovacs, C. Ulrich, T. Wald, M. Zenk, P. Vollmuth,
           J. Kleesiek, F. Isensee and K. Maier-Hein, "Skeleton Recall Loss for connectivity
           conserving and resource efficient segmentation of thin tubular structures", ECCV 2024,
           arXiv:2404.03010, Sect. 3.2.

    Examples
    --------
    >>> p = torch.tensor([[[0.5, 1.0, 0.0, 0.0]]])
    >>> s = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]])
    >>> soft_skeleton_recall(p, s, smooth=0.0)
    tensor([0.7500])
    """
    if probabilities.shape != skeleton.shape:
        raise ValueError(f"probabilities {tuple(probabilities.shape)} and skeleton {tuple(skeleton.shape)} differ")
    with autocast_disabled(probabilities.device):
        p = probabilities.float()
        s = skeleton.float()
        if valid is not None:
            s = s * valid.float()
        axes = tuple(range(2, p.ndim))
        intersection = (p * s).sum(axes)
        total = s.sum(axes)
        if batch_dice:
            intersection, total = intersection.sum(0), total.sum(0)
            if ddp:
                intersection, total = all_ranks_sum(intersection), all_ranks_sum(total.detach())
        return (intersection + smooth) / (total + smooth).clamp_min(1e-8)


def skeleton_recall_loss(probabilities: torch.Tensor, skeleton: torch.Tensor, valid: Optional[torch.Tensor] = None,
                         batch_dice: bool = True, smooth: float = 1e-5, ddp: bool = False) -> torch.Tensor:
    r"""The Skeleton Recall loss :math:`1 - \overline{\mathrm{Rec}}`, mean over structures (and samples).

    Kirchhoff et al. minimise :math:`-\overline{\mathrm{Rec}}` (``SoftSkeletonRecallLoss.forward`` returns
    ``-rec``); :math:`1 - \overline{\mathrm{Rec}}` differs by the constant 1, has the same gradient and is 0
    when every skeleton voxel is covered or no skeleton exists.
    See :func:`soft_skeleton_recall` for the parameters.

    Returns
    -------
    loss : Tensor, float32 scalar in [0, 1] for probabilities in [0, 1]

    References
    ----------
    .. [1] Kirchhoff et al., ECCV 2024, arXiv:2404.03010, Sect. 3.2 (``L_SkelRecall``).

    Examples
    --------
    >>> s = torch.zeros(1, 1, 4, 4)
    >>> float(skeleton_recall_loss(torch.rand(1, 1, 4, 4), s))  # no skeleton: nothing to recall
    0.0
    """
    return 1 - soft_skeleton_recall(probabilities, skeleton, valid, batch_dice, smooth, ddp).mean()
