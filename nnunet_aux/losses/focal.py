r"""Focal loss for multi-label presence classification (CMU-Net auxiliary task).

The classification head of CMU-Net [1]_ predicts, for each structure, whether it is
present in the input; each structure is an independent binary decision (sigmoid), so
the loss is the binary focal loss of Lin et al. [2]_ applied to every logit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._numerics import autocast_disabled

__all__ = ["binary_focal_loss", "FocalLoss"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_parameters(alpha: float | None, gamma: float, reduction: str) -> None:
    if alpha is not None and not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1] or be None, got {alpha!r}")
    if not gamma >= 0:
        raise ValueError(f"gamma must be non-negative, got {gamma!r}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def binary_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float | None = 0.8,
    gamma: float = 2.0,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Binary focal loss on independent (multi-label) logits.

    With :math:`p = \sigma(x)` and :math:`p_t = p` for a positive target, :math:`1 - p`
    for a negative one,

    .. math::

        FL = -\alpha_t \, (1 - p_t)^\gamma \, \log p_t,

    where :math:`\alpha_t = \alpha` for positives and :math:`1 - \alpha` for
    negatives ([2]_, Eq. 5). :math:`\log p_t` is computed from the logits
    (binary cross-entropy with logits), so large logits neither overflow nor give
    ``log(0)``.

    Parameters
    ----------
    logits : (B, K) torch.Tensor
        One logit per sample and structure; any shape works, element by element.
    targets : torch.Tensor
        Same shape, 1 where the structure is present and 0 where absent (any dtype).
        Values in between are accepted and interpolate both terms, as in torchvision's
        ``sigmoid_focal_loss``.
    alpha : float or None, optional
        Weight of the positive terms, ``1 - alpha`` weighs the negatives. CMU-Net
        reports 0.8 / 0.2 as best for joint training ([1]_, Sect. 3). ``None`` weighs
        both by 1.
    gamma : float, optional
        Focusing parameter. CMU-Net does not state it; 2 is the value recommended by
        Lin et al. ([2]_, Sect. 5.1), whose loss CMU-Net cites. ``gamma = 0`` gives the
        (alpha-weighted) binary cross-entropy.
    reduction : {'mean', 'sum', 'none'}, optional
        Mean or sum over all elements, or the element-wise loss.

    Returns
    -------
    loss : torch.Tensor
        float32 scalar, or the element-wise loss with the shape of ``logits``.

    References
    ----------
    .. [1] A. Moseley, A. Wang and A. A. Z. Imran, "Context-aware multitasking for
           medical image segmentation" (CMU-Net), Sect. 2 and 3.
    .. [2] T.-Y. Lin, P. Goyal, R. Girshick, K. He and P. Dollar, "Focal loss for dense
           object detection", ICCV 2017, arXiv:1708.02002, Eq. 5.

    Examples
    --------
    A confident correct prediction costs almost nothing, a confident wrong one a lot:

    >>> logits = torch.tensor([[4.0, -4.0, 4.0]])
    >>> targets = torch.tensor([[1, 0, 0]])
    >>> binary_focal_loss(logits, targets, reduction="none")
    tensor([[4.6973e-06, 1.1743e-06, 7.7498e-01]])
    """
    _check_parameters(alpha, gamma, reduction)
    if tuple(targets.shape) != tuple(logits.shape):
        raise ValueError(
            f"targets must have the shape of logits {tuple(logits.shape)}, "
            f"got {tuple(targets.shape)}"
        )
    with autocast_disabled(logits.device):
        x = logits.float()
        y = targets.to(device=x.device, dtype=torch.float32)
        cross_entropy = F.binary_cross_entropy_with_logits(x, y, reduction="none")
        loss = cross_entropy
        if gamma > 0:
            p = torch.sigmoid(x)
            one_minus_p_t = p * (1 - y) + (1 - p) * y
            loss = loss * one_minus_p_t.pow(gamma)
        if alpha is not None:
            loss = loss * (alpha * y + (1 - alpha) * (1 - y))
        if reduction == "mean":
            return loss.mean()
        if reduction == "sum":
            return loss.sum()
        return loss


class FocalLoss(nn.Module):
    """Module form of :func:`binary_focal_loss`.

    Parameters
    ----------
    alpha : float or None, optional
        Weight of positives (0.8, CMU-Net).
    gamma : float, optional
        Focusing parameter (2, Lin et al.).
    reduction : {'mean', 'sum', 'none'}, optional
        Reduction over elements.

    Examples
    --------
    >>> criterion = FocalLoss()
    >>> criterion(torch.zeros(2, 3), torch.ones(2, 3))  # 0.8 * 0.5**2 * log(2)
    tensor(0.1386)
    """

    def __init__(
        self, alpha: float | None = 0.8, gamma: float = 2.0, reduction: str = "mean"
    ) -> None:
        super().__init__()
        _check_parameters(alpha, gamma, reduction)
        self.alpha = alpha
        self.gamma = float(gamma)
        self.reduction = reduction

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}, reduction={self.reduction!r}"

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Loss of ``logits`` against presence ``targets``, see :func:`binary_focal_loss`."""
        return binary_focal_loss(logits, targets, self.alpha, self.gamma, self.reduction)
