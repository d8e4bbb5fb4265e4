"""Auxiliary targets as extra channels of nnU-Net's own target tensor.

Auxiliary targets are made where nnU-Net makes its region targets, after all spatial
augmentation and before deep-supervision downsampling, so that they are cropped, rotated,
scaled, mirrored and downsampled exactly as the main target.

* Region-based datasets (the scale data contract): nnU-Net's
  ``ConvertSegmentationToRegionsTransform`` is simply handed more regions. The target is
  ``[main regions..., auxiliary regions..., ignore]``: the ignore channel stays last, where
  nnU-Net's losses look for it.
* Label-map datasets: the label map stays channel 0 (nnU-Net's cross-entropy needs it) and
  :class:`AppendRegionChannelsTransform` appends the auxiliary regions after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch
from batchgeneratorsv2.transforms.base.basic_transform import SegOnlyTransform

Region = Tuple[int, ...]
TargetList = Union[torch.Tensor, List[torch.Tensor]]


class AppendRegionChannelsTransform(SegOnlyTransform):
    """Append one binary channel per region to a label-map segmentation.

    Parameters
    ----------
    regions : sequence of tuple of int
        Label values making up each region.
    channel_in_seg : int
        Segmentation channel holding the label map.
    """

    def __init__(self, regions: Sequence[Region], channel_in_seg: int = 0):
        super().__init__()
        self.regions = [torch.as_tensor(tuple(r)) for r in regions]
        self.channel_in_seg = channel_in_seg

    def _apply_to_segmentation(self, segmentation: torch.Tensor, **params) -> torch.Tensor:
        labels = segmentation[self.channel_in_seg]
        extra = [torch.isin(labels, r.to(labels.device)).to(segmentation.dtype)[None] for r in self.regions]
        return torch.cat([segmentation, *extra], 0)


@dataclass
class TargetLayout:
    """Where the main target, the auxiliary channels and the ignore mask sit in the target tensor.

    Parameters
    ----------
    n_main : int
        Channels of nnU-Net's own target (number of foreground regions, or 1 label map).
    n_aux : int
        Auxiliary region channels appended after them.
    has_regions : bool
        Whether the dataset is region-based.
    ignore_label : int or None
        nnU-Net's ignore label.
    """

    n_main: int
    n_aux: int
    has_regions: bool
    ignore_label: Optional[int]

    def split(self, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Split one target tensor (B, C, ...) into main target, auxiliary channels and valid mask.

        Returns
        -------
        main : Tensor
            Exactly what stock nnU-Net's loss expects.
        aux : Tensor of bool, (B, n_aux, ...)
        valid : Tensor of bool, (B, 1, ...), or None without ignore label
            False where the voxel is ignored.
        """
        if self.has_regions:
            main = target[:, :self.n_main]
            aux = target[:, self.n_main:self.n_main + self.n_aux]
            if self.ignore_label is not None:
                ignore = target[:, -1:]
                main = torch.cat((main, ignore), 1)
                valid = ~ignore.bool()
            else:
                valid = None
        else:
            main = target[:, :1]
            aux = target[:, 1:1 + self.n_aux]
            valid = (main != self.ignore_label) if self.ignore_label is not None else None
        return main, aux.bool(), valid

    def split_all(self, target: TargetList):
        """:meth:`split` for one tensor or a deep-supervision list; returns three lists (or tensors)."""
        if isinstance(target, (list, tuple)):
            parts = [self.split(t) for t in target]
            return [p[0] for p in parts], [p[1] for p in parts], [p[2] for p in parts]
        return self.split(target)
