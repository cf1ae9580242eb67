"""LinkNet decoder (Chaurasia & Culurciello, VCIP 2017) in the layout of smp's ``Linknet`` decoder.

Each block upsamples by 2 with a transposed conv, and the skips are ADDED, so the encoder's maps must lie at
strides 2, 4, ..., 2^n on every axis (the smp EfficientNet and ResNet skips); the decoder checks that and names
the strides it got (an encoder whose first map is at stride 4, such as ConvNeXt, would otherwise give a
half-sized output without an error).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution

from networks.decoders.base import DecoderLayout

__all__ = ["LinkNetDecoder", "LinkNetDecoderBlock"]


class LinkNetDecoderBlock(nn.Module):
    """1x1 conv C->C/4 + norm + act, 4x4 stride-2 transposed conv C/4->C/4 + norm + act, 1x1 conv C/4->out + norm + act.

    As smp's LinkNet ``DecoderBlock``: the 1x1 convs have no bias, the transposed conv has one.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        spatial_dims: int = 2,
        norm: str | tuple = "batch",
        act: str | tuple = ("relu", {"inplace": True}),
    ) -> None:
        super().__init__()
        mid = max(1, in_channels // 4)
        self.reduce = Convolution(spatial_dims, in_channels, mid, kernel_size=1, act=act, norm=norm, bias=False)
        self.up = Convolution(
            spatial_dims,
            mid,
            mid,
            strides=2,
            kernel_size=4,
            padding=1,
            output_padding=0,
            is_transposed=True,
            act=act,
            norm=norm,
            bias=True,
        )
        self.expand = Convolution(spatial_dims, mid, out_channels, kernel_size=1, act=act, norm=norm, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.up(self.reduce(x)))


class LinkNetDecoder(DecoderLayout):
    """LinkNet decoder: one upsampling block per encoder map, deepest first; the skips are ADDED (not the last block).

    For encoder maps with channels ``(c0, …, cn-1)`` (shallowest first, strides 2, 4, …, 2^n) the channel path is
    ``cn-1 -> cn-2 -> … -> c0 -> out_channels``; for the EfficientNet-B6 skips ``(56, 40, 72, 200, 576)`` that is
    576->200->72->40->56->32 (smp 0.1.0 ``Linknet``). The output has the input's size (``output_reduction`` 1).

    Args:
        encoder_channels: ``encoder.out_channels``.
        encoder_reductions: ``encoder.reductions``; must be 2, 4, …, 2^n on every axis.
        out_channels: channels of the last block (before the segmentation head).
        spatial_dims: 2 or 3.
        norm: MONAI norm spec of every block.
        act: MONAI activation spec of every block.

    Raises:
        ValueError: the reductions are not 2, 4, …, 2^n (the message gives expected and received strides).
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        encoder_reductions: Sequence[Sequence[int]],
        out_channels: int = 32,
        spatial_dims: int = 2,
        norm: str | tuple = "batch",
        act: str | tuple = ("relu", {"inplace": True}),
    ) -> None:
        super().__init__(encoder_channels, encoder_reductions, spatial_dims)
        expected = tuple((2 ** (level + 1),) * spatial_dims for level in range(len(self.encoder_channels)))
        if self.encoder_reductions != expected:
            raise ValueError(
                f"LinkNetDecoder needs encoder maps at strides {expected} (each block upsamples x2 and adds a skip), "
                f"got {self.encoder_reductions}"
            )
        path = [int(c) for c in reversed(self.encoder_channels)] + [int(out_channels)]
        self.blocks = nn.ModuleList(
            LinkNetDecoderBlock(path[i], path[i + 1], spatial_dims, norm, act) for i in range(len(path) - 1)
        )
        self.out_channels = int(out_channels)
        self.output_reduction: tuple[int, ...] = (1,) * spatial_dims

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        self.check_features(features)
        n = len(self.blocks)
        x = features[n - 1]
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i < n - 1:
                x = x + features[n - 2 - i]
        return x
