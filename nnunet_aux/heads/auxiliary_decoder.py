"""An extra U-Net decoder on nnU-Net's shared encoder (Sadikine et al., Sect. 2.2, decoders D_s)."""

from __future__ import annotations

import copy
from typing import List, Tuple, Union

import torch
from dynamic_network_architectures.initialization.weight_init import InitWeights_He, init_last_bn_before_add_to_0
from torch import nn
from torch.nn.modules.conv import _ConvNd

from .decoder_width import SkipReduction, narrow_decoder
from .encoder_spec import EncoderSpec, check_decoder


def _output_layer(layer: nn.Module, num_outputs: int, owner: str) -> nn.Module:
    """A fresh segmentation layer like ``layer`` (nnU-Net's 1x1(x1) convolution) with ``num_outputs`` channels."""
    if not isinstance(layer, _ConvNd):
        raise TypeError(f"nnunet_aux cannot extend {owner}: its segmentation layer is a {type(layer).__name__}, "
                        f"not a convolution.")
    return type(layer)(layer.in_channels, num_outputs, layer.kernel_size, layer.stride, layer.padding,
                       bias=layer.bias is not None)


def _initialize(module: nn.Module) -> None:
    """nnU-Net's initialisation of its U-Nets: He-normal convolutions, zero-initialised residual branches."""
    for m in module.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()  # norms and anything InitWeights_He does not touch
    module.apply(InitWeights_He(1e-2))
    module.apply(init_last_bn_before_add_to_0)


def decoder_stages_kept(num_stages: int, stages: int | None) -> int:
    """How many of ``num_stages`` decoder stages a ``stages`` setting keeps (see :class:`AuxiliaryDecoder`).

    Examples
    --------
    >>> decoder_stages_kept(4, None), decoder_stages_kept(4, 2), decoder_stages_kept(4, -1)
    (4, 2, 3)
    """
    if stages is None:
        return num_stages
    if isinstance(stages, bool) or not isinstance(stages, int) or stages == 0 or not -num_stages < stages <= num_stages:
        raise ValueError(f"decoder stages must be None, 1..{num_stages} or -1..-{num_stages - 1} for a decoder of "
                         f"{num_stages} stages, got {stages!r}")
    return stages if stages > 0 else num_stages + stages


class AuxiliaryDecoder(nn.Module):
    """A decoder with the main decoder's architecture, its own weights and its own outputs.

    The main decoder is copied module for module (``UNetDecoder`` of ``PlainConvUNet`` and
    ``ResidualEncoderUNet``, ``UNetResDecoder`` of ``ResidualUNet``, or any decoder with
    their ``stages`` / ``transpconvs`` / ``seg_layers`` structure), so that everything the
    plan put into it, 2D or 3D convolutions, kernel sizes, strides, blocks per stage,
    normalisation, non-linearity and its order (``nonlin_first``), dropout, is the same in
    the auxiliary decoder. The copy leaves out the encoder the main decoder references (it
    holds none of the encoder's weights), gets new segmentation layers with
    ``num_outputs`` channels, and is re-initialised as nnU-Net initialises its networks.
    Its forward also returns the features of its first (deepest) stage, which the scale
    contrastive loss projects (Sadikine et al., Eq. 6).

    Parameters
    ----------
    main_decoder : nn.Module
        nnU-Net's decoder (``network.decoder``); it is not modified.
    num_outputs : int
        Output channels of the segmentation layers (1 for one binary scale mask).
    deep_supervision : bool
        Whether forward returns one output per stage (highest resolution first).
    width : float, optional
        Feature maps of every stage relative to the main decoder's, in (0, 1]. Below 1 the
        decoder is narrowed (:func:`~nnunet_aux.heads.decoder_width.narrow_decoder`) and
        reads the encoder's skips through a 1x1(x1) reduction
        (:class:`~nnunet_aux.heads.decoder_width.SkipReduction`): same stages, skips and
        outputs at a fraction of the cost.
    spec : EncoderSpec, optional
        The shared encoder's configuration; needed when ``width < 1``.
    stages : int, optional
        Keep only the decoder's first (deepest) stages: ``K > 0`` keeps K of them, ``K < 0``
        drops the last ``|K|`` (``-1``: every stage but the highest-resolution one). None
        keeps all. A cut decoder's outputs start at the resolution of its last stage;
        its deep-supervision targets are the matching lower levels
        (:func:`decoder_stages_kept` says which).

    References
    ----------
    .. [1] Sadikine et al., ISBI 2023, Eq. 4 (decoders D_s) and Eq. 6 (first decoder layer).
    """

    def __init__(self, main_decoder: nn.Module, num_outputs: int, deep_supervision: bool = True,
                 width: float = 1.0, spec: EncoderSpec | None = None, stages: int | None = None):
        super().__init__()
        check_decoder(main_decoder)
        if num_outputs < 1:
            raise ValueError(f"num_outputs must be positive, got {num_outputs}")
        if not 0 < width <= 1:
            raise ValueError(f"decoder width must be in (0, 1], got {width!r}")
        if width < 1 and spec is None:
            raise ValueError("a narrowed decoder (width < 1) needs the encoder's spec")
        # nnU-Net's decoders keep the encoder as a submodule (to read its configuration): the
        # memo makes deepcopy put None in its place instead of copying the shared encoder.
        encoder = getattr(main_decoder, "encoder", None)
        decoder = copy.deepcopy(main_decoder, {id(encoder): None} if encoder is not None else {})
        owner = type(main_decoder).__name__
        kept = decoder_stages_kept(len(decoder.stages), stages)
        # Cut first, so that only the kept stages are narrowed. Why cut at all: on the CPU a narrow
        # convolution at full resolution costs almost what a full one does (benchmarks/RESULTS.md).
        for name in ("stages", "transpconvs", "seg_layers"):
            setattr(decoder, name, getattr(decoder, name)[:kept])
        if width < 1:
            narrow_decoder(decoder, spec.output_channels, width)
        decoder.seg_layers = nn.ModuleList(_output_layer(layer, num_outputs, owner)
                                           for layer in decoder.seg_layers)
        if hasattr(decoder, "num_classes"):
            decoder.num_classes = num_outputs
        decoder.deep_supervision = deep_supervision
        _initialize(decoder)
        self.decoder = decoder
        #: 1x1(x1) reduction of the encoder's skips to the narrowed widths (None at full width)
        self.skip_reduction = SkipReduction(spec, width, levels=kept + 1) if width < 1 else None
        if self.skip_reduction is not None:
            _initialize(self.skip_reduction)
        self.width = float(width)
        #: decoder stages kept (the deepest first); outputs start at the resolution of the last
        self.num_stages = kept
        #: channels of the first (deepest) stage's features: what its segmentation layer reads
        self.first_stage_channels = int(decoder.seg_layers[0].in_channels)

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
        skips = skips[-(self.num_stages + 1):]
        if self.skip_reduction is not None:
            skips = self.skip_reduction(skips)
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
