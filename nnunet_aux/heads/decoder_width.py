"""Narrow copies of nnU-Net's decoder: the same blocks with a fraction of the feature maps.

A light auxiliary decoder keeps the structure of Sadikine et al.'s D_s (one U-Net decoder per scale
on the shared encoder, skips at every resolution, deep supervision) at a fraction of the
cost: every stage works with ``width`` times the main decoder's feature maps, and the
encoder's skips are reduced to that width by a 1x1(x1) convolution (:class:`SkipReduction`)
before they enter it. A convolution's cost grows with the product of its input and output
channels, so every convolution of the decoder costs ``w^2`` of the full one (the first of
a stage reads ``2 w C`` instead of ``2 C`` channels); the reductions add about ``w / 81`` of
a stage with two 3x3x3 convolutions. Width 1/4 costs about 1/15 of the full decoder.
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd

from .encoder_spec import EncoderSpec


def narrow_channels(channels: int, width: float) -> int:
    """Feature maps of a stage with ``channels`` in the main decoder, at relative ``width``.

    Rounded up, at least 1, so that every stage keeps some capacity.

    Examples
    --------
    >>> narrow_channels(32, 0.25), narrow_channels(320, 0.25), narrow_channels(4, 0.1)
    (8, 80, 1)
    """
    if not 0 < width <= 1:
        raise ValueError(f"decoder width must be in (0, 1], got {width!r}")
    return max(1, int(math.ceil(channels * width - 1e-9)))


def _rebuilt(module: nn.Module, mapping: Dict[int, int], where: str) -> nn.Module:
    """``module`` (a convolution or normalisation layer) rebuilt with channels mapped by ``mapping``."""

    def new(c: int) -> int:
        if c not in mapping:
            raise TypeError(f"cannot narrow {where}: a {type(module).__name__} with {c} channels fits none of the "
                            f"stage's widths {sorted(mapping)}")
        return mapping[c]

    if isinstance(module, _ConvNd):
        if module.groups != 1:
            raise TypeError(f"cannot narrow {where}: grouped convolutions are not supported")
        kwargs = dict(kernel_size=module.kernel_size, stride=module.stride, padding=module.padding,
                      dilation=module.dilation, bias=module.bias is not None, padding_mode=module.padding_mode)
        if module.transposed:
            kwargs["output_padding"] = module.output_padding
            kwargs.pop("padding_mode")
        return type(module)(new(module.in_channels), new(module.out_channels), **kwargs)
    if isinstance(module, _NormBase):  # BatchNorm*, InstanceNorm*
        return type(module)(new(module.num_features), eps=module.eps, momentum=module.momentum,
                            affine=module.affine, track_running_stats=module.track_running_stats)
    if isinstance(module, nn.GroupNorm):
        channels = new(module.num_channels)
        groups = math.gcd(module.num_groups, channels)
        return nn.GroupNorm(groups, channels, eps=module.eps, affine=module.affine)
    return module


def _narrow_in_place(module: nn.Module, mapping: Dict[int, int], where: str, memo: Dict[int, nn.Module]) -> None:
    # ``memo`` keeps shared layers shared: dynamic_network_architectures' blocks hold the same
    # convolution as ``self.conv`` and inside ``self.all_modules``.
    for name, child in list(module.named_children()):
        if id(child) not in memo:
            replaced = _rebuilt(child, mapping, where)
            memo[id(child)] = replaced
            if replaced is child:
                _narrow_in_place(child, mapping, where, memo)
        if memo[id(child)] is not child:
            setattr(module, name, memo[id(child)])
    # dynamic_network_architectures' blocks record their widths (used by their FLOP estimates)
    for attr in ("input_channels", "output_channels"):
        value = getattr(module, attr, None)
        if isinstance(value, int) and value in mapping:
            setattr(module, attr, mapping[value])


def narrow_decoder(decoder: nn.Module, skip_channels: Sequence[int], width: float) -> nn.Module:
    """Narrow ``decoder`` in place to ``width`` times its feature maps; return it.

    Stage ``s`` of an nnU-Net decoder reads the upsampled features of the stage below
    concatenated with the encoder's skip of the same resolution (``2 C_s`` channels) and
    writes ``C_s``; it becomes ``2 w C_s -> w C_s``, every layer of the stage alike
    (plain and residual blocks, the residual projections included). The transposed
    convolution ``C_{s+1} -> C_s`` becomes ``w C_{s+1} -> w C_s``. The skips themselves
    must then be reduced to ``w C_s`` before the decoder (:class:`SkipReduction`).

    Parameters
    ----------
    decoder : nn.Module
        A copy of nnU-Net's decoder (``stages`` / ``transpconvs`` / ``seg_layers``).
    skip_channels : sequence of int
        The encoder's output channels, highest resolution first (``encoder.output_channels``).
    width : float
        Relative width in (0, 1]; 1 leaves the decoder unchanged.

    Returns
    -------
    decoder : nn.Module
        The same object, narrowed.

    Raises
    ------
    TypeError
        If a layer's channels fit neither width of its stage (an architecture this cannot narrow).

    Examples
    --------
    >>> import torch
    >>> from dynamic_network_architectures.architectures.unet import PlainConvUNet
    >>> net = PlainConvUNet(1, 3, (8, 16, 32), torch.nn.Conv3d, 3, (1, 2, 2), 2, 2, (2, 2))
    >>> import copy
    >>> d = narrow_decoder(copy.deepcopy(net.decoder), net.encoder.output_channels, 0.5)
    >>> d.transpconvs[0].in_channels, d.transpconvs[0].out_channels, d.stages[0].convs[0].conv.in_channels
    (16, 8, 16)
    """
    if width == 1:
        return decoder
    n = len(decoder.stages)
    for s in range(n):
        skip = int(skip_channels[-(s + 2)])
        below = int(skip_channels[-(s + 1)])
        where = f"stage {s} of {type(decoder).__name__}"
        decoder.transpconvs[s] = _rebuilt(decoder.transpconvs[s],
                                          {below: narrow_channels(below, width), skip: narrow_channels(skip, width)},
                                          where)
        mapping = {skip: narrow_channels(skip, width), 2 * skip: 2 * narrow_channels(skip, width)}
        _narrow_in_place(decoder.stages[s], mapping, where, {})
        decoder.seg_layers[s] = _rebuilt(decoder.seg_layers[s], {skip: narrow_channels(skip, width),
                                                                 decoder.seg_layers[s].out_channels:
                                                                     decoder.seg_layers[s].out_channels}, where)
    return decoder


class SkipReduction(nn.Module):
    """1x1(x1) convolution, normalisation and non-linearity from ``C`` to ``w C`` on each encoder skip.

    Parameters
    ----------
    spec : EncoderSpec
        The encoder's configuration (convolution type, normalisation, non-linearity).
    width : float
        Relative width in (0, 1].
    levels : int, optional
        Reduce only the ``levels`` deepest skips (a decoder cut after its first stages reads
        no others); None reduces all.

    References
    ----------
    .. [1] Sadikine et al., ISBI 2023, Fig. 1: each D_s reads the encoder's skips; a light
           D_s reads them through this reduction (our addition, to make D_s cheap).
    """

    def __init__(self, spec: EncoderSpec, width: float, levels: int | None = None):
        super().__init__()
        reductions = []
        channels = list(spec.output_channels)
        for c in channels[-levels:] if levels else channels:
            layers = [spec.conv_op(c, narrow_channels(c, width), 1, 1, 0, bias=spec.conv_bias)]
            if spec.norm_op is not None:
                layers.append(spec.norm_op(narrow_channels(c, width), **(spec.norm_op_kwargs or {})))
            if spec.nonlin is not None:
                layers.append(spec.nonlin(**(spec.nonlin_kwargs or {})))
            reductions.append(nn.Sequential(*layers))
        self.reductions = nn.ModuleList(reductions)

    def forward(self, skips: List[torch.Tensor]) -> List[torch.Tensor]:
        """The deepest ``len(self.reductions)`` skips, reduced, in the encoder's order."""
        return [r(x) for r, x in zip(self.reductions, skips[-len(self.reductions):])]

