"""The interface every auxiliary task implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import nn

TensorOrList = Union[torch.Tensor, List[torch.Tensor]]


@dataclass
class AuxBatch:
    """What a task sees of one batch when it computes its losses.

    All tensor lists follow nnU-Net's deep supervision: highest resolution first (a single
    tensor when deep supervision is off).

    Attributes
    ----------
    targets : Tensor or list of Tensor, bool (B, n_channels, ...)
        This task's own target channels (those of :meth:`AuxiliaryTask.target_regions`).
    valid : Tensor or list of Tensor (bool, B, 1, ...), or None
        False on voxels under nnU-Net's ignore label: they must enter no auxiliary loss and
        no voxel sampling.
    main_output : Tensor or list of Tensor
        The main decoder's logits.
    main_target : Tensor or list of Tensor
        nnU-Net's own target for the main task.
    data : Tensor
        The network input.
    """

    targets: Optional[TensorOrList]
    valid: Optional[TensorOrList]
    main_output: TensorOrList
    main_target: TensorOrList
    data: torch.Tensor


class AuxiliaryTask(nn.Module):
    """One auxiliary task: its heads, its extra target channels and its loss terms.

    A task owns every parameter it adds; the trainer keeps all tasks in one
    ``nn.ModuleDict`` beside nnU-Net's network and tells the optimizer, DDP,
    ``torch.compile`` and checkpointing about them in one place.
    """

    #: key under which the task is stored (and prefix of its logged loss terms)
    name: str = "aux"

    def target_regions(self) -> List[Tuple[int, ...]]:
        """Label-value regions this task needs as extra target channels (may be empty)."""
        return []

    def extra_target_channels(self) -> int:
        """Target channels this task computes itself (not label regions), made by :meth:`target_transforms`."""
        return 0

    def target_transforms(self, first_channel: int) -> list:
        """Transforms that insert the :meth:`extra_target_channels` at channel ``first_channel`` of the target.

        They run per sample after nnU-Net's spatial transforms and region conversion, before
        deep-supervision downsampling (the channels are then downsampled like the others).
        """
        return []

    def validation_counts(self, outputs: Any, batch: AuxBatch) -> Dict[str, torch.Tensor]:
        """Per validation batch: name -> (tp, fp, fn) voxel counts of a head's own segmentation.

        The trainer sums them over the validation epoch and logs ``val_dice_<name>``, so that
        the log shows whether each auxiliary head learns its own task.
        """
        return {}

    def forward(self, skips: List[torch.Tensor], main_output: TensorOrList) -> Any:  # pragma: no cover - interface
        """Run the task's heads on the encoder skips (deepest last) and the main output."""
        raise NotImplementedError

    def compute_losses(self, outputs: Any, batch: AuxBatch) -> Dict[str, torch.Tensor]:  # pragma: no cover
        """Unweighted loss terms, each a scalar connected to every parameter used."""
        raise NotImplementedError

    def loss_weights(self) -> Dict[str, float]:  # pragma: no cover - interface
        """Weight of each loss term of :meth:`compute_losses` in the total loss."""
        raise NotImplementedError

    def hyperparameters(self) -> Dict[str, Any]:
        """Settings printed in the training log and saved in the checkpoint."""
        return {}

    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        """Switch the task's own deep-supervision outputs (if any)."""
