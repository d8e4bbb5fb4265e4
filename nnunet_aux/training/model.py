"""nnU-Net's network and the auxiliary tasks as one module for training."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch
from torch import nn

from ..heads import check_encoder_decoder


class AuxiliaryTrainingModel(nn.Module):
    """Run the shared encoder once, then the main decoder and every auxiliary task.

    This is the module that is compiled and wrapped in DDP for training, so that gradient
    synchronisation covers the auxiliary parameters too. Inference never sees it: it uses
    nnU-Net's network alone, whose weights are shared with this module.

    Parameters
    ----------
    network : nn.Module
        nnU-Net's U-Net (unwrapped), with ``encoder`` and ``decoder``.
    tasks : nn.ModuleDict
        The auxiliary tasks.
    """

    def __init__(self, network: nn.Module, tasks: nn.ModuleDict):
        super().__init__()
        self.network = check_encoder_decoder(network)
        self.tasks = tasks

    def forward(self, x: torch.Tensor) -> Tuple[Any, Dict[str, Any]]:
        skips = self.network.encoder(x)
        main = self.network.decoder(skips)
        return main, {name: task(skips, main) for name, task in self.tasks.items()}
