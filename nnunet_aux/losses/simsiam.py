r"""Voxel-level SimSiam loss (Lee, Chung and Shin, Eq. 4-7).

Each feature layer has a projection head (``z = proj(f)``) and a prediction head
(``p = pred(z)``) applied voxel by voxel. The loss pulls the prediction of every
sampled voxel towards the stop-gradient projections of all sampled voxels of the same
class, across the batch, without negative pairs; class weights counter the imbalance
between organs (or vessel scales).

The paper's double sum over same-class pairs costs :math:`O(N^2)`; since the cosine is
bilinear in the normalised vectors,

.. math::

    \sum_{i \in c} \sum_{j \in c} \hat p_i \cdot \hat z_j
    = \Big(\sum_{i \in c} \hat p_i\Big) \cdot \Big(\sum_{j \in c} \hat z_j\Big),

it is evaluated from per-class sums of normalised vectors in :math:`O(N C)`.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._numerics import attached_zero, autocast_disabled
from .sampling import (
    _check_voxel_classes,
    _element_offsets,
    _gather_at,
    sample_simsiam_voxels,
    sample_simsiam_voxels_layers,
)

__all__ = [
    "simsiam_class_weights",
    "voxel_simsiam_loss",
    "VoxelSimSiamLoss",
    "sample_simsiam_voxels",
]

_NORM_EPS = 1e-6
_PAIR_REDUCTIONS = ("mean", "sum")


def simsiam_class_weights(classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Class weights :math:`w_c` of Eq. 6 of [1]_.

    .. math::

        w_c = \frac{|P| / |P^c|}{\sum_{c'} |P| / |P^{c'}|},

    with :math:`|P|` the number of sampled voxels and :math:`|P^c|` those of class
    :math:`c`: inverse class frequencies normalised to sum to 1 over the classes
    present. Absent classes get no weight.

    Parameters
    ----------
    classes : (N,) torch.Tensor of int
        Class of each sampled voxel.

    Returns
    -------
    present : (K,) torch.Tensor of int64
        The distinct classes, increasing.
    weights : (K,) torch.Tensor of float32
        Their weights.

    References
    ----------
    .. [1] C. E. Lee, M. Chung and Y.-G. Shin, "Voxel-level Siamese representation
           learning for abdominal multi-organ segmentation", Eq. 6.

    Examples
    --------
    >>> present, weights = simsiam_class_weights(torch.tensor([1, 1, 1, 2]))
    >>> present.tolist(), weights.tolist()
    ([1, 2], [0.25, 0.75])
    """
    present, counts = torch.unique(classes.long(), return_counts=True)
    inverse_frequency = classes.numel() / counts.float()
    return present, inverse_frequency / inverse_frequency.sum()


def voxel_simsiam_loss(
    predictions: torch.Tensor,
    projections: torch.Tensor,
    classes: torch.Tensor,
    include_self: bool = True,
    pair_reduction: str = "mean",
) -> torch.Tensor:
    r"""Class-weighted voxel-level SimSiam loss of one feature layer (Eq. 4-6 of [1]_).

    .. math::

        L = -\sum_c w_c \, \operatorname{red}_{i \in P^c,\, j \in Z^c}
            \frac{p_i}{\|p_i\|} \cdot \frac{\operatorname{stopgrad}(z_j)}{\|z_j\|}

    with :math:`w_c` from :func:`simsiam_class_weights`.

    * Stop-gradient: ``projections`` are detached here, so the loss sends gradients
      through ``predictions`` only (the projection head still learns through
      ``p = pred(z)``), which is what keeps SimSiam from collapsing.
    * Symmetry: the two-view SimSiam loss (Eq. 2) averages ``D(p1, z2)`` and
      ``D(p2, z1)``. Here both ``p`` and ``z`` come from the same voxel features, and
      the double sum over ordered same-class pairs already contains both ``(i, j)``
      and ``(j, i)``; there is no second view to symmetrise over.
    * Self pairs: the paper's sums run over all of :math:`P^c` and :math:`Z^c`, so the
      pair of a voxel with itself (``p_i`` with ``z_i``) is included by default.
      ``include_self=False`` leaves it out (a class with a single voxel then has no
      pair and drops out; the remaining weights are not renormalised).
    * Reduction: the paper sums over pairs, which grows with the square of the number
      of sampled voxels. ``pair_reduction='mean'`` (default) divides each class's sum
      by its number of pairs, so the loss lies in ``[-1, 1]`` whatever the sample
      size; ``'sum'`` is the literal equation.

    Parameters
    ----------
    predictions : (N, C) torch.Tensor
        Prediction-head outputs ``p`` of the sampled voxels.
    projections : (N, C) torch.Tensor
        Projection-head outputs ``z`` of the same voxels.
    classes : (N,) torch.Tensor of int
        Class of each voxel.
    include_self : bool, optional
        Whether the pair ``(i, i)`` counts.
    pair_reduction : {'mean', 'sum'}, optional
        How the pairs of one class are combined.

    Returns
    -------
    loss : torch.Tensor
        float32 scalar; an exact 0 attached to ``predictions`` when there is no pair.

    References
    ----------
    .. [1] C. E. Lee, M. Chung and Y.-G. Shin, "Voxel-level Siamese representation
           learning for abdominal multi-organ segmentation", Eq. 1, 4, 5 and 6.
    .. [2] X. Chen and K. He, "Exploring simple Siamese representation learning",
           CVPR 2021 (stop-gradient).

    Examples
    --------
    Predictions aligned with the projections of their class reach the minimum, -1:

    >>> p = torch.tensor([[1., 0.], [2., 0.], [0., 1.]])
    >>> z = torch.tensor([[3., 0.], [1., 0.], [0., 5.]])
    >>> voxel_simsiam_loss(p, z, torch.tensor([0, 0, 1]))
    tensor(-1.)
    """
    if predictions.ndim != 2 or tuple(projections.shape) != tuple(predictions.shape):
        raise ValueError(
            "predictions and projections must both be (N, C), got shapes "
            f"{tuple(predictions.shape)} and {tuple(projections.shape)}"
        )
    _check_voxel_classes(classes, predictions.shape[0])
    if pair_reduction not in _PAIR_REDUCTIONS:
        raise ValueError(
            f"pair_reduction must be one of {_PAIR_REDUCTIONS}, got {pair_reduction!r}"
        )

    zero = attached_zero(predictions)
    if predictions.shape[0] == 0:
        return zero

    with autocast_disabled(predictions.device):
        p = F.normalize(predictions.float(), dim=1, eps=_NORM_EPS)
        z = F.normalize(projections.detach().float(), dim=1, eps=_NORM_EPS)

        present, weights = simsiam_class_weights(classes.to(p.device))
        group = torch.searchsorted(present, classes.to(p.device).long())
        n_groups = present.numel()

        # Per-class sums of normalised projections: one row per class.
        z_sums = torch.zeros(n_groups, z.shape[1], device=z.device).index_add_(0, group, z)
        # sum_{j in c} p_i . z_j for every voxel i, then summed per class.
        voxel_terms = (p * z_sums[group]).sum(1)
        if not include_self:
            voxel_terms = voxel_terms - (p * z).sum(1)
        class_sums = torch.zeros(n_groups, device=p.device).index_add_(0, group, voxel_terms)

        counts = torch.bincount(group, minlength=n_groups).float()
        n_pairs = counts * counts if include_self else counts * (counts - 1)
        has_pairs = n_pairs > 0
        if not bool(has_pairs.any()):
            return zero
        if pair_reduction == "mean":
            class_sums = class_sums / n_pairs.clamp(min=1)
        return -(weights * torch.where(has_pairs, class_sums, 0.0)).sum()


#: layer l's classes are keyed l * _LAYER_KEY + class (classes are non-negative label values)
_LAYER_KEY = 2 ** 32


def _grouped_simsiam_loss(p: torch.Tensor, z: torch.Tensor, keys: torch.Tensor, layer_weights: torch.Tensor,
                          include_self: bool, pair_reduction: str) -> torch.Tensor:
    """Sum over layers of ``layer_weight * voxel_simsiam_loss`` from normalised rows of all layers.

    ``keys`` is ``layer * _LAYER_KEY + class`` per row; class weights (Eq. 6) are normalised
    within each layer, as :func:`voxel_simsiam_loss` does for its single layer.
    """
    present, group, counts = torch.unique(keys, return_inverse=True, return_counts=True)
    layer = torch.div(present, _LAYER_KEY, rounding_mode="floor")
    n_layers = layer_weights.numel()
    counts = counts.float()
    drawn = torch.zeros(n_layers, device=p.device).index_add_(0, layer, counts)  # |P| per layer
    inverse_frequency = drawn[layer] / counts
    weights = inverse_frequency / torch.zeros(n_layers, device=p.device).index_add_(0, layer, inverse_frequency)[layer]
    z_sums = torch.zeros(present.numel(), z.shape[1], device=z.device).index_add_(0, group, z)
    voxel_terms = (p * z_sums[group]).sum(1)
    if not include_self:
        voxel_terms = voxel_terms - (p * z).sum(1)
    class_sums = torch.zeros(present.numel(), device=p.device).index_add_(0, group, voxel_terms)
    n_pairs = counts * counts if include_self else counts * (counts - 1)
    if pair_reduction == "mean":
        class_sums = class_sums / n_pairs.clamp(min=1)
    # a class without pairs (one voxel, include_self=False) contributes an exact, attached 0
    return -(layer_weights.float()[layer] * weights * torch.where(n_pairs > 0, class_sums, 0.0)).sum()


def _as_layers(value, name: str, n_layers: int | None = None) -> list:
    """One entry per feature layer: a single tensor is one layer, None is none per layer."""
    if value is None:
        return [None] * (n_layers or 1)
    layers = [value] if isinstance(value, torch.Tensor) else list(value)
    if n_layers is not None and len(layers) != n_layers:
        raise ValueError(f"{name} must have one entry per layer ({n_layers}), got {len(layers)}")
    return layers


class VoxelSimSiamLoss(nn.Module):
    r"""Multi-resolution voxel-level SimSiam loss (Eq. 7 of [1]_).

    For every feature layer :math:`f`, voxels are drawn as
    :func:`~nnunet_aux.losses.sampling.sample_simsiam_voxels` draws them (at most 1700,
    false negatives first) and :func:`voxel_simsiam_loss` is evaluated; the layers are
    summed with weights :math:`w_f` (1 in the paper, which uses the last three encoder
    stages). The class weights :math:`w_c` are computed per layer from that layer's draw.
    All layers are drawn (:func:`~nnunet_aux.losses.sampling.sample_simsiam_voxels_layers`)
    and evaluated in one pass, with the same arithmetic: a fixed number of small tensor
    operations and three host synchronisations per call whatever the number of layers,
    which is what the loss costs on a GPU.

    Parameters
    ----------
    layer_weights : sequence of float, optional
        :math:`w_f` per layer; 1 for every layer when omitted.
    max_total : int, optional
        Voxels drawn per layer (1700).
    max_false_negative : int, optional
        False-negative voxels drawn per layer at most (1000).
    include_background : bool, optional
        Whether background voxels are drawn, see
        :func:`~nnunet_aux.losses.sampling.sample_simsiam_voxels`.
    include_self : bool, optional
        Whether a voxel's own pair counts, see :func:`voxel_simsiam_loss`.
    pair_reduction : {'mean', 'sum'}, optional
        See :func:`voxel_simsiam_loss`.

    References
    ----------
    .. [1] C. E. Lee, M. Chung and Y.-G. Shin, "Voxel-level Siamese representation
           learning for abdominal multi-organ segmentation", Eq. 7, Sect. IV-B.

    Examples
    --------
    >>> criterion = VoxelSimSiamLoss(max_total=20, max_false_negative=10)
    >>> p = torch.randn(2, 8, 4, 4, 4, requires_grad=True)
    >>> z = torch.randn(2, 8, 4, 4, 4)
    >>> labels = torch.randint(0, 3, (2, 4, 4, 4))
    >>> loss = criterion([p], [z], [labels], generator=torch.Generator().manual_seed(0))
    >>> -1 <= loss.item() <= 1
    True
    """

    def __init__(
        self,
        layer_weights: Sequence[float] | None = None,
        max_total: int = 1700,
        max_false_negative: int = 1000,
        include_background: bool = False,
        include_self: bool = True,
        pair_reduction: str = "mean",
    ) -> None:
        super().__init__()
        for name, value in (("max_total", max_total), ("max_false_negative", max_false_negative)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if pair_reduction not in _PAIR_REDUCTIONS:
            raise ValueError(
                f"pair_reduction must be one of {_PAIR_REDUCTIONS}, got {pair_reduction!r}"
            )
        self.layer_weights = None if layer_weights is None else tuple(map(float, layer_weights))
        self.max_total = max_total
        self.max_false_negative = max_false_negative
        self.include_background = bool(include_background)
        self.include_self = bool(include_self)
        self.pair_reduction = pair_reduction

    def extra_repr(self) -> str:
        return (
            f"layer_weights={self.layer_weights}, max_total={self.max_total}, "
            f"max_false_negative={self.max_false_negative}, "
            f"include_background={self.include_background}, "
            f"include_self={self.include_self}, pair_reduction={self.pair_reduction!r}"
        )

    def forward(
        self,
        predictions: Sequence[torch.Tensor] | torch.Tensor,
        projections: Sequence[torch.Tensor] | torch.Tensor,
        labels: Sequence[torch.Tensor] | torch.Tensor,
        pred_labels: Sequence[torch.Tensor | None] | torch.Tensor | None = None,
        valid_masks: Sequence[torch.Tensor | None] | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sum of the per-layer losses.

        Parameters
        ----------
        predictions, projections : sequence of (B, C_f, ...) torch.Tensor
            Dense ``p`` and ``z`` of each layer (a single tensor means one layer).
        labels : sequence of (B, ...) torch.Tensor of int
            Ground-truth classes at each layer's resolution.
        pred_labels : sequence of (B, ...) torch.Tensor of int, optional
            Predicted classes at each layer's resolution, to prefer false negatives.
        valid_masks : sequence of (B, ...) torch.Tensor of bool, optional
            Voxels that may be drawn, per layer.
        generator : torch.Generator, optional
            Source of randomness for the draws.

        Returns
        -------
        loss : torch.Tensor
            float32 scalar.
        """
        predictions = _as_layers(predictions, "predictions")
        n_layers = len(predictions)
        if n_layers == 0:
            raise ValueError("predictions must hold at least one layer")
        projections = _as_layers(projections, "projections", n_layers)
        labels = _as_layers(labels, "labels", n_layers)
        pred_labels = _as_layers(pred_labels, "pred_labels", n_layers)
        valid_masks = _as_layers(valid_masks, "valid_masks", n_layers)
        weights = self.layer_weights or (1.0,) * n_layers
        if len(weights) != n_layers:
            raise ValueError(
                f"layer_weights has {len(weights)} entries for {n_layers} layers"
            )

        for layer, (p, z, y) in enumerate(zip(predictions, projections, labels)):
            expected = (p.shape[0],) + tuple(p.shape[2:])
            if p.ndim < 3 or tuple(z.shape) != tuple(p.shape) or tuple(y.shape) != expected:
                raise ValueError(
                    f"layer {layer}: predictions and projections must be (B, C, ...) of "
                    f"the same shape and labels (B, ...) to match; got "
                    f"{tuple(p.shape)}, {tuple(z.shape)} and {tuple(y.shape)}"
                )
        # All layers are drawn, and their losses computed, in one pass (the same arithmetic
        # as voxel_simsiam_loss per layer): a fixed number of small tensor operations and
        # three host synchronisations per step, however many layers.
        draws = sample_simsiam_voxels_layers(
            labels,
            pred_labels,
            max_total=self.max_total,
            max_false_negative=self.max_false_negative,
            valid_masks=valid_masks,
            include_background=self.include_background,
            generator=generator,
        )
        zero = attached_zero(*predictions)
        if sum(indices.numel() for indices, _ in draws) == 0:
            return zero
        device = predictions[0].device
        with autocast_disabled(device):
            width = max(p.shape[1] for p in predictions)
            p_rows, z_rows, keys = [], [], []
            for layer, (p, z, (indices, classes)) in enumerate(zip(predictions, projections, draws)):
                offsets = _element_offsets(p, indices)  # p and z have the same shape
                rows = (_gather_at(p, offsets).float(), _gather_at(z.detach(), offsets).float())
                if p.shape[1] < width:  # zero-padding keeps every norm and dot product
                    rows = tuple(F.pad(r, (0, width - p.shape[1])) for r in rows)
                p_rows.append(rows[0])
                z_rows.append(rows[1])
                keys.append(classes.to(device) + layer * _LAYER_KEY)
            p_hat = F.normalize(torch.cat(p_rows), dim=1, eps=_NORM_EPS)
            z_hat = F.normalize(torch.cat(z_rows), dim=1, eps=_NORM_EPS)
            layer_weights = torch.tensor(weights).to(device, non_blocking=True)  # no stream synchronisation
            loss = _grouped_simsiam_loss(p_hat, z_hat, torch.cat(keys), layer_weights, self.include_self,
                                         self.pair_reduction)
        return zero + loss
