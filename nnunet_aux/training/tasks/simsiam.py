"""Voxel-level SimSiam on the deepest encoder stages (multi-resolution context aggregation)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...heads import EncoderSpec, SimSiamHead
from ...losses import VoxelSimSiamLoss
from ..task import AuxBatch, AuxiliaryTask

__all__ = ["SimSiamTask", "class_map", "default_simsiam_weight", "predicted_class_map", "resample_classes"]

#: lambda of Eq. 8 for |F| = 1 and |F| = 3 (paper Sect. IV-A)
PAPER_SIMSIAM_WEIGHTS = {1: 100.0, 3: 10.0}


def default_simsiam_weight(n_layers: int) -> float:
    """lambda of Eq. 8: 100 for one feature layer, 10 for three (the paper's values).

    The paper gives no value for other layer counts; every multi-layer setting gets the
    multi-layer value, 10.

    Examples
    --------
    >>> default_simsiam_weight(3), default_simsiam_weight(1), default_simsiam_weight(2)
    (10.0, 100.0, 10.0)
    """
    if n_layers < 1:
        raise ValueError(f"need at least one feature layer, got {n_layers}")
    return PAPER_SIMSIAM_WEIGHTS.get(n_layers, PAPER_SIMSIAM_WEIGHTS[3])


def _region_classes(channels: torch.Tensor) -> torch.Tensor:
    """1 + index of the last region channel that is set, 0 where none is (B, R, ...) -> (B, ...).

    Later regions win, as in nnU-Net's ``regions_class_order`` conversion, so nested regions
    (whole tumour > core > enhancing) give the innermost one.
    """
    n = channels.shape[1]
    index = torch.arange(1, n + 1, device=channels.device).view(1, n, *([1] * (channels.ndim - 2)))
    return (channels.bool().long() * index).amax(1)


def class_map(main_target: torch.Tensor, n_regions: Optional[int] = None,
              valid: Optional[torch.Tensor] = None, ignore_label: Optional[int] = None) -> torch.Tensor:
    """Class of every voxel from nnU-Net's main target; -1 where the voxel must not be sampled.

    Parameters
    ----------
    main_target : (B, C, *spatial) torch.Tensor
        A label map (``C = 1``, label datasets) or region channels (region datasets).
    n_regions : int, optional
        Number of foreground regions; None for a label map.
    valid : (B, 1, *spatial) torch.Tensor of bool, optional
        False on ignored voxels.
    ignore_label : int, optional
        nnU-Net's ignore label of a label dataset (its voxels get -1 even without ``valid``).

    Returns
    -------
    classes : (B, *spatial) torch.Tensor of int64
        Label values, or ``1 + region index`` (later regions win), 0 for background.

    Examples
    --------
    >>> class_map(torch.tensor([[[0, 1, 2, 3]]]), ignore_label=3)
    tensor([[ 0,  1,  2, -1]])
    >>> regions = torch.tensor([[[1, 1, 0], [0, 1, 0]]])  # two nested regions, 3 voxels
    >>> class_map(regions, n_regions=2)
    tensor([[1, 2, 0]])
    """
    if main_target.ndim < 3:
        raise ValueError(f"main_target must be (B, C, *spatial), got shape {tuple(main_target.shape)}")
    if n_regions is None:
        if main_target.shape[1] != 1:
            raise ValueError(f"a label-map target has one channel, got {main_target.shape[1]}")
        classes = main_target[:, 0].long()
        if ignore_label is not None:
            classes = torch.where(classes == ignore_label, -1, classes)
    else:
        if main_target.shape[1] < n_regions:
            raise ValueError(f"target has {main_target.shape[1]} channels, fewer than n_regions={n_regions}")
        classes = _region_classes(main_target[:, :n_regions])
    if valid is not None:
        classes = torch.where(valid[:, 0].bool(), classes, -1)
    return classes


def predicted_class_map(logits: torch.Tensor, regions: bool) -> torch.Tensor:
    """nnU-Net's predicted class per voxel from the main output, without gradient.

    Parameters
    ----------
    logits : (B, C, *spatial) torch.Tensor
        Main decoder output.
    regions : bool
        Sigmoid regions (a region is predicted where its logit is positive, later regions
        win) or softmax classes (arg-max; channel index = label value, nnU-Net's labels are
        consecutive).

    Returns
    -------
    classes : (B, *spatial) torch.Tensor of int64

    Examples
    --------
    >>> predicted_class_map(torch.tensor([[[2., -1.], [0., 3.]]]), regions=False)
    tensor([[0, 1]])
    >>> predicted_class_map(torch.tensor([[[2., -1.], [-4., 3.]]]), regions=True)
    tensor([[1, 2]])
    """
    logits = logits.detach()
    return _region_classes(logits > 0) if regions else logits.argmax(1)


def resample_classes(classes: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resampling of a class map (B, *spatial) to ``shape``.

    Uses ``nearest-exact``, as nnU-Net's deep-supervision downsampling of segmentations.

    Examples
    --------
    >>> resample_classes(torch.tensor([[[1, 1, 2, 2], [3, 3, 4, 4]]]), (1, 2))  # voxel centres
    tensor([[[3, 4]]])
    """
    if tuple(classes.shape[1:]) == tuple(shape):
        return classes
    return F.interpolate(classes[:, None].float(), size=tuple(shape), mode="nearest-exact")[:, 0].long()


def _at_resolution(levels, shape: Sequence[int]) -> Optional[torch.Tensor]:
    """The deep-supervision level with spatial ``shape``, else the lowest-resolution one."""
    if levels is None:
        return None
    if not isinstance(levels, (list, tuple)):
        return levels
    for level in levels:
        if tuple(level.shape[2:]) == tuple(shape):
            return level
    return levels[-1]


class SimSiamTask(AuxiliaryTask):
    """Voxel-level SimSiam feature layers on the last ``n_layers`` encoder stages.

    Each chosen stage ``F_i`` gets a :class:`~nnunet_aux.heads.SimSiamHead`; the loss
    (:class:`~nnunet_aux.losses.VoxelSimSiamLoss`, Eq. 4-7) pulls the prediction of each
    sampled voxel to the stop-gradient projections of the voxels of its class across the
    batch. Classes come from nnU-Net's main target at each stage's resolution (the
    deep-supervision target of that resolution; stages below the lowest one get it
    nearest-downsampled); false negatives are voxels the main output at that resolution
    misclassifies.

    Parameters
    ----------
    spec : EncoderSpec
        The shared encoder.
    n_regions : int, optional
        Foreground regions of a region-based dataset; None for a label dataset.
    ignore_label : int, optional
        nnU-Net's ignore label of a label dataset.
    n_layers : int, optional
        ``|F|``, the number of deepest encoder stages used (3).
    weight : float, optional
        lambda of Eq. 8; :func:`default_simsiam_weight` when omitted.
    hidden_channels : int, optional
        Hidden width of the projection and prediction MLPs (64).
    embedding_channels : int, optional
        Dimension of ``p`` and ``z``; the hidden width when omitted.
    max_voxels : int, optional
        Voxels sampled per layer from the whole batch (1700).
    max_false_negatives : int, optional
        False-negative voxels sampled first, at most (1000).
    include_background : bool, optional
        Whether background voxels are sampled. The paper samples foreground (false
        negatives and true positives); with a single foreground class, background gives
        the loss a second class.

    Notes
    -----
    Under DDP everything in the loss is per rank: each rank draws at most ``max_voxels``
    voxels per layer from its own samples (false negatives of its own prediction first),
    and the class weights ``w_c`` come from that rank's draw; nothing is gathered across
    ranks. DDP averages the gradients (of the heads too, which sit in the same DDP module as
    the network), so training optimises the mean over ranks of per-rank losses, as for
    nnU-Net's own loss. A rank without foreground contributes an exact zero that still
    reaches every head. ``tests/test_ddp.py`` checks this.

    References
    ----------
    .. [1] C. E. Lee, M. Chung and Y.-G. Shin, "Voxel-level Siamese representation learning
           for abdominal multi-organ segmentation", Eq. 4-8, Sect. III-C and IV-A.
    """

    name = "simsiam"

    def __init__(self, spec: EncoderSpec, n_regions: Optional[int] = None, ignore_label: Optional[int] = None,
                 n_layers: int = 3, weight: Optional[float] = None, hidden_channels: int = 64,
                 embedding_channels: Optional[int] = None, max_voxels: int = 1700, max_false_negatives: int = 1000,
                 include_background: bool = False):
        super().__init__()
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or not 1 <= n_layers <= spec.n_stages:
            raise ValueError(f"n_layers must be an int in [1, {spec.n_stages}] (encoder stages), got {n_layers!r}")
        self.weight = default_simsiam_weight(n_layers) if weight is None else float(weight)
        if not self.weight >= 0:
            raise ValueError(f"weight must be non-negative, got {weight!r}")
        self.n_regions = n_regions
        self.ignore_label = ignore_label
        #: encoder stages used, shallowest first (the paper's F_3, F_2, F_1)
        self.stages = list(range(spec.n_stages - n_layers, spec.n_stages))
        self.heads = nn.ModuleList(
            SimSiamHead(spec, spec.output_channels[s], hidden_channels, embedding_channels) for s in self.stages)
        self.loss = VoxelSimSiamLoss(max_total=max_voxels, max_false_negative=max_false_negatives,
                                     include_background=include_background)
        self._settings = {"n_layers": n_layers, "stages": self.stages, "weight": self.weight,
                          "hidden_channels": hidden_channels,
                          "embedding_channels": embedding_channels or hidden_channels,
                          "max_voxels": max_voxels, "max_false_negatives": max_false_negatives,
                          "include_background": bool(include_background)}

    def hyperparameters(self) -> Dict[str, Any]:
        return dict(self._settings)

    def loss_weights(self) -> Dict[str, float]:
        return {"simsiam": self.weight}

    def forward(self, skips: List[torch.Tensor], main_output: Any) -> Dict[str, List[torch.Tensor]]:
        p, z = zip(*(head(skips[s]) for head, s in zip(self.heads, self.stages)))
        return {"p": list(p), "z": list(z)}

    def layer_classes(self, shape: Sequence[int], batch: AuxBatch) -> Tuple[torch.Tensor, torch.Tensor]:
        """True classes (-1 = never sampled) and predicted classes at one stage's resolution."""
        target = _at_resolution(batch.main_target, shape)
        valid = _at_resolution(batch.valid, target.shape[2:])
        truth = class_map(target, self.n_regions, valid, self.ignore_label)
        output = _at_resolution(batch.main_output, shape)
        predicted = predicted_class_map(output, regions=self.n_regions is not None)
        return resample_classes(truth, shape), resample_classes(predicted, shape)

    def compute_losses(self, outputs: Dict[str, List[torch.Tensor]], batch: AuxBatch) -> Dict[str, torch.Tensor]:
        truth, predicted = zip(*(self.layer_classes(p.shape[2:], batch) for p in outputs["p"]))
        return {"simsiam": self.loss(outputs["p"], outputs["z"], list(truth), list(predicted))}
