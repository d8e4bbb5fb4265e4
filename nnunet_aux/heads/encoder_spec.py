"""What the auxiliary parts need to know about nnU-Net's network, read off the network.

Nothing is taken from constants: convolution type (2D or 3D), feature sizes, strides,
kernel sizes, normalisation and non-linearity are what the plan built into the network.
:class:`EncoderSpec` is a plain (non-module) record of the encoder's configuration, so the
heads built from it hold a reference to none of the encoder's weights.
:func:`check_encoder_decoder` says, naming the class, why a network cannot be extended.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Type

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


#: what the auxiliary parts use of nnU-Net's decoder (``UNetDecoder`` and ``UNetResDecoder`` have them)
_DECODER_REQUIRED = ("stages", "transpconvs", "seg_layers", "deep_supervision")


def check_decoder(decoder: nn.Module, network_name: Optional[str] = None) -> nn.Module:
    """Check that ``decoder`` has the structure of nnU-Net's U-Net decoders; return it.

    Raises
    ------
    TypeError
        Naming the decoder (and network) class and the missing attribute.
    """
    subject = f"network class {network_name}: its decoder ({type(decoder).__name__})" if network_name else \
        f"decoder class {type(decoder).__name__}: it"
    missing = [a for a in _DECODER_REQUIRED if not hasattr(decoder, a)]
    if missing:
        raise TypeError(f"nnunet_aux cannot extend {subject} lacks {', '.join(repr(a) for a in missing)} "
                        f"(expected nnU-Net's UNetDecoder structure).")
    if not (len(decoder.stages) == len(decoder.transpconvs) == len(decoder.seg_layers)):
        raise TypeError(f"nnunet_aux cannot extend {subject} has 'stages', 'transpconvs' and 'seg_layers' of "
                        f"different lengths ({len(decoder.stages)}, {len(decoder.transpconvs)}, "
                        f"{len(decoder.seg_layers)}).")
    return decoder


def check_encoder_decoder(network: nn.Module) -> nn.Module:
    """Check that ``network`` exposes nnU-Net's encoder/decoder structure; return it unwrapped.

    What is needed: ``network.encoder`` returning one feature map per stage (its skips)
    and describing itself like ``PlainConvEncoder`` / ``ResidualEncoder`` (the attributes
    of :class:`EncoderSpec`), and ``network.decoder`` with the ``stages`` /
    ``transpconvs`` / ``seg_layers`` of ``UNetDecoder``, one stage per encoder stage but
    the deepest. nnU-Net's planned networks (``PlainConvUNet``, ``ResidualEncoderUNet``
    of the ResEnc presets, 2D and 3D) have it.

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
    check_decoder(decoder, name)
    if not getattr(encoder, "return_skips", True):
        raise TypeError(f"nnunet_aux cannot extend network class {name}: its encoder does not return skips.")
    if len(decoder.stages) != len(encoder.output_channels) - 1:
        raise TypeError(f"nnunet_aux cannot extend network class {name}: its decoder has {len(decoder.stages)} "
                        f"stages for {len(encoder.output_channels)} encoder stages (expected one fewer).")
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
