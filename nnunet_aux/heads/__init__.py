"""Extra network parts built from the nnU-Net plan, kept outside nnU-Net's network."""

from .auxiliary_decoder import AuxiliaryDecoder, decoder_stages_kept
from .classification_head import ClassificationHead
from .clef_head import CLEFHead
from .decoder_width import SkipReduction, narrow_channels, narrow_decoder
from .encoder_spec import (
                           EncoderSpec,
                           check_decoder,
                           check_encoder_decoder,
                           decoder_features,
                           encoder_spec,
                           unwrap_network,
)
from .projection_head import ProjectionHead
from .simsiam_head import SimSiamHead

__all__ = ["AuxiliaryDecoder", "CLEFHead", "ClassificationHead", "EncoderSpec", "ProjectionHead", "SimSiamHead",
           "decoder_stages_kept",
           "SkipReduction", "narrow_channels", "narrow_decoder",
           "check_decoder", "check_encoder_decoder", "decoder_features", "encoder_spec", "unwrap_network"]
