"""Voxel-wise projection head: 1x1(x1) convolutions, normalisation, non-linearity."""

from __future__ import annotations

import torch
from torch import nn

from .encoder_spec import EncoderSpec


class ProjectionHead(nn.Module):
    """Map dense decoder features to a low-dimensional embedding per voxel.

    ``conv(1x1x1) -> norm -> nonlin -> conv(1x1x1)``, with the convolution type,
    normalisation and non-linearity of the plan (2D plans get 1x1 convolutions). The
    embedding is *not* normalised here; the contrastive loss l2-normalises it.

    Parameters
    ----------
    spec : EncoderSpec
        Gives conv, norm and non-linearity types.
    in_channels : int
        Channels of the input features.
    hidden_channels : int
        Width of the hidden layer.
    out_channels : int
        Embedding dimension.

    References
    ----------
    .. [1] Sadikine et al., ISBI 2023, Eq. 6: ``z^s = proj_s(D_s^{2^(l-1) f_0})``, "a sequence
           of 1x1x1 convolutions, BN and non-linearity" (Fig. 3). The paper does not give the
           widths; we default to half the input width for the hidden layer and 64 outputs.
    """

    def __init__(self, spec: EncoderSpec, in_channels: int, hidden_channels: int, out_channels: int):
        super().__init__()
        layers = [spec.conv_op(in_channels, hidden_channels, 1, 1, 0, bias=True)]
        if spec.norm_op is not None:
            layers.append(spec.norm_op(hidden_channels, **(spec.norm_op_kwargs or {})))
        if spec.nonlin is not None:
            layers.append(spec.nonlin(**(spec.nonlin_kwargs or {})))
        layers.append(spec.conv_op(hidden_channels, out_channels, 1, 1, 0, bias=True))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
