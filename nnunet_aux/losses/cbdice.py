r"""Centerline boundary Dice (cbDice; Shi et al., MICCAI 2024), pure torch + MONAI's distance transform.

cbDice is clDice with radius-aware weights: every voxel of a mask is weighted by its distance to
the boundary (normalised by the largest skeleton radius of the sample) and every skeleton voxel
by the inverse of its radius, so that thin vessels count as much as thick ones. The formulas
follow the authors' current code, ``SoftcbDiceLoss`` and ``get_weights`` in
PengchengShi1220/cbDice, loss/cbdice_loss.py (the "subtraction-based inverse (linear)" ``I_norm``
of their README's "Important Update"), line references below are to that file.

What carries a gradient (as theirs): the foreground probability map ``p`` only. The target's
weights, the hard prediction ``p > 0.5``, both soft skeletons (of the target and of the hard
prediction) and both distance transforms are computed without gradient.

The distance transforms run every step, on the CPU (scipy) or, for CUDA tensors with cuCIM
installed, on the GPU, through MONAI's ``distance_transform_edt`` (their choice; MONAI's core
install needs only torch and numpy).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from ._numerics import autocast_disabled
from .soft_cldice import soft_skeleton

__all__ = ["distance_transform", "distance_transform_runs_on_gpu", "cbdice_radius_weights", "soft_cbdice",
           "cbdice_loss"]

#: their trainers' ``cbdc_kwargs = {'iter_': 10, 'smooth': 1e-3}`` (nnUNetTrainer_CE_DC_CBDC.py, line 24)
PAPER_CBDICE_ITERATIONS = 10
PAPER_CBDICE_SMOOTH = 1e-3


def distance_transform(mask: torch.Tensor) -> torch.Tensor:
    """Euclidean distance of every foreground voxel to the nearest background voxel, per sample.

    MONAI's ``distance_transform_edt`` (scipy on the CPU, cuCIM on CUDA tensors when installed),
    with the first axis as its channel axis, so each sample is transformed on its own, in voxels.

    Parameters
    ----------
    mask : Tensor (B, ...) of bool or int

    Returns
    -------
    Tensor, float32, same shape and device

    Examples
    --------
    >>> m = torch.zeros(1, 5, 5, dtype=torch.int32)
    >>> m[0, 1:4, 1:4] = 1
    >>> distance_transform(m)[0, 2]
    tensor([0., 1., 2., 1., 0.])
    """
    from monai.transforms import distance_transform_edt  # imported here: MONAI's import takes a while

    return distance_transform_edt(mask.int()).float()


def distance_transform_runs_on_gpu() -> bool:
    """Whether :func:`distance_transform` of a CUDA tensor stays on the GPU (CuPy and cuCIM importable).

    MONAI uses cuCIM's ``distance_transform_edt`` only when both import; otherwise every sample of
    every step goes to the CPU and SciPy: 38 x a stock step at nnU-Net's default 3D network on an
    H200 (benchmarks/RESULTS.md, "On a GPU"). The trainers warn at the start of a CUDA training.

    Returns
    -------
    bool

    Examples
    --------
    >>> isinstance(distance_transform_runs_on_gpu(), bool)
    True
    """
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("cupy", "cucim"))


def cbdice_radius_weights(mask: torch.Tensor, skeleton: torch.Tensor, dim: int
                          ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""The radius maps of ``get_weights`` (lines 93-133) for binary masks and skeletons, without gradient.

    With :math:`d` the distance transform of the mask, :math:`r = d` on the skeleton (0 elsewhere),
    :math:`R = \max(\max r, 1)` and :math:`R_{min} = \max(\min r, 1)` per sample (the minimum over all
    voxels, as theirs: 1 unless the skeleton fills the sample):

    .. math::

        D = \min(d, R) / R, \quad S = r / R, \quad
        I = \left(\frac{R - r + R_{min}}{R}\right)^{\dim - 1} \text{ on the skeleton, 0 elsewhere.}

    Parameters
    ----------
    mask, skeleton : Tensor (B, ...), binary
    dim : int
        2 or 3: the power of the inverse radius weight (theirs: linear in 2D, squared in 3D).

    Returns
    -------
    (D, S, I) : Tensors, float32, the shape of ``mask``

    References
    ----------
    .. [1] P. Shi, J. Hu, Y. Yang, Z. Gao, W. Liu and T. Ma, "Centerline Boundary Dice Loss for Vascular
           Segmentation", MICCAI 2024, arXiv:2407.01517, Sect. 2.

    Examples
    --------
    >>> m = torch.zeros(1, 1, 7)
    >>> m[0, 0, 1:6] = 1
    >>> s = torch.zeros_like(m)
    >>> s[0, 0, 3] = 1
    >>> D, S, I = cbdice_radius_weights(m, s, 2)
    >>> D[0, 0], S[0, 0, 3], I[0, 0, 3]
    (tensor([0.0000, 0.3333, 0.6667, 1.0000, 0.6667, 0.3333, 0.0000]), tensor(1.), tensor(0.3333))
    """
    with torch.no_grad():
        mask = mask > 0.5
        skeleton = skeleton > 0.5
        distances = distance_transform(mask) * mask
        radius = torch.where(skeleton, distances, 0.0)
        flat = radius.flatten(1)
        shape = (-1,) + (1,) * (radius.ndim - 1)
        r_max = flat.amax(1).clamp_min(1).view(shape)  # skel_radius_max = max(skel_i.max(), 1)
        r_min = flat.amin(1).clamp_min(1).view(shape)  # skel_radius_min = max(skel_i.min(), 1)
        dist_norm = torch.minimum(distances, r_max) / r_max
        radius_norm = radius / r_max
        inverse = (r_max - radius + r_min) / r_max
        if dim == 3:
            inverse = inverse ** 2
        inverse = torch.where(skeleton, inverse, 0.0)
    return dist_norm, radius_norm, inverse


def _combine(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Their ``combine_tensors`` (lines 85-91): ``b * c``, but ``a * c`` where ``a != 0`` and ``b == 0``."""
    return torch.where((a != 0) & (b == 0), a * c, b * c)


def soft_cbdice(probabilities: torch.Tensor, target: torch.Tensor, iterations: int = PAPER_CBDICE_ITERATIONS,
                smooth: float = PAPER_CBDICE_SMOOTH, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    r"""cbDice of a foreground probability map against a binary target, sums pooled over the batch.

    As ``SoftcbDiceLoss.forward`` (lines 17-49) with morphological skeletons: :math:`S_L` the soft
    skeleton of the target, :math:`S_P = \mathrm{skel}(p > 0.5) \cdot p`, the radius maps of
    :func:`cbdice_radius_weights` of the target (:math:`D_L, S^R_L, I_L`) and of the hard prediction
    (:math:`D_P, S^R_P, I_P`), :math:`Q_{VL} = D_L L`, :math:`Q_{SLVL} = S^R_L L`, :math:`Q_{SL} = I_L S_L`,
    :math:`Q_{VP} = D_P p`, :math:`Q_{SPVP} = S^R_P p`, :math:`Q_{SP} = I_P S_P`:

    .. math::

        w_{prec} = \frac{\sum Q_{SP} Q_{VL} + \epsilon}{\sum c(Q_{SPVP}, Q_{SLVL}, Q_{SP}) + \epsilon}, \quad
        w_{sens} = \frac{\sum Q_{SL} Q_{VP} + \epsilon}{\sum c(Q_{SLVL}, Q_{SPVP}, Q_{SL}) + \epsilon}, \quad
        \mathrm{cbDice} = \frac{2 w_{prec} w_{sens}}{w_{prec} + w_{sens}},

    :math:`c(A, B, C) = A C` where :math:`A \ne 0, B = 0`, else :math:`B C`. Sums run over the batch
    and all voxels; the radius normalisation is per sample.

    Parameters
    ----------
    probabilities : Tensor (B, 1, ...)
        Foreground probability map p (2D or 3D).
    target : Tensor (B, 1, ...)
        Binary foreground mask L.
    iterations : int
        Iterations of the soft skeleton (their trainers: 10).
    smooth : float
        :math:`\epsilon` (their trainers: 1e-3; the class default 1.0 is not used).
    valid : Tensor (B, 1, ...) of bool, optional
        False on ignored voxels: p and L are set to 0 there first (a package setting; their code
        has no ignore mask).

    Returns
    -------
    Tensor, float32 scalar, non-negative: 1 for a perfect prediction and for an empty prediction of an
    empty target; unlike clDice it can exceed 1 (a prediction thinner than the target puts its
    skeleton where the target's normalised distance exceeds its own normalised radius)

    References
    ----------
    .. [1] P. Shi et al., "Centerline Boundary Dice Loss for Vascular Segmentation", MICCAI 2024,
           arXiv:2407.01517, Eq. 3-5; code PengchengShi1220/cbDice, loss/cbdice_loss.py.

    Examples
    --------
    >>> t = torch.zeros(1, 1, 9, 9)
    >>> t[..., 2:7, 1:8] = 1
    >>> round(float(soft_cbdice(t, t)), 4)  # a perfect prediction
    1.0
    """
    if probabilities.shape != target.shape:
        raise ValueError(f"probabilities {tuple(probabilities.shape)} and target {tuple(target.shape)} differ")
    if probabilities.ndim not in (4, 5) or probabilities.shape[1] != 1:
        raise ValueError(f"expected (B, 1, H, W) or (B, 1, D, H, W), got {tuple(probabilities.shape)}")
    dim = probabilities.ndim - 2
    with autocast_disabled(probabilities.device):
        p = probabilities.float()
        with torch.no_grad():
            t = (target > 0).float()
            if valid is not None:
                t = t * valid.float()
        if valid is not None:
            p = p * valid.float()
        with torch.no_grad():
            hard = (p > 0.5).float()
            skel_hard = soft_skeleton(hard, iterations)
            skel_true = soft_skeleton(t, iterations)
        skel_pred = skel_hard * p
        d_l, r_l, i_l = cbdice_radius_weights(t[:, 0], skel_true[:, 0], dim)
        d_p, r_p, i_p = cbdice_radius_weights(hard[:, 0], (skel_pred[:, 0] > 0.5), dim)
        t0, p0, st0, sp0 = t[:, 0], p[:, 0], skel_true[:, 0], skel_pred[:, 0]
        q_vl, q_slvl, q_sl = d_l * t0, r_l * t0, i_l * st0
        q_vp, q_spvp, q_sp = d_p * p0, r_p * p0, i_p * sp0
        w_prec = ((q_sp * q_vl).sum() + smooth) / (_combine(q_spvp, q_slvl, q_sp).sum() + smooth)
        w_sens = ((q_sl * q_vp).sum() + smooth) / (_combine(q_slvl, q_spvp, q_sl).sum() + smooth)
        return 2 * w_prec * w_sens / (w_prec + w_sens).clamp_min(1e-8)


def cbdice_loss(probabilities: torch.Tensor, target: torch.Tensor, iterations: int = PAPER_CBDICE_ITERATIONS,
                smooth: float = PAPER_CBDICE_SMOOTH, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    r"""The cbDice loss :math:`1 - \mathrm{cbDice}`; parameters as :func:`soft_cbdice`.

    Their ``SoftcbDiceLoss`` returns :math:`-\mathrm{cbDice}`: the same gradient, a constant 1 lower.

    Returns
    -------
    Tensor, float32 scalar, at most 1, 0 for a perfect prediction (see :func:`soft_cbdice`)

    References
    ----------
    .. [1] P. Shi et al., MICCAI 2024, arXiv:2407.01517.

    Examples
    --------
    >>> empty = torch.zeros(2, 1, 6, 6, 6)
    >>> float(cbdice_loss(empty, empty))  # nothing to find, nothing found
    0.0
    """
    return 1 - soft_cbdice(probabilities, target, iterations, smooth, valid)
