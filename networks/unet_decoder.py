"""UNet decoder for multi-scale encoders: bilinear x2 upsampling, skip concatenation, two conv-BN-ReLU.

MONAI's ``UpCat`` pads a mismatched upsampled map and puts the skip first; the MAGNET decoder (lyyek/CSV2026)
instead re-interpolates the upsampled map to the skip's size and concatenates ``[upsampled, skip]``, so the
block is rebuilt here from MONAI's ``TwoConv``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets.basic_unet import TwoConv

__all__ = ["UNetDecoder", "UNetUpBlock"]


class UNetUpBlock(nn.Module):
    """Bilinear x2 upsample (align_corners=False) -> resize to the skip if needed -> concat -> 2x conv3x3-BN-ReLU.

    Args:
        in_channels: channels of the coarse input.
        skip_channels: channels of the skip connection.
        out_channels: channels of the output.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.convs = TwoConv(2, in_channels + skip_channels, out_channels, act="relu", norm="batch", bias=False)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        if x.shape[-2:] != skip.shape[-2:]:
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.convs(torch.cat([x, skip], dim=1))


class UNetDecoder(nn.Module):
    """UNet decoder over encoder features ordered fine to coarse, ending in a 1x1 conv to ``num_classes``.

    With skip channels ``(s0, s1, ..., sN)`` the blocks are ``(sN + s{N-1}) -> s{N-1}``, ..., ``(s2 + s1) -> s1``
    and a last ``(s1 + s0) -> final_channels``; e.g. MAGNET's ``(80, 80, 160, 320, 640)`` gives 960->320,
    480->160, 240->80, 160->40 and a 1x1 conv 40->3. The output has the resolution of the finest feature
    (callers resize it to the input).

    Args:
        encoder_channels: channels of the features passed to ``forward``, finest first.
        num_classes: output channels of the final 1x1 convolution.
        final_channels: width of the last block; ``max(32, encoder_channels[0] // 2)`` when ``None``.
    """

    def __init__(self, encoder_channels: Sequence[int], num_classes: int, final_channels: int | None = None) -> None:
        super().__init__()
        if len(encoder_channels) < 2:
            raise ValueError(f"need at least two encoder feature levels, got {tuple(encoder_channels)}")
        chans = [int(c) for c in encoder_channels]
        last = final_channels if final_channels is not None else max(32, chans[0] // 2)
        blocks = []
        coarse = chans[-1]
        for level in range(len(chans) - 2, -1, -1):
            out = chans[level] if level > 0 else last
            blocks.append(UNetUpBlock(coarse, chans[level], out))
            coarse = out
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(last, num_classes, kernel_size=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Decode ``features`` (finest first, as many as ``encoder_channels``) into logits at the finest size."""
        x = features[-1]
        n = len(features)
        for i, block in enumerate(self.blocks):
            x = block(x, features[n - 2 - i])
        return self.head(x)
