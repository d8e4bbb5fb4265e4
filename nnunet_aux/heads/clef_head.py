"""CLEF's heads on the last decoder features: a feature head and a decoding head."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from .encoder_spec import EncoderSpec


def _two_convs(spec: EncoderSpec, in_channels: int, hidden_channels: int, out_channels: int) -> nn.Sequential:
    """``conv(1x1x1) -> nonlin -> conv(1x1x1)`` with the plan's convolution and non-linearity."""
    layers = [spec.conv_op(in_channels, hidden_channels, 1, 1, 0, bias=True)]
    if spec.nonlin is not None:
        layers.append(spec.nonlin(**(spec.nonlin_kwargs or {})))
    layers.append(spec.conv_op(hidden_channels, out_channels, 1, 1, 0, bias=True))
    return nn.Sequential(*layers)


class CLEFHead(nn.Module):
    """Voxel features ``f`` and the decoded image ``f_dec(f)`` from the backbone's output features.

    * feature head: two 1x1(x1) convolutions (with the plan's non-linearity between them)
      on the last decoder stage's features; its output, normalised to unit length per
      voxel, is the feature space of the discriminativeness and equivariance losses;
    * decoding head: two 1x1(x1) convolutions from ``f`` back to the input channels, for
      the decoding loss. The paper writes ``f_dec(f_enc(X))`` without saying which
      features the head reads; it reads the unit-length ``f`` here, the representation the
      other two losses see, so that this is what must keep the voxel's intensity.

    No normalisation layer: nnU-Net plans instance normalisation, which would force every
    feature channel to zero mean over the patch. The convolution type (2D or 3D) and the
    non-linearity come from the plan's network, so 2D configurations get 1x1 convolutions.
    Fine-tuning uses neither head (CLEF re-initialises the head; nnU-Net's
    ``-pretrained_weights`` loads the U-Net only).

    Parameters
    ----------
    spec : EncoderSpec
        Gives the convolution type and non-linearity.
    in_channels : int
        Channels of the last decoder stage (the plan's first-stage width).
    image_channels : int
        Input channels of the network (what the decoding head reconstructs).
    feature_dim : int, optional
        Dimension of the feature space (CLEF: "the number of channels the head outputs";
        not given in the paper).
    hidden_channels : int, optional
        Width between the two convolutions of each head; ``max(in_channels, feature_dim)``
        when omitted.

    References
    ----------
    .. [1] I. Kuleshov, M. Goncharov and V. Soboleva, "CLEF: Contrastive learning of
           equivariant features in CT images", Sect. 2.2 ("Pretraining: Decoding Loss",
           "Architecture").

    Examples
    --------
    >>> spec = EncoderSpec([8], [[1, 1, 1]], [[3, 3, 3]], nn.Conv3d, True, nn.InstanceNorm3d,
    ...                    {"affine": True}, None, None, nn.LeakyReLU, {"inplace": True})
    >>> f, decoded = CLEFHead(spec, in_channels=8, image_channels=1, feature_dim=16)(torch.randn(2, 8, 4, 4, 4))
    >>> f.shape, decoded.shape, bool(torch.allclose(f.norm(dim=1), torch.ones(2, 4, 4, 4)))
    (torch.Size([2, 16, 4, 4, 4]), torch.Size([2, 1, 4, 4, 4]), True)
    """

    def __init__(self, spec: EncoderSpec, in_channels: int, image_channels: int, feature_dim: int = 32,
                 hidden_channels: Optional[int] = None):
        super().__init__()
        hidden = max(in_channels, feature_dim) if hidden_channels is None else int(hidden_channels)
        if min(in_channels, image_channels, feature_dim, hidden) < 1:
            raise ValueError(f"channel numbers must be positive, got in={in_channels}, image={image_channels}, "
                             f"features={feature_dim}, hidden={hidden}")
        self.feature_head = _two_convs(spec, in_channels, hidden, feature_dim)
        self.decoding_head = _two_convs(spec, feature_dim, hidden, image_channels)
        self.feature_dim = int(feature_dim)
        self.hidden_channels = hidden

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Unit-length voxel features ``f`` (B, feature_dim, *spatial), without the decoding head."""
        f = self.feature_head(features).float()  # float32 under autocast too: squares overflow float16
        # F.normalize's result (eps 1e-6) with a product instead of a division: on full-resolution
        # maps its forward and backward take a third of the time
        return f * torch.rsqrt((f * f).sum(1, keepdim=True).clamp_min(1e-12))

    def forward(self, features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return ``(f, decoded)``: unit-length voxel features and the reconstructed image."""
        f = self.embed(features)
        return f, self.decoding_head(f)
