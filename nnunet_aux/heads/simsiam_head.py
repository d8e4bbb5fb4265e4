"""Voxel-level SimSiam feature layer: projection and prediction MLPs of 1x1(x1) convolutions."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from .encoder_spec import EncoderSpec
from .projection_head import ProjectionHead


class SimSiamHead(nn.Module):
    """Projection ``z = proj(f)`` and prediction ``p = pred(z)`` for every voxel of a feature map.

    Both MLPs are ``conv(1x1x1) -> norm -> nonlin -> conv(1x1x1)`` with the plan's
    convolution, normalisation and non-linearity (a 2D plan gets 1x1 convolutions), so each
    voxel's feature vector is mapped on its own, as the paper's reshape to
    ``(H W D) x C_i`` vectors followed by MLPs does, without the reshape.

    The projection's output is left unnormalised. SimSiam puts batch normalisation on it;
    nnU-Net plans instance normalisation, which would force every channel of ``z`` to zero
    mean over each patch, i.e. forbid mapping all voxels of a class to one point, which is
    what the loss asks for.

    Parameters
    ----------
    spec : EncoderSpec
        Gives conv, norm and non-linearity types.
    in_channels : int
        Channels ``C_i`` of the encoder stage.
    hidden_channels : int, optional
        Width of the hidden layers (64 in the paper).
    out_channels : int, optional
        Dimension of ``z`` and ``p``; the hidden width when omitted.

    References
    ----------
    .. [1] C. E. Lee, M. Chung and Y.-G. Shin, "Voxel-level Siamese representation learning
           for abdominal multi-organ segmentation", Sect. III-B ("p = pred(proj(f)),
           z = proj(f)") and Sect. IV-A ("dimensions of all hidden layers set to 64").
    .. [2] X. Chen and K. He, "Exploring simple Siamese representation learning", CVPR 2021.

    Examples
    --------
    >>> from nnunet_aux.heads import EncoderSpec
    >>> spec = EncoderSpec([8], [[1, 1, 1]], [[3, 3, 3]], nn.Conv3d, True, nn.InstanceNorm3d,
    ...                    {"affine": True}, None, None, nn.LeakyReLU, None)
    >>> head = SimSiamHead(spec, in_channels=8, hidden_channels=16)
    >>> p, z = head(torch.randn(2, 8, 4, 4, 4))
    >>> p.shape, z.shape
    (torch.Size([2, 16, 4, 4, 4]), torch.Size([2, 16, 4, 4, 4]))
    """

    def __init__(self, spec: EncoderSpec, in_channels: int, hidden_channels: int = 64,
                 out_channels: Optional[int] = None):
        super().__init__()
        out_channels = hidden_channels if out_channels is None else out_channels
        if min(in_channels, hidden_channels, out_channels) < 1:
            raise ValueError(f"channel numbers must be positive, got in={in_channels}, "
                             f"hidden={hidden_channels}, out={out_channels}")
        self.projection = ProjectionHead(spec, in_channels, hidden_channels, out_channels)
        self.prediction = ProjectionHead(spec, out_channels, hidden_channels, out_channels)

    def forward(self, features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return ``(p, z)``, both ``(B, out_channels, *spatial)``; ``z`` is not detached here."""
        z = self.projection(features)
        return self.prediction(z), z
