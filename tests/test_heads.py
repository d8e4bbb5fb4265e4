"""Auxiliary network parts built from nnU-Net's plan: shapes, weights they own, errors."""

from __future__ import annotations

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from torch import nn

from nnunet_aux.heads import (AuxiliaryDecoder, ProjectionHead, check_encoder_decoder, decoder_convs_per_stage,
                              encoder_spec)


def plain_unet(dim=3, features=(4, 8, 16, 16), classes=2):
    conv = nn.Conv3d if dim == 3 else nn.Conv2d
    norm = nn.InstanceNorm3d if dim == 3 else nn.InstanceNorm2d
    return PlainConvUNet(1, len(features), features, conv, 3, [1] + [2] * (len(features) - 1), 2, classes, 1,
                         True, norm, {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True},
                         deep_supervision=True)


def resenc_unet():
    return ResidualEncoderUNet(1, 4, (4, 8, 16, 16), nn.Conv3d, 3, (1, 2, 2, 2), (1, 1, 2, 2), 2, (1, 1, 1), True,
                               nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU,
                               {"inplace": True}, deep_supervision=True)


@pytest.mark.parametrize("make, dim", [(plain_unet, 3), (resenc_unet, 3), (lambda: plain_unet(2), 2)])
def test_auxiliary_decoder_mirrors_the_main_decoder(make, dim):
    net = make()
    spec = encoder_spec(net)
    assert spec.ndim == dim
    decoder = AuxiliaryDecoder(spec, 1, decoder_convs_per_stage(net), deep_supervision=True)
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


def test_auxiliary_decoder_owns_no_encoder_weights():
    net = plain_unet()
    decoder = AuxiliaryDecoder(encoder_spec(net), 1, decoder_convs_per_stage(net))
    encoder_params = {id(p) for p in net.encoder.parameters()}
    assert not any(id(p) in encoder_params for p in decoder.parameters())
    assert not any("encoder" in k for k in decoder.state_dict())


def test_deep_supervision_switch():
    net = plain_unet()
    decoder = AuxiliaryDecoder(encoder_spec(net), 1, decoder_convs_per_stage(net))
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
