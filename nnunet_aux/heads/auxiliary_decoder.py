"""An extra U-Net decoder on nnU-Net's shared encoder (paper 1, Sect. 2.2, decoders D_s)."""

from __future__ import annotations

from typing import List, Sequence, Tuple, Union

import torch
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from torch import nn

from .encoder_spec import EncoderSpec


class AuxiliaryDecoder(nn.Module):
    """A decoder with the main decoder's stages and skip connections, and its own outputs.

    Built from nnU-Net's own ``UNetDecoder`` block (same transposed convolutions, stacked
    convolution blocks, normalisation, non-linearity and deep-supervision outputs as the
    main decoder), but from an :class:`EncoderSpec`, so it holds none of the encoder's
    weights. Its forward also returns the features of its first (deepest) stage, which
    the scale contrastive loss projects (paper 1, Eq. 6).

    Parameters
    ----------
    spec : EncoderSpec
        The shared encoder's configuration.
    num_outputs : int
        Output channels of the segmentation layers (1 for one binary scale mask).
    n_conv_per_stage : int or sequence of int
        Convolutions per decoder stage, deepest first (as the main decoder).
    deep_supervision : bool
        Whether forward returns one output per stage (highest resolution first).

    References
    ----------
    .. [1] Sadikine et al., ISBI 2023, Eq. 4 (decoders D_s) and Eq. 6 (first decoder layer).
    """

    def __init__(self, spec: EncoderSpec, num_outputs: int, n_conv_per_stage: Union[int, Sequence[int]],
                 deep_supervision: bool = True, nonlin_first: bool = False):
        super().__init__()
        # UNetDecoder stores `encoder` as an attribute; a frozen dataclass is not a module, so
        # it is not registered and contributes no parameters.
        self.decoder = UNetDecoder(spec, num_outputs, list(n_conv_per_stage) if not isinstance(
            n_conv_per_stage, int) else n_conv_per_stage, deep_supervision, nonlin_first=nonlin_first)
        self.first_stage_channels = spec.output_channels[-2]

    @property
    def deep_supervision(self) -> bool:
        return self.decoder.deep_supervision

    @deep_supervision.setter
    def deep_supervision(self, enabled: bool) -> None:
        self.decoder.deep_supervision = enabled

    def forward(self, skips: List[torch.Tensor]) -> Tuple[Union[torch.Tensor, List[torch.Tensor]], torch.Tensor]:
        """Decode the encoder's skips.

        Returns
        -------
        outputs : Tensor or list of Tensor
            Logits, highest resolution first when deep supervision is on.
        first_stage_features : Tensor
            Features after the decoder's first (deepest) stage.
        """
        dec = self.decoder
        x = skips[-1]
        outputs, first = [], None
        n = len(dec.stages)
        # The loop of UNetDecoder.forward, keeping the first stage's features.
        for s in range(n):
            x = dec.transpconvs[s](x)
            x = dec.stages[s](torch.cat((x, skips[-(s + 2)]), 1))
            if s == 0:
                first = x
            if dec.deep_supervision or s == n - 1:
                outputs.append(dec.seg_layers[s](x))
        outputs = outputs[::-1]
        return (outputs if dec.deep_supervision else outputs[0]), first
