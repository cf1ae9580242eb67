"""Decoders that turn an encoder's feature maps (shallow to deep, :mod:`networks.encoders.base`) into one map.

Every decoder is built from the encoder's ``out_channels`` and ``reductions`` and raises a ``ValueError`` naming
expected and received values when the encoder does not fit it, instead of returning a wrong-sized output.
"""

from networks.decoders.base import DecoderLayout, upsampling_factors
from networks.decoders.linknet import LinkNetDecoder, LinkNetDecoderBlock
from networks.decoders.unet import UNetDecoder, UNetUpBlock, UpsampleConv, conv_block

__all__ = [
    "DecoderLayout",
    "LinkNetDecoder",
    "LinkNetDecoderBlock",
    "UNetDecoder",
    "UNetUpBlock",
    "UpsampleConv",
    "conv_block",
    "upsampling_factors",
]
