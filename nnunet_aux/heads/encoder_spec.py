"""What an auxiliary head needs to know about nnU-Net's encoder, read off the network.

nnU-Net's ``UNetDecoder`` takes the encoder *module* to read its configuration and stores
it as a submodule. An auxiliary decoder built that way would carry a second reference to
the encoder, so its ``state_dict`` would repeat every encoder weight and loading it would
overwrite the shared encoder. :class:`EncoderSpec` is a plain (non-module) record with the
same attributes, so decoders built from it own only their own weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Type

import torch
from torch import nn

_REQUIRED = ("output_channels", "strides", "kernel_sizes", "conv_op", "conv_bias", "norm_op",
             "norm_op_kwargs", "dropout_op", "dropout_op_kwargs", "nonlin", "nonlin_kwargs")


@dataclass(frozen=True)
class EncoderSpec:
    """Configuration of an nnU-Net encoder (``PlainConvEncoder`` or ``ResidualEncoder``)."""

    output_channels: List[int]
    strides: List[List[int]]
    kernel_sizes: List[Any]
    conv_op: Type[nn.Module]
    conv_bias: bool
    norm_op: Optional[Type[nn.Module]]
    norm_op_kwargs: Optional[dict]
    dropout_op: Optional[Type[nn.Module]]
    dropout_op_kwargs: Optional[dict]
    nonlin: Optional[Type[nn.Module]]
    nonlin_kwargs: Optional[dict]

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return len(self.strides[0])

    @property
    def n_stages(self) -> int:
        return len(self.output_channels)


def unwrap_network(network: nn.Module) -> nn.Module:
    """The bare network behind DDP and ``torch.compile`` wrappers."""
    while True:
        if hasattr(network, "_orig_mod"):  # torch.compile's OptimizedModule
            network = network._orig_mod
        elif isinstance(network, nn.parallel.DistributedDataParallel):
            network = network.module
        else:
            return network


def check_encoder_decoder(network: nn.Module) -> nn.Module:
    """Check that ``network`` exposes nnU-Net's encoder/decoder structure; return it unwrapped.

    Raises
    ------
    TypeError
        Naming the network class and what is missing.
    """
    net = unwrap_network(network)
    name = type(net).__name__
    encoder = getattr(net, "encoder", None)
    decoder = getattr(net, "decoder", None)
    if encoder is None or decoder is None:
        raise TypeError(
            f"nnunet_aux cannot extend network class {name}: it needs the 'encoder' and 'decoder' attributes "
            f"of nnU-Net's U-Nets (PlainConvUNet, ResidualEncoderUNet).")
    missing = [a for a in _REQUIRED if not hasattr(encoder, a)]
    if missing:
        raise TypeError(f"nnunet_aux cannot extend network class {name}: its encoder "
                        f"({type(encoder).__name__}) lacks {', '.join(missing)}.")
    for a in ("stages", "transpconvs", "seg_layers"):
        if not hasattr(decoder, a):
            raise TypeError(f"nnunet_aux cannot extend network class {name}: its decoder "
                            f"({type(decoder).__name__}) lacks '{a}' (expected nnU-Net's UNetDecoder).")
    if not getattr(encoder, "return_skips", True):
        raise TypeError(f"nnunet_aux cannot extend network class {name}: its encoder does not return skips.")
    return net


def encoder_spec(network: nn.Module) -> EncoderSpec:
    """Read the :class:`EncoderSpec` of an nnU-Net U-Net (wrapped or not).

    Parameters
    ----------
    network : nn.Module
        A ``PlainConvUNet``, ``ResidualEncoderUNet`` or any network with nnU-Net's
        ``encoder``/``decoder`` structure, possibly wrapped by DDP or ``torch.compile``.

    Returns
    -------
    spec : EncoderSpec
    """
    enc = check_encoder_decoder(network).encoder
    return EncoderSpec(**{a: getattr(enc, a) for a in _REQUIRED})


def decoder_convs_per_stage(network: nn.Module) -> Sequence[int]:
    """Number of convolutions in each decoder stage of ``network`` (deepest stage first)."""
    decoder = check_encoder_decoder(network).decoder
    return [len(getattr(stage, "convs", getattr(stage, "blocks", []))) or 1 for stage in decoder.stages]


def decoder_features(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Features of the last (full-resolution) decoder stage of an nnU-Net U-Net, for input ``x``.

    The loop of ``UNetDecoder.forward`` without its segmentation layers: what the last
    1x1(x1) segmentation layer would see. Works for every network that
    :func:`check_encoder_decoder` accepts, 2D or 3D, whatever its deep-supervision setting.
    """
    net = check_encoder_decoder(network)
    skips = net.encoder(x)
    decoder = net.decoder
    x = skips[-1]
    for s in range(len(decoder.stages)):
        x = decoder.transpconvs[s](x)
        x = decoder.stages[s](torch.cat((x, skips[-(s + 2)]), 1))
    return x
