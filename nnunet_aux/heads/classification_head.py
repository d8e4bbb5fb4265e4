"""Presence classifier on the encoder bottleneck: global average pooling and one linear layer."""

from __future__ import annotations

import torch
from torch import nn


class ClassificationHead(nn.Module):
    """Predict, from the deepest encoder features, which structures are in the input.

    ``global average pooling -> fully connected``: one logit per structure (multi-label,
    to be read through a sigmoid). Works on 2D and 3D feature maps alike.

    Parameters
    ----------
    in_channels : int
        Channels of the bottleneck features.
    n_outputs : int
        Number of structures (foreground classes or regions).

    References
    ----------
    .. [1] A. Moseley, A. Wang and A. A. Z. Imran, "Context-aware multitasking for medical
           image segmentation" (CMU-Net), Sect. 2: "a head is added to the encoder that
           consists of global average pooling and a single fully-connected layer".

    Examples
    --------
    >>> head = ClassificationHead(in_channels=8, n_outputs=3)
    >>> head(torch.randn(2, 8, 4, 4, 4)).shape
    torch.Size([2, 3])
    >>> head(torch.randn(2, 8, 5, 5)).shape  # 2D features
    torch.Size([2, 3])
    """

    def __init__(self, in_channels: int, n_outputs: int):
        super().__init__()
        if in_channels < 1 or n_outputs < 1:
            raise ValueError(f"in_channels and n_outputs must be positive, got {in_channels} and {n_outputs}")
        self.fc = nn.Linear(in_channels, n_outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim < 3:
            raise ValueError(f"features must be (B, C, *spatial), got shape {tuple(features.shape)}")
        return self.fc(features.flatten(2).mean(2))
