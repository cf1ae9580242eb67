"""The UNet of the FUGC 2025 7th-place solution (apuomline/FUGC2025_7th_solution, ``model/``): a registered
encoder with the solution's feature taps and its UNet decoder, 3 output classes at full resolution.

Encoders (taps shallow to deep):

* PVT-v2-b1 (``"pvt_v2"``): patch-embedding output 64@H/4, then the four stages 64@H/4, 128@H/8, 320@H/16,
  512@H/32;
* ResNet34-D (``"resnet_d"``): ``act1`` 64@H/2, then ``layer1`` .. ``layer4`` with the max-pool skipped, so
  ``layer1`` is at H/2: 64@H/2, 128@H/4, 256@H/8, 512@H/16.

Decoder (the solution's ``Decoder``/``UpBlock``): per stage a 1x1 conv of the deeper map to the skip's width,
bilinear x2 (``align_corners=True``), concatenation with the skip, two Conv3x3 + BN + LeakyReLU, the stage's
width being the skip's; the last stage joins two maps of one resolution, so both are upsampled (x4 for PVT, x2
for ResNet) and the output is at full resolution; a 3x3 conv head gives the logits. Odd sizes (336 x 544 is
not divisible by 32) are handled by resizing the upsampled map to its skip; a size the first map's stride does
not divide (PVT's 4) gives a slightly larger last map, which :meth:`FUGCUNet.forward` resizes to the input
(``decode`` alone returns it as it is: UniMatch's images, 336 x 544 or the demo's, are multiples of 4). Under
tracing both resizes are always recorded, so that an ONNX export (:func:`networks.onnx.export_onnx`) traced on
one size runs on any size.

Parameters (3 input channels, 3 classes, counted by the tests): PVT-v2-b1 UNet 17,146,051 (encoder 13,496,000),
ResNet34-D UNet 23,917,347 (encoder 21,303,904).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution

from networks.decoders.unet import UNetDecoder
from networks.encoders import build_encoder, load_encoder_weights
from networks.segmentation import SegmentationModel

__all__ = ["FUGCUNet"]


class FUGCUNet(SegmentationModel):
    """The FUGC 2025 7th-place UNet (module doc) on a registered encoder.

    ``FUGCUNet("pvt_v2")`` is the PVT-v2-b1 UNet, ``FUGCUNet("resnet_d")`` the ResNet34-D UNet; narrower
    versions for tests and the CPU demo come from ``encoder_kwargs`` (``{"dims": [16, 32, 64, 128]}``,
    ``{"widths": [16, 32, 64, 128], "stem_width": 8}``). ``forward(x: (B, in_channels, H, W)) -> (B, out_channels,
    H, W)`` logits, ``encode``/``decode`` as :class:`SegmentationModel` (UniMatch's feature perturbation).

    Args:
        encoder: registered encoder family (``"pvt_v2"`` or ``"resnet_d"``; any encoder whose last two maps of
            the decoder's path are at one stride works).
        encoder_kwargs: arguments of the family's builder (``variant``, widths).
        in_channels: input channels.
        out_channels: classes (3: background, anterior lip, posterior lip).
        pretrained_path: local encoder weights in timm's key names (:func:`networks.encoders.load_encoder_weights`).
        negative_slope: of the decoder's LeakyReLU (PyTorch's default 0.01, as the solution uses).

    Raises:
        ValueError: an unknown encoder family or variant.
    """

    def __init__(
        self,
        encoder: str = "pvt_v2",
        encoder_kwargs: Mapping[str, Any] | None = None,
        in_channels: int = 3,
        out_channels: int = 3,
        pretrained_path: str | Path | None = None,
        negative_slope: float = 0.01,
    ) -> None:
        encoder_module = build_encoder(encoder, in_channels=in_channels, **dict(encoder_kwargs or {}))
        if pretrained_path is not None:
            load_encoder_weights(encoder_module, pretrained_path)
        skips = encoder_module.out_channels[:-1]
        decoder = UNetDecoder(
            encoder_module.out_channels,
            encoder_module.reductions,
            decoder_channels=list(reversed(skips)),
            output_reduction=(1, 1),
            upsample="bilinear",
            align_corners=True,
            project_to_skip=True,
            act=("leakyrelu", {"negative_slope": negative_slope}),
        )
        head = Convolution(2, decoder.out_channels, out_channels, kernel_size=3, conv_only=True, bias=True)
        super().__init__(encoder_module, decoder, head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.decode(self.encode(x))
        if torch.jit.is_tracing() or logits.shape[2:] != x.shape[2:]:
            logits = F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=True)
        return logits
