r"""Supervised contrastive loss between vessel scales (Sadikine et al. 2023, Eq. 7-8).

Voxel embeddings from the projection heads of the scale decoders are pulled together
when the voxels belong to the same vessel scale and pushed apart otherwise. Anchors are
a few hundred voxels per scale drawn from the whole batch
(:func:`~nnunet_aux.losses.sampling.sample_voxels`); the loss itself is an
``N x N`` similarity matrix over those anchors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._numerics import attached_zero, autocast_disabled
from .sampling import _SAMPLING_MODES, _check_voxel_classes, gather_voxels, sample_voxels

__all__ = ["scale_contrastive_loss", "ScaleContrastiveLoss", "sample_voxels"]

# Normalising a zero vector divides by this instead of by 0: the result is the zero
# vector and the gradient stays finite (bounded by 1 / eps) instead of NaN.
_NORM_EPS = 1e-6


def scale_contrastive_loss(
    embeddings: torch.Tensor, classes: torch.Tensor, temperature: float = 0.94
) -> torch.Tensor:
    r"""Supervised contrastive loss of Eq. 7-8 of [1]_ over a set of anchors.

    For every anchor :math:`i` and every positive :math:`j` (another anchor of the same
    class),

    .. math::

        l_{i,j} = -\log \frac{\exp(z_i^\top z_j / \tau)}
                  {\exp(z_i^\top z_j / \tau) + \sum_{k \in N_i} \exp(z_i^\top z_k / \tau)}

    with :math:`N_i` the anchors of the other classes, and

    .. math::

        L_c = \frac{1}{|A|} \sum_{i \in A} \frac{1}{|P_i|} \sum_{j \in P_i} l_{i,j}.

    Choices where the paper is silent:

    * :math:`P_i` excludes :math:`i` itself; an anchor without any positive (the only
      sample of its class) has no :math:`1 / |P_i|` and is left out of :math:`A`.
    * An anchor without negatives has :math:`l_{i,j} = -\log 1 = 0`, exactly as the
      equation reads. This only happens when a single class is present, and then
      every term is 0. Such a batch, or one without any positive pair, returns an
      exact float32 zero that stays attached to the autograd graph (never NaN), so
      that every DDP rank runs the same backward.

    Parameters
    ----------
    embeddings : (N, C) torch.Tensor
        One embedding per anchor; they are L2-normalised here. Any float dtype; the
        arithmetic runs in float32, also under autocast.
    classes : (N,) torch.Tensor of int
        Class (vessel scale) of each anchor; any integer values.
    temperature : float, optional
        :math:`\tau > 0`. The default 0.94 is the value found in [1]_ (Sect. 3.2).

    Returns
    -------
    loss : torch.Tensor
        Scalar float32 tensor.

    Notes
    -----
    The loss builds a few ``N x N`` float32 matrices: about ``16 N^2`` bytes with
    gradients, 150 MB for N = 3000. Keep N to a few thousand (``n_per_class`` times the
    number of scales). The denominator is evaluated as a log-sum-exp, so small
    temperatures do not overflow.

    References
    ----------
    .. [1] A. Sadikine, B. Badic, J.-P. Tasu, V. Noblet, P. Ballet, D. Visvikis and
           P.-H. Conze, "Scale-specific auxiliary multi-task contrastive learning for
           deep liver vessel segmentation", ISBI 2023, Sect. 2.3, Eq. 7 and 8.

    Examples
    --------
    Two tight, opposite clusters: each anchor has one positive at similarity 1 and two
    negatives at -1, so every term is ``log(1 + 2 exp(-2 / tau))``:

    >>> embeddings = torch.tensor([[1., 0.], [1., 0.], [-1., 0.], [-1., 0.]])
    >>> loss = scale_contrastive_loss(embeddings, torch.tensor([1, 1, 2, 2]), 0.5)
    >>> round(loss.item(), 4)
    0.036
    >>> scale_contrastive_loss(embeddings, torch.tensor([1, 1, 1, 1])).item()
    0.0
    """
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (N, C), got shape {tuple(embeddings.shape)}")
    _check_voxel_classes(classes, embeddings.shape[0])
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")

    zero = attached_zero(embeddings)
    if embeddings.shape[0] < 2:
        return zero

    with autocast_disabled(embeddings.device):
        z = F.normalize(embeddings.float(), dim=1, eps=_NORM_EPS)
        similarity = z @ z.T / temperature

        classes = classes.to(embeddings.device)
        same_class = classes[:, None] == classes[None, :]
        positive = same_class & ~torch.eye(len(classes), dtype=torch.bool, device=z.device)
        negative = ~same_class
        has_positive = positive.any(1)
        if not bool(has_positive.any()) or not bool(negative.any()):
            return zero

        # Past the check above at least two classes are present, so every anchor has
        # negatives and no row of this masked logsumexp is all -inf (its backward
        # would be NaN).
        log_negatives = torch.logsumexp(
            similarity.masked_fill(~negative, float("-inf")), dim=1, keepdim=True
        )
        # l_ij = -s_ij + log(exp(s_ij) + sum_k exp(s_ik)), stable for any temperature.
        pair_loss = torch.logaddexp(similarity, log_negatives) - similarity
        pair_loss = torch.where(positive, pair_loss, 0.0)

        n_positive = positive.sum(1)
        anchor_loss = pair_loss.sum(1) / n_positive.clamp(min=1)
        return anchor_loss[has_positive].mean()


class ScaleContrastiveLoss(nn.Module):
    r"""Scale contrastive loss on dense embeddings: sample anchors, then Eq. 7-8.

    Parameters
    ----------
    temperature : float, optional
        :math:`\tau`; 0.94 as in [1]_.
    n_per_class : int, optional
        Anchors drawn per scale from the whole batch. The paper does not give its
        number; 512 per scale (1536 anchors for three scales) keeps the ``N x N``
        matrices of :func:`scale_contrastive_loss` at about 40 MB.
    sampling : {'random', 'hard'}, optional
        How anchors are drawn, see :func:`~nnunet_aux.losses.sampling.sample_voxels`.

    References
    ----------
    .. [1] Sadikine et al., ISBI 2023, Sect. 2.3 and 3.2.

    Examples
    --------
    >>> criterion = ScaleContrastiveLoss(n_per_class=8)
    >>> embeddings = torch.randn(1, 4, 6, 6, 6, requires_grad=True)
    >>> scale_labels = torch.randint(0, 4, (1, 6, 6, 6))
    >>> loss = criterion(embeddings, scale_labels, generator=torch.Generator().manual_seed(0))
    >>> loss.backward()
    >>> bool(torch.isfinite(loss)), embeddings.grad.shape
    (True, torch.Size([1, 4, 6, 6, 6]))
    """

    def __init__(
        self, temperature: float = 0.94, n_per_class: int = 512, sampling: str = "random"
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        if isinstance(n_per_class, bool) or not isinstance(n_per_class, int) or n_per_class < 1:
            raise ValueError(f"n_per_class must be a positive int, got {n_per_class!r}")
        if sampling not in _SAMPLING_MODES:
            raise ValueError(f"sampling must be one of {_SAMPLING_MODES}, got {sampling!r}")
        self.temperature = float(temperature)
        self.n_per_class = n_per_class
        self.sampling = sampling

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, n_per_class={self.n_per_class}, "
            f"sampling={self.sampling!r}"
        )

    def forward(
        self,
        embeddings: torch.Tensor,
        scale_labels: torch.Tensor,
        valid_mask: torch.Tensor | None = None,
        hardness: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Loss of one batch.

        Parameters
        ----------
        embeddings : (B, C, ...) torch.Tensor
            Projected embeddings (Eq. 6), channel first.
        scale_labels : (B, ...) torch.Tensor of int
            Vessel scale per voxel at the embeddings' resolution, 0 = not a vessel.
        valid_mask : (B, ...) torch.Tensor of bool, optional
            Voxels that may be drawn.
        hardness : (B, ...) torch.Tensor of float, optional
            Required when ``sampling='hard'``.
        generator : torch.Generator, optional
            Source of randomness for the draw.

        Returns
        -------
        loss : torch.Tensor
            Scalar float32 tensor, exactly 0 (attached to the graph) when the batch
            holds fewer than two scales.
        """
        if embeddings.ndim < 3:
            raise ValueError(
                f"embeddings must be (B, C, ...), got shape {tuple(embeddings.shape)}"
            )
        expected = (embeddings.shape[0],) + tuple(embeddings.shape[2:])
        if tuple(scale_labels.shape) != expected:
            raise ValueError(
                f"scale_labels must have shape {expected} to match embeddings "
                f"{tuple(embeddings.shape)}, got {tuple(scale_labels.shape)}"
            )
        indices, classes = sample_voxels(
            scale_labels,
            self.n_per_class,
            mode=self.sampling,
            valid_mask=valid_mask,
            hardness=hardness,
            generator=generator,
        )
        anchors = gather_voxels(embeddings, indices)
        # An empty draw still depends on the embeddings so the graph reaches the heads.
        return scale_contrastive_loss(anchors, classes, self.temperature) + attached_zero(
            embeddings
        )
