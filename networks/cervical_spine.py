"""The two networks of the RSNA 2022 cervical spine fracture solution (selimsef/rsna_cervical_fracture, 4th private /
1st public): a 3-D UNet on ir-CSN-50 that labels the vertebrae C1-C7, and a per-vertebra CSN-152 fracture
classifier. Both take CT volumes ``(B, C, D, H, W)`` with the slices on ``D`` (mmaction2's temporal axis).

* :class:`CervicalSpineUNet` (``zoo/unet3d.py``, ``ResNet3dCSN2P1D``, config ``r50csn3d``): the 1-channel CT is
  repeated to the encoder's 3 input channels (as the reference does, so that mmaction2's RGB weights load
  unchanged); the decoder is :class:`networks.decoders.unet.UNetDecoder` with nearest upsampling and (2+1)-D conv
  pairs without norm before and after each concatenation (the reference's README: full 3-D convs there gave NaNs
  under AMP), widths 256/128/64/40; the head upsamples (1, 2, 2) to the input grid, applies a 3x3x3 conv 40 -> 32
  + SiLU and a 1x1x1 conv to the classes (background + C1-C7).
* :class:`CervicalFractureClassifier` (``zoo/classifiers.py``, ``ClassifierResNet3dCSN2P1D``): a CSN trunk
  (ir-CSN-152 or ip-CSN-152), global 3-D max pooling of its last map, dropout 0.5 and a linear layer to the 8
  targets ``[patient_overall, C1, ..., C7]`` (logits).

Both take their sizes as arguments (``base_channels``, ``stage_blocks``, widths), so tests and the CPU demo build
narrow versions of the same networks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution

from networks.decoders.unet import UNetDecoder, UpsampleConv
from networks.encoders import build_encoder, load_encoder_weights
from networks.segmentation import SegmentationModel

__all__ = ["CervicalFractureClassifier", "CervicalSpineUNet"]


class CervicalSpineUNet(SegmentationModel):
    """ir-CSN UNet with a (2+1)-D decoder: ``(B, in_channels, D, H, W)`` CT -> ``(B, num_classes, D, H, W)`` logits.

    ``D`` should be a multiple of the encoder's slice stride (8) and ``H``, ``W`` of its in-plane stride (32); the
    bundle pads the slices to a multiple of 16 as the reference does (other sizes still work: the decoder resizes an
    upsampled map to its skip).

    Args:
        in_channels: channels of the input CT (1); repeated to ``encoder_in_channels``.
        num_classes: output classes (8: background + C1-C7).
        variant: CSN variant of the encoder (``"ir_csn_50"``).
        encoder_in_channels: channels the encoder takes (3, mmaction2's RGB weights).
        base_channels: CSN stem width (64); stage widths follow it.
        stage_blocks: CSN blocks per stage, None for the variant's ((3, 4, 6, 3)).
        decoder_channels: decoder widths, deepest first (256, 128, 64, 40).
        head_channels: width of the last 3x3x3 conv (32).
        pretrained_path: local mmaction2 weights of the encoder (the reference starts from
            ``vmz_ircsn_ig65m_pretrained_r50_32x2x1_58e_kinetics400_rgb``); None: random initialisation.
        class_prior: expected fraction of voxels of each class; when given, the last conv's biases start at their
            logarithms, so that the untrained network already predicts the class frequencies (the prior
            initialisation of Lin et al., "Focal Loss for Dense Object Detection", 2017). Beyond the reference: a
            randomly initialised network otherwise spends its first updates swinging from all-foreground to
            all-background (97 % of the voxels), which stalls a briefly trained one (the bundle's CPU demo).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 8,
        variant: str = "ir_csn_50",
        encoder_in_channels: int = 3,
        base_channels: int = 64,
        stage_blocks: Sequence[int] | None = None,
        decoder_channels: Sequence[int] = (256, 128, 64, 40),
        head_channels: int = 32,
        pretrained_path: str | None = None,
        class_prior: Sequence[float] | None = None,
    ) -> None:
        if encoder_in_channels % in_channels:
            raise ValueError(f"encoder_in_channels {encoder_in_channels} is not a multiple of in_channels {in_channels}")
        sizes = {"base_channels": base_channels}
        if stage_blocks is not None:
            sizes["stage_blocks"] = tuple(stage_blocks)
        encoder = build_encoder("csn", variant=variant, in_channels=encoder_in_channels, **sizes)
        if pretrained_path is not None:
            load_encoder_weights(encoder, pretrained_path)
        decoder = UNetDecoder(
            encoder.out_channels,
            encoder.reductions,
            decoder_channels,
            spatial_dims=3,
            upsample="nearest",
            conv_before_concat=True,
            block="conv2plus1d",
            norm=None,
            act="relu",
            bias=True,
        )
        logits = Convolution(3, head_channels, num_classes, kernel_size=1, conv_only=True, bias=True)
        if class_prior is not None:
            prior = torch.as_tensor(class_prior, dtype=torch.float32)
            if prior.shape != (num_classes,) or not bool((prior > 0).all()):
                raise ValueError(f"class_prior must hold {num_classes} positive fractions, got {list(class_prior)}")
            with torch.no_grad():
                logits.conv.bias.copy_(torch.log(prior / prior.sum()))
        head = nn.Sequential(
            UpsampleConv(3, decoder.out_channels, head_channels, scale_factor=decoder.output_reduction), logits
        )
        super().__init__(encoder, decoder, head)
        self.repeats = encoder_in_channels // in_channels

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's maps of the CT repeated to the encoder's channels."""
        return self.encoder(x.repeat(1, self.repeats, 1, 1, 1) if self.repeats > 1 else x)


class CervicalFractureClassifier(nn.Module):
    """CSN trunk -> global 3-D max pool -> dropout -> linear: ``(B, 3, D, H, W)`` crop -> ``(B, num_classes)`` logits.

    Args:
        variant: ``"ir_csn_152"`` or ``"ip_csn_152"`` (or any CSN variant).
        in_channels: input channels (3: image, image, vertebra label map).
        num_classes: outputs (8: patient_overall, C1-C7).
        dropout: dropout before the linear layer (0.5).
        base_channels: CSN stem width (64); the pooled feature has ``32 * base_channels`` (2048) channels.
        stage_blocks: CSN blocks per stage, None for the variant's.
        pretrained_path: local mmaction2 weights of the trunk (the reference's IG65M + Kinetics-400 ir/ip-CSN-152
            checkpoints); None: random initialisation.
    """

    def __init__(
        self,
        variant: str = "ir_csn_152",
        in_channels: int = 3,
        num_classes: int = 8,
        dropout: float = 0.5,
        base_channels: int = 64,
        stage_blocks: Sequence[int] | None = None,
        pretrained_path: str | None = None,
    ) -> None:
        super().__init__()
        sizes = {"base_channels": base_channels}
        if stage_blocks is not None:
            sizes["stage_blocks"] = tuple(stage_blocks)
        self.encoder = build_encoder("csn", variant=variant, in_channels=in_channels, **sizes)
        if pretrained_path is not None:
            load_encoder_weights(self.encoder, pretrained_path)
        self.pool = nn.AdaptiveMaxPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.encoder.out_channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)[-1]
        return self.fc(self.dropout(self.pool(features).flatten(1)))
