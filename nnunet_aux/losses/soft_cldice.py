r"""soft-clDice (Shit et al., CVPR 2021), pure torch: soft skeletons by iterated min/max pooling.

clDice compares each mask with the other's skeleton: topology precision (how much of the
predicted skeleton lies inside the ground truth) and topology sensitivity (how much of the
ground-truth skeleton the prediction covers). The soft skeleton makes both differentiable.
Works on 2D (B, C, H, W) and 3D (B, C, D, H, W) tensors.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ._numerics import autocast_disabled

__all__ = ["soft_erode", "soft_dilate", "soft_open", "soft_skeleton", "soft_cldice", "soft_cldice_loss"]


def _check_ndim(x: torch.Tensor) -> None:
    if x.ndim not in (4, 5):
        raise ValueError(f"expected a (B, C, H, W) or (B, C, D, H, W) tensor, got shape {tuple(x.shape)}")


def soft_erode(x: torch.Tensor) -> torch.Tensor:
    """Soft erosion: the minimum over the 4- (2D) or 6-neighbourhood (3D), by min-pooling along each axis.

    Parameters
    ----------
    x : Tensor (B, C, H, W) or (B, C, D, H, W)
        Soft masks in [0, 1].

    Returns
    -------
    Tensor, same shape

    References
    ----------
    .. [1] S. Shit, J. C. Paetzold et al., "clDice - a novel topology-preserving loss function for
           tubular structure segmentation", CVPR 2021, arXiv:2003.07311, Sect. 3.3 (Alg. 1).

    Examples
    --------
    >>> soft_erode(torch.tensor([[[[0., 1., 1., 1., 0.]]]]))
    tensor([[[[0., 0., 1., 0., 0.]]]])
    """
    _check_ndim(x)
    # padding with +inf (via -max_pool(-x) and max_pool's implicit -inf padding): borders are not eroded
    n = x.ndim - 2
    eroded = []
    for axis in range(n):
        kernel = [1] * n
        kernel[axis] = 3
        padding = [k // 2 for k in kernel]
        pool = F.max_pool2d if n == 2 else F.max_pool3d
        eroded.append(-pool(-x, kernel, 1, padding))
    out = eroded[0]
    for e in eroded[1:]:
        out = torch.minimum(out, e)
    return out


def soft_dilate(x: torch.Tensor) -> torch.Tensor:
    """Soft dilation: the maximum over the 3x3 (2D) or 3x3x3 (3D) neighbourhood (max-pooling).

    Parameters
    ----------
    x : Tensor (B, C, H, W) or (B, C, D, H, W)

    Returns
    -------
    Tensor, same shape

    References
    ----------
    .. [1] Shit et al., CVPR 2021, Sect. 3.3 (Alg. 1).

    Examples
    --------
    >>> soft_dilate(torch.tensor([[[[0., 0., 1., 0., 0.]]]]))
    tensor([[[[0., 1., 1., 1., 0.]]]])
    """
    _check_ndim(x)
    pool = F.max_pool2d if x.ndim == 4 else F.max_pool3d
    return pool(x, 3, 1, 1)


def soft_open(x: torch.Tensor) -> torch.Tensor:
    """Soft opening: dilation of the erosion.

    Examples
    --------
    >>> soft_open(torch.tensor([[[[0., 1., 0., 1., 1., 1.]]]]))
    tensor([[[[0., 0., 0., 1., 1., 1.]]]])
    """
    return soft_dilate(soft_erode(x))


def soft_skeleton(x: torch.Tensor, iterations: int = 3) -> torch.Tensor:
    r"""Soft skeleton of soft masks (Shit et al., Alg. 1).

    .. math::

        S \leftarrow \mathrm{ReLU}(I - \mathrm{open}(I)); \quad \text{repeat } k \text{ times: }
        I \leftarrow \mathrm{erode}(I),\ \delta = \mathrm{ReLU}(I - \mathrm{open}(I)),\
        S \leftarrow S + \mathrm{ReLU}(\delta - S\,\delta).

    Parameters
    ----------
    x : Tensor (B, C, H, W) or (B, C, D, H, W)
        Soft masks in [0, 1].
    iterations : int
        k, at least the largest radius (in voxels) of the structures to skeletonise.

    Returns
    -------
    Tensor, same shape, values in [0, 1]

    References
    ----------
    .. [1] Shit et al., CVPR 2021, arXiv:2003.07311, Sect. 3.3, Alg. 1.

    Examples
    --------
    >>> bar = torch.zeros(1, 1, 5, 7)
    >>> bar[..., 1:4, :] = 1
    >>> soft_skeleton(bar, 3)[0, 0, 1:4, 1:-1]  # the middle row of a 3-voxel-thick bar
    tensor([[0., 0., 0., 0., 0.],
            [1., 1., 1., 1., 1.],
            [0., 0., 0., 0., 0.]])
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be a non-negative int, got {iterations!r}")
    skeleton = F.relu(x - soft_open(x))
    for _ in range(iterations):
        x = soft_erode(x)
        delta = F.relu(x - soft_open(x))
        skeleton = skeleton + F.relu(delta - skeleton * delta)
    return skeleton


def soft_cldice(prediction: torch.Tensor, target: torch.Tensor, iterations: int = 10, smooth: float = 1.0,
                valid: Optional[torch.Tensor] = None, pool_channels: bool = False) -> torch.Tensor:
    r"""soft-clDice of each channel (sums pooled over the batch), or of all channels pooled.

    .. math::

        T_{prec} = \frac{\sum S_P \odot V_L + \epsilon}{\sum S_P + \epsilon}, \quad
        T_{sens} = \frac{\sum S_L \odot V_P + \epsilon}{\sum S_L + \epsilon}, \quad
        \mathrm{clDice} = \frac{2\, T_{prec}\, T_{sens}}{T_{prec} + T_{sens}},

    with :math:`V_P, V_L` the predicted and true masks and :math:`S_P, S_L` their soft skeletons
    (Shit et al., Eq. 1-3 and Alg. 2). Their code (jocpae/clDice, cldice_loss/pytorch/cldice.py,
    ``soft_cldice.forward``) pools the sums over the batch and every channel it is given
    (``pool_channels=True``; with its default ``exclude_background=False`` the background channel
    too); ``pool_channels=False`` gives one clDice per channel, sums pooled over the batch. Empty
    prediction and target give clDice 1.

    Parameters
    ----------
    prediction : Tensor (B, C, ...)
        Predicted probabilities of the C foreground structures.
    target : Tensor (B, C, ...)
        Binary ground truth of each structure.
    iterations : int
        k of :func:`soft_skeleton` (their current code: ``SoftSkeletonize(num_iter=10)``; its ``iter_=3``
        argument is not used).
    smooth : float
        :math:`\epsilon` (their code: 1).
    valid : Tensor (B, 1, ...) of bool, optional
        False on ignored voxels: both masks are set to 0 there before skeletonisation, so
        ignored voxels neither count nor receive a gradient.
    pool_channels : bool
        Pool the sums over the channels too (their code) instead of one clDice per channel.

    Returns
    -------
    cldice : Tensor, float32, (C,), or (1,) with ``pool_channels``

    References
    ----------
    .. [1] S. Shit, J. C. Paetzold, A. Sekuboyina, I. Ezhov, A. Unger, A. Zhylka, J. P. W. Pluim,
           U. Bauer and B. H. Menze, "clDice - a novel topology-preserving loss function for tubular
           structure segmentation", CVPR 2021, arXiv:2003.07311, Eq. 1-3, Alg. 1-2.

    Examples
    --------
    >>> bar = torch.zeros(1, 1, 5, 7)
    >>> bar[..., 1:4, :] = 1
    >>> soft_cldice(bar, bar)
    tensor([1.])
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ")
    _check_ndim(prediction)
    with autocast_disabled(prediction.device):
        p = prediction.float()
        t = target.float()
        if valid is not None:
            p = p * valid.float()
            t = t * valid.float()
        skel_p = soft_skeleton(p, iterations)
        skel_t = soft_skeleton(t, iterations)
        axes = tuple(range(p.ndim)) if pool_channels else (0, *range(2, p.ndim))
        t_prec = ((skel_p * t).sum(axes) + smooth) / (skel_p.sum(axes) + smooth)
        t_sens = ((skel_t * p).sum(axes) + smooth) / (skel_t.sum(axes) + smooth)
        return (2 * t_prec * t_sens / (t_prec + t_sens).clamp_min(1e-8)).reshape(-1)


def soft_cldice_loss(prediction: torch.Tensor, target: torch.Tensor, iterations: int = 10, smooth: float = 1.0,
                     valid: Optional[torch.Tensor] = None, pool_channels: bool = False) -> torch.Tensor:
    r"""The soft-clDice loss :math:`1 - \overline{\mathrm{clDice}}`, mean over structures.

    Shit et al. train with :math:`(1 - \alpha) L_{Dice} + \alpha L_{clDice}` (Eq. 4); the
    trainers here add :math:`\alpha L_{clDice}` to nnU-Net's own loss. Parameters as
    :func:`soft_cldice`.

    Returns
    -------
    loss : Tensor, float32 scalar in [0, 1]

    References
    ----------
    .. [1] Shit et al., CVPR 2021, arXiv:2003.07311, Eq. 3-4.

    Examples
    --------
    >>> empty = torch.zeros(2, 1, 6, 6, 6)
    >>> float(soft_cldice_loss(empty, empty))
    0.0
    """
    return 1 - soft_cldice(prediction, target, iterations, smooth, valid, pool_channels).mean()
