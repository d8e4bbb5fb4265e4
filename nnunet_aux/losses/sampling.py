"""Choose which voxels of a batch enter a voxel-level representation loss.

Voxel-level losses compare feature vectors of voxels; comparing every voxel of a 3D
patch is out of reach (an N x N similarity over 10^5 voxels), so a few thousand voxels
are drawn per step. The functions here return *flat indices* into a label tensor of
shape ``(B, *spatial)`` (so one index names both the sample and the position), which
:func:`gather_voxels` turns into an ``(N, C)`` matrix of feature vectors.

Everything is vectorised over voxels (one random permutation and stable sorts); only
the number of voxels returned depends on the data.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

_SAMPLING_MODES = ("random", "hard")


def _check_label_tensor(labels: torch.Tensor, name: str = "labels") -> None:
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must have an integer dtype, got {labels.dtype}")
    if labels.ndim < 1:
        raise ValueError(f"{name} must have a batch dimension, got a 0-d tensor")


def _check_voxel_classes(classes: torch.Tensor, n: int) -> None:
    """``classes`` of ``n`` voxels: an integer tensor of shape ``(n,)``."""
    if classes.ndim != 1 or classes.shape[0] != n:
        raise ValueError(f"classes must be (N,) with N = {n}, got shape {tuple(classes.shape)}")
    if classes.is_floating_point() or classes.dtype == torch.bool:
        raise ValueError(f"classes must have an integer dtype, got {classes.dtype}")


def _check_same_shape(other: torch.Tensor | None, labels: torch.Tensor, name: str) -> None:
    if other is not None and tuple(other.shape) != tuple(labels.shape):
        raise ValueError(
            f"{name} must have the shape of labels {tuple(labels.shape)}, "
            f"got {tuple(other.shape)}"
        )


def _random_permutation(
    n: int, device: torch.device, generator: torch.Generator | None
) -> torch.Tensor:
    # A generator lives on one device; draw there and move, so that a CPU generator
    # also drives sampling of CUDA tensors (and the draw does not depend on the device).
    source = generator.device if generator is not None else device
    return torch.randperm(n, generator=generator, device=source).to(device)


def _rank_within_groups(sorted_groups: torch.Tensor) -> torch.Tensor:
    """Position of each element inside its run of equal values (input is sorted)."""
    if sorted_groups.numel() == 0:
        return torch.zeros_like(sorted_groups, dtype=torch.long)
    _, counts = torch.unique_consecutive(sorted_groups, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    positions = torch.arange(sorted_groups.numel(), device=sorted_groups.device)
    return positions - torch.repeat_interleave(starts, counts)


def sample_voxels(
    labels: torch.Tensor,
    n_per_class: int,
    mode: str = "random",
    valid_mask: torch.Tensor | None = None,
    hardness: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Draw at most ``n_per_class`` voxels of every positive class across a batch.

    Used to build the anchor set of the scale contrastive loss [1]_: each vessel scale
    ``1..S`` contributes up to ``n_per_class`` voxels, pooled over the whole batch so
    that a sample without, say, small vessels simply contributes none. Label 0 (not a
    vessel) is never drawn.

    Parameters
    ----------
    labels : (B, ...) torch.Tensor of int
        Class of every voxel at the resolution of the embeddings (0 = not sampled).
        Negative values are never sampled either.
    n_per_class : int
        Upper bound on the voxels drawn per class; a class with fewer voxels gives all
        of them.
    mode : {'random', 'hard'}, optional
        ``'random'``: uniform without replacement within each class. ``'hard'``: the
        ``n_per_class`` voxels with the highest ``hardness`` in each class (ties broken
        at random). A natural hardness is one minus the probability that the auxiliary
        decoder of the voxel's true scale assigns to it (see
        :func:`voxel_hardness`): the voxels the scale decoders get most wrong.
    valid_mask : (B, ...) torch.Tensor of bool, optional
        Voxels that may be drawn; ``False`` excludes a voxel (e.g. nnU-Net's ignore
        label or padding).
    hardness : (B, ...) torch.Tensor of float, optional
        Per-voxel score, required when ``mode='hard'`` and unused otherwise. It is read
        without gradient.
    generator : torch.Generator, optional
        Source of randomness, for reproducible draws. It may live on another device than
        ``labels``.

    Returns
    -------
    indices : (N,) torch.Tensor of int64
        Flat indices into ``labels.reshape(-1)``, grouped by class in increasing order.
    classes : (N,) torch.Tensor of int64
        ``labels.reshape(-1)[indices]``.

    References
    ----------
    .. [1] Sadikine et al., "Scale-specific auxiliary multi-task contrastive learning
           for deep liver vessel segmentation", ISBI 2023, Sect. 2.3 (anchor set
           :math:`\mathcal{A}` of Eq. 7).

    Examples
    --------
    >>> labels = torch.tensor([[0, 1, 1, 1, 2]])
    >>> indices, classes = sample_voxels(labels, n_per_class=2, mode="hard",
    ...                                  hardness=torch.tensor([[0., .1, .9, .5, .3]]))
    >>> indices.tolist(), classes.tolist()
    ([2, 3, 4], [1, 1, 2])
    """
    _check_label_tensor(labels)
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, int) or n_per_class < 0:
        raise ValueError(f"n_per_class must be a non-negative int, got {n_per_class!r}")
    if mode not in _SAMPLING_MODES:
        raise ValueError(f"mode must be one of {_SAMPLING_MODES}, got {mode!r}")
    if mode == "hard" and hardness is None:
        raise ValueError("mode='hard' needs a hardness tensor")
    _check_same_shape(valid_mask, labels, "valid_mask")
    _check_same_shape(hardness, labels, "hardness")

    flat_labels = labels.reshape(-1)
    candidates = flat_labels > 0
    if valid_mask is not None:
        candidates &= valid_mask.reshape(-1).to(device=labels.device, dtype=torch.bool)
    indices = torch.nonzero(candidates).squeeze(1)

    # Shuffle first: in random mode the first n of each class are then a uniform draw,
    # in hard mode equal hardness values are ordered at random instead of by position
    # (which would favour the first sample of the batch).
    indices = indices[_random_permutation(indices.numel(), labels.device, generator)]
    if mode == "hard":
        scores = hardness.detach().reshape(-1).to(labels.device)[indices]
        indices = indices[torch.argsort(scores, descending=True, stable=True)]
    classes = flat_labels[indices].long()
    by_class = torch.argsort(classes, stable=True)
    indices, classes = indices[by_class], classes[by_class]

    keep = _rank_within_groups(classes) < n_per_class
    return indices[keep], classes[keep]


def sample_simsiam_voxels(
    labels: torch.Tensor,
    pred_labels: torch.Tensor | None = None,
    max_total: int = 1700,
    max_false_negative: int = 1000,
    valid_mask: torch.Tensor | None = None,
    include_background: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw the voxels of one feature layer for the voxel-level SimSiam loss.

    Follows the sampling of [1]_ (Sect. IV-B): at most ``max_total`` (1700) voxels per
    hidden layer from the whole batch, false negatives preferred: up to
    ``max_false_negative`` (1000) of them are drawn first, the remaining budget is
    filled at random with the other candidate voxels (true positives, and background
    when ``include_background``). False negatives beyond ``max_false_negative`` are not
    drawn, as in the paper.

    Parameters
    ----------
    labels : (B, ...) torch.Tensor of int
        Ground-truth class per voxel at the layer's resolution. Negative values are
        never drawn; 0 (background) only when ``include_background``.
    pred_labels : (B, ...) torch.Tensor of int, optional
        Predicted class per voxel at the same resolution (e.g. the arg-max of the
        segmentation output, resampled by nearest neighbour). A voxel with
        ``labels > 0`` and ``pred_labels != labels`` is a false negative. Without it,
        all voxels are drawn at random.
    max_total : int, optional
        Most voxels returned.
    max_false_negative : int, optional
        Most false-negative voxels returned.
    valid_mask : (B, ...) torch.Tensor of bool, optional
        Voxels that may be drawn.
    include_background : bool, optional
        Whether background voxels (label 0) are candidates. The paper draws foreground
        voxels (its false negatives and true positives); background makes the loss
        meaningful with a single foreground class.
    generator : torch.Generator, optional
        Source of randomness.

    Returns
    -------
    indices : (N,) torch.Tensor of int64
        Flat indices into ``labels.reshape(-1)``, the false negatives first.
    classes : (N,) torch.Tensor of int64
        ``labels.reshape(-1)[indices]``.

    References
    ----------
    .. [1] C. E. Lee, M. Chung and Y.-G. Shin, "Voxel-level Siamese representation
           learning for abdominal multi-organ segmentation", Sect. IV-B.

    Examples
    --------
    >>> labels = torch.tensor([[1, 1, 1, 1, 0, 2]])
    >>> pred = torch.tensor([[0, 1, 0, 1, 0, 2]])
    >>> indices, classes = sample_simsiam_voxels(labels, pred, max_total=3,
    ...                                          max_false_negative=2)
    >>> sorted(indices[:2].tolist())  # both false negatives come first
    [0, 2]
    >>> classes.shape
    torch.Size([3])
    """
    _check_label_tensor(labels)
    for name, value in (("max_total", max_total), ("max_false_negative", max_false_negative)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    if pred_labels is not None:
        _check_label_tensor(pred_labels, "pred_labels")
    _check_same_shape(pred_labels, labels, "pred_labels")
    _check_same_shape(valid_mask, labels, "valid_mask")

    flat_labels = labels.reshape(-1)
    candidates = flat_labels >= 0 if include_background else flat_labels > 0
    if valid_mask is not None:
        candidates &= valid_mask.reshape(-1).to(device=labels.device, dtype=torch.bool)
    indices = torch.nonzero(candidates).squeeze(1)
    indices = indices[_random_permutation(indices.numel(), labels.device, generator)]

    if pred_labels is None:
        indices = indices[:max_total]
    else:
        candidate_labels = flat_labels[indices]
        predicted = pred_labels.reshape(-1).to(labels.device)[indices]
        false_negative = (candidate_labels > 0) & (predicted != candidate_labels)
        # Rank of each false negative in the random order; the first max_false_negative
        # are kept, the others dropped, every other candidate queues after them.
        fn_rank = torch.cumsum(false_negative.long(), 0) - 1
        chosen_fn = false_negative & (fn_rank < max_false_negative)
        queue = indices[~false_negative]
        indices = torch.cat([indices[chosen_fn], queue])[:max_total]
    return indices, flat_labels[indices].long()


def sample_simsiam_voxels_layers(
    labels: Sequence[torch.Tensor],
    pred_labels: Sequence[torch.Tensor | None] | None = None,
    max_total: int = 1700,
    max_false_negative: int = 1000,
    valid_masks: Sequence[torch.Tensor | None] | None = None,
    include_background: bool = False,
    generator: torch.Generator | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`sample_simsiam_voxels` for several feature layers at once.

    Each layer gets its own draw, with the same rules (at most ``max_total`` voxels, false
    negatives first up to ``max_false_negative``, the other candidates in random order),
    but all layers are drawn in one pass: one random key per voxel, one sort of the
    voxels of every layer by (layer, tier, key), where the tier is 0 for a false negative,
    1 for another candidate and 2 for a voxel that is never drawn. This costs a fixed
    number of tensor operations whatever the number of layers, and two host
    synchronisations, which matters on a GPU where the per-layer draw's small operations
    and synchronisations cost more than its arithmetic. The draws follow the same
    distribution as :func:`sample_simsiam_voxels` but are not the same for a given
    generator.

    Parameters
    ----------
    labels : sequence of (B, ...) torch.Tensor of int
        Ground-truth classes of each layer (shapes may differ between layers).
    pred_labels : sequence of (B, ...) torch.Tensor of int or None, optional
        Predicted classes per layer (None for a layer: no false-negative preference).
    max_total, max_false_negative, include_background, generator
        As in :func:`sample_simsiam_voxels`.
    valid_masks : sequence of (B, ...) torch.Tensor of bool or None, optional
        Voxels that may be drawn, per layer.

    Returns
    -------
    draws : list of (indices, classes)
        Per layer, flat indices into ``labels[layer].reshape(-1)`` (the false negatives
        first) and their classes, as :func:`sample_simsiam_voxels` returns them.

    Examples
    --------
    >>> labels = [torch.tensor([[1, 1, 1, 1, 0, 2]]), torch.tensor([[2, 0, 2]])]
    >>> pred = [torch.tensor([[0, 1, 0, 1, 0, 2]]), None]
    >>> (i0, c0), (i1, c1) = sample_simsiam_voxels_layers(labels, pred, max_total=3,
    ...                                                   max_false_negative=2)
    >>> sorted(i0[:2].tolist()), c0.shape, sorted(i1.tolist())
    ([0, 2], torch.Size([3]), [0, 2])
    """
    n_layers = len(labels)
    pred_labels = [None] * n_layers if pred_labels is None else list(pred_labels)
    valid_masks = [None] * n_layers if valid_masks is None else list(valid_masks)
    if len(pred_labels) != n_layers or len(valid_masks) != n_layers:
        raise ValueError("labels, pred_labels and valid_masks need one entry per layer")
    for name, value in (("max_total", max_total), ("max_false_negative", max_false_negative)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    if n_layers == 0:
        return []
    device = labels[0].device
    flat_labels, tiers, sizes = [], [], []
    for y, pred, valid in zip(labels, pred_labels, valid_masks):
        flat, tier = _layer_tiers(y, pred, valid, include_background, device)
        flat_labels.append(flat)
        tiers.append(tier)
        sizes.append(flat.numel())
    flat = torch.cat(flat_labels)
    # (no host-to-device copy of the sizes: a blocking copy would synchronise with the GPU)
    layer = torch.cat([torch.full((n,), i, dtype=torch.long, device=device) for i, n in enumerate(sizes)])
    group = layer * 3 + torch.cat(tiers)
    source = generator.device if generator is not None else device
    key = torch.rand(flat.numel(), generator=generator, device=source, dtype=torch.float64).to(device)
    order = torch.argsort(group.double() + key)  # by layer, then tier, then at random
    group, layer = group[order], layer[order]
    tier = group - layer * 3
    position = torch.arange(order.numel(), device=device)
    # position of each voxel within its (layer, tier) run, then among the kept voxels of its layer
    starts = torch.ones_like(group, dtype=torch.bool)
    starts[1:] = group[1:] != group[:-1]
    rank = position - torch.cummax(torch.where(starts, position, 0), 0).values
    kept = ((tier == 0) & (rank < max_false_negative)) | (tier == 1)
    before = torch.cumsum(kept.long(), 0) - kept.long()
    layer_starts = torch.ones_like(starts)
    layer_starts[1:] = layer[1:] != layer[:-1]
    kept_rank = before - torch.cummax(torch.where(layer_starts, before, 0), 0).values
    chosen = kept & (kept_rank < max_total)
    counts = torch.zeros(n_layers, dtype=torch.long, device=device).index_add_(0, layer, chosen.long())
    drawn = order[chosen]  # flat indices into the concatenated layers, layer by layer
    classes = flat[drawn]
    out, offset = [], 0
    for size, (indices, cls) in zip(sizes, zip(drawn.split(counts.tolist()), classes.split(counts.tolist()))):
        out.append((indices - offset, cls))
        offset += size
    return out


def _layer_tiers(y: torch.Tensor, pred: torch.Tensor | None, valid: torch.Tensor | None, include_background: bool,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's flat labels and each voxel's tier: 0 false negative, 1 other candidate, 2 never drawn."""
    _check_label_tensor(y)
    if pred is not None:
        _check_label_tensor(pred, "pred_labels")
    _check_same_shape(pred, y, "pred_labels")
    _check_same_shape(valid, y, "valid_mask")
    flat = y.reshape(-1).to(device).long()
    candidate = flat >= 0 if include_background else flat > 0
    if valid is not None:
        candidate = candidate & valid.reshape(-1).to(device=device, dtype=torch.bool)
    tier = 2 - candidate.long()  # 1: candidate, 2: never drawn
    if pred is not None:
        false_negative = candidate & (flat > 0) & (pred.reshape(-1).to(device) != flat)
        tier = tier - false_negative.long()  # 0: false negative
    return flat, tier


def gather_voxels(features: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Feature vectors of the voxels named by flat indices.

    Parameters
    ----------
    features : (B, C, ...) torch.Tensor
        Channel-first feature map.
    indices : (N,) torch.Tensor of int
        Flat indices into a ``(B, ...)`` label tensor of the same batch and spatial
        shape, as returned by :func:`sample_voxels`.

    Returns
    -------
    vectors : (N, C) torch.Tensor
        Row ``n`` is the feature vector of voxel ``indices[n]``; differentiable with
        respect to ``features``.

    Examples
    --------
    >>> features = torch.arange(12.).reshape(1, 2, 2, 3)  # B=1, C=2, 2x3 voxels
    >>> gather_voxels(features, torch.tensor([0, 4]))
    tensor([[ 0.,  6.],
            [ 4., 10.]])
    """
    if features.ndim < 2:
        raise ValueError(
            f"features must be (B, C, ...), got shape {tuple(features.shape)}"
        )
    return _gather_at(features, _element_offsets(features, indices))


def _element_offsets(features: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """(N, C) positions, in the flat storage of a contiguous ``features``, of the voxels' channels.

    Element (b, c, s) of a (B, C, S) map sits at b*C*S + c*S + s: gathering these with one
    ``index_select`` avoids permuting the whole feature map, and its backward is an
    ``index_add`` (advanced indexing, ``flat[b, :, s]``, gives the same values, but its
    backward is an accumulating ``index_put`` that sorts the indices: several times slower
    on CUDA). Maps of the same shape share the offsets.
    """
    if features.ndim < 2:
        raise ValueError(
            f"features must be (B, C, ...), got shape {tuple(features.shape)}"
        )
    n_channels = features.shape[1]
    n_spatial = math.prod(features.shape[2:])
    indices = indices.to(features.device).long()
    start = (indices // n_spatial) * (n_channels * n_spatial) + indices % n_spatial
    return start[:, None] + torch.arange(n_channels, device=features.device) * n_spatial


def _gather_at(features: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """The elements at ``offsets`` (from :func:`_element_offsets`), differentiable with respect to ``features``."""
    return features.reshape(-1).index_select(0, offsets.reshape(-1)).view(offsets.shape)


def voxel_hardness(probabilities: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""One minus the probability given to each voxel's true class.

    A hardness for ``sample_voxels(mode='hard')``: with one auxiliary decoder per vessel
    scale [1]_, channel ``s - 1`` holds the probability (sigmoid output) of decoder
    ``s``, and a voxel of scale ``s`` is hard when that decoder misses it.

    Parameters
    ----------
    probabilities : (B, S, ...) torch.Tensor of float
        Probability of classes ``1..S`` per voxel (channel ``k`` is class ``k + 1``).
    labels : (B, ...) torch.Tensor of int
        True class per voxel, ``0..S``.

    Returns
    -------
    hardness : (B, ...) torch.Tensor of float
        ``1 - probabilities[:, labels - 1]`` where ``labels > 0``, 0 elsewhere; no
        gradient.

    References
    ----------
    .. [1] Sadikine et al., ISBI 2023, Sect. 2.2 (Eq. 4, decoders :math:`D_s`).

    Examples
    --------
    >>> probabilities = torch.tensor([[[.9, .2, .4]], [[.1, .7, .5]]]).unsqueeze(0)
    >>> voxel_hardness(probabilities, torch.tensor([[[1, 2, 0]]]))
    tensor([[[0.1000, 0.3000, 0.0000]]])
    """
    _check_label_tensor(labels)
    if probabilities.ndim != labels.ndim + 1 or (
        probabilities.shape[:1] + probabilities.shape[2:] != labels.shape
    ):
        raise ValueError(
            f"probabilities must be (B, S, ...) matching labels {tuple(labels.shape)}, "
            f"got {tuple(probabilities.shape)}"
        )
    n_classes = probabilities.shape[1]
    if labels.numel() and int(labels.max()) > n_classes:
        raise ValueError(
            f"labels go up to {int(labels.max())} but probabilities have only "
            f"{n_classes} channels"
        )
    probabilities = probabilities.detach()
    channel = (labels.long() - 1).clamp(min=0).unsqueeze(1)
    hardness = 1 - probabilities.gather(1, channel.to(probabilities.device)).squeeze(1)
    return torch.where(labels.to(hardness.device) > 0, hardness, torch.zeros_like(hardness))
