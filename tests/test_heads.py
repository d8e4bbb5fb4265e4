"""Auxiliary network parts built from nnU-Net's plan: shapes, weights they own, errors."""

from __future__ import annotations

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet, ResidualUNet
from torch import nn

from nnunet_aux.heads import AuxiliaryDecoder, ProjectionHead, check_encoder_decoder, encoder_spec


def plain_unet(dim=3, features=(4, 8, 16, 16), classes=2, nonlin_first=False):
    conv = nn.Conv3d if dim == 3 else nn.Conv2d
    norm = nn.InstanceNorm3d if dim == 3 else nn.InstanceNorm2d
    return PlainConvUNet(1, len(features), features, conv, 3, [1] + [2] * (len(features) - 1), 2, classes, 1,
                         True, norm, {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True},
                         deep_supervision=True, nonlin_first=nonlin_first)


def resenc_unet():
    return ResidualEncoderUNet(1, 4, (4, 8, 16, 16), nn.Conv3d, 3, (1, 2, 2, 2), (1, 1, 2, 2), 2, (1, 1, 1), True,
                               nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU,
                               {"inplace": True}, deep_supervision=True)


def residual_unet():
    # UNetResDecoder: residual blocks in the decoder too (not planned by nnU-Net, same structure)
    return ResidualUNet(1, 3, (4, 8, 16), nn.Conv2d, 3, (1, 2, 2), 1, 2, 1, True, nn.BatchNorm2d, None, None, None,
                        nn.ReLU, None, deep_supervision=True)


def module_types(module):
    return [type(m).__name__ for m in module.modules()]


@pytest.mark.parametrize("make, dim", [(plain_unet, 3), (resenc_unet, 3), (lambda: plain_unet(2), 2),
                                       (lambda: plain_unet(nonlin_first=True), 3), (residual_unet, 2)])
def test_auxiliary_decoder_mirrors_the_main_decoder(make, dim):
    net = make()
    spec = encoder_spec(net)
    assert spec.ndim == dim
    decoder = AuxiliaryDecoder(net.decoder, 1, deep_supervision=True)
    x = torch.randn(2, 1, *([16] * dim))
    skips = net.encoder(x)
    outputs, first = decoder(skips)
    main = net.decoder(skips)
    assert [o.shape[2:] for o in outputs] == [m.shape[2:] for m in main]
    assert all(o.shape[1] == 1 for o in outputs)
    assert first.shape[1] == spec.output_channels[-2] and first.shape[2:] == main[-1].shape[2:]
    # same building blocks as the main decoder: same parameter shapes apart from the output layers
    main_shapes = {k: v.shape for k, v in net.decoder.state_dict().items()
                   if not k.startswith(("encoder.", "seg_layers."))}
    aux_shapes = {k[len("decoder."):]: v.shape for k, v in decoder.state_dict().items()
                  if not k.startswith("decoder.seg_layers.")}
    assert aux_shapes == main_shapes
    # ... in the same order (nonlin_first, residual blocks), apart from the encoder the main decoder references
    main_types = [t for m in net.decoder.children() if m is not net.decoder.encoder for t in module_types(m)]
    aux_types = [t for m in decoder.decoder.children() for t in module_types(m)]
    assert aux_types == main_types


def test_auxiliary_decoder_owns_its_weights_only():
    net = plain_unet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    decoders = [AuxiliaryDecoder(net.decoder, 1) for _ in range(2)]
    network_params = {id(p) for p in net.parameters()}
    for decoder in decoders:
        assert not any(id(p) in network_params for p in decoder.parameters())
        assert not any("encoder" in k for k in decoder.state_dict())
    # freshly initialised, each its own: no copy of the main decoder's or of each other's weights
    first = dict(decoders[0].named_parameters())["decoder.stages.0.convs.0.conv.weight"]
    second = dict(decoders[1].named_parameters())["decoder.stages.0.convs.0.conv.weight"]
    assert not torch.equal(first, net.decoder.stages[0].convs[0].conv.weight) and not torch.equal(first, second)
    # the network is left as it was
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert net.decoder.encoder is net.encoder and net.decoder.seg_layers[0].out_channels == 2


def test_deep_supervision_switch():
    net = plain_unet()
    decoder = AuxiliaryDecoder(net.decoder, 1)
    decoder.deep_supervision = False
    out, _ = decoder(net.encoder(torch.randn(1, 1, 16, 16, 16)))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 1, 16, 16, 16)


def test_projection_head_follows_the_plan():
    spec = encoder_spec(plain_unet(2))
    head = ProjectionHead(spec, 16, 8, 5)
    assert isinstance(head.layers[0], nn.Conv2d) and isinstance(head.layers[1], nn.InstanceNorm2d)
    assert head(torch.randn(2, 16, 4, 4)).shape == (2, 5, 4, 4)


def test_unsupported_network_is_named():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Conv3d(1, 1, 1)

    with pytest.raises(TypeError, match="Plain.*'encoder' and 'decoder'"):
        check_encoder_decoder(Plain())


def test_decoder_without_unet_structure_is_named():
    net = plain_unet()
    del net.decoder.seg_layers
    with pytest.raises(TypeError, match="PlainConvUNet: its decoder \\(UNetDecoder\\) lacks 'seg_layers'"):
        check_encoder_decoder(net)
    with pytest.raises(TypeError, match="decoder class UNetDecoder: it lacks 'seg_layers'"):
        AuxiliaryDecoder(net.decoder, 1)
