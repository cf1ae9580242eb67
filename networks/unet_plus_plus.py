"""UNet, UNet++ and dilated UNet++ with a slice-level detection head (AI Challenger 2018 retinal edema, 4th place).

The reference solution (ShawnBIT/AI-Challenger-Retinal-Edema-Segmentation, ``models/nets/UNet.py`` and
``models/utils/layers.py``) segments 2.5D OCT B-scans (slices i-1, i, i+1 as three channels) into background /
REA / SRF / PED and, from the bottleneck, predicts for each B-scan whether each lesion is present. Layout, as read
from that code (``feature_scale=4``, so filters 16, 32, 64, 128, 256):

* encoder block = 2 x (Conv3x3 + BatchNorm + ReLU), MaxPool 2 between the five levels (16x down);
* decoder block ``unetUp`` = ConvTranspose 4x4 stride 2 padding 1 (in -> out channels), concatenation with the skip
  tensor(s), then 2 x (Conv3x3 + ReLU) WITHOUT normalisation; all convolutions carry a bias;
* UNet++ ("UNet_Nested"): nested nodes X_ij = up(X_{i+1,j-1}) ++ X_i0 ++ ... ++ X_i,j-1, each upsampled with its own
  transposed convolution (the code's ``is_deconv=True`` default); deep supervision = four 1x1 heads on
  X_01..X_04 whose logits are AVERAGED into one output;
* dilated UNet++: the bottleneck X_40 goes through four cascaded Conv3x3 + BN + ReLU with dilation 1, 2, 4, 8 and the
  block returns X_40 + x1 + x2 + x3 + x4; both the decoder and the detection head read this sum;
* detection head on the 256-channel bottleneck: Dropout 0.5 -> Conv1x1 256 -> 3 -> AdaptiveMaxPool2d(1) (-> Sigmoid).

The parameter counts of the reference include the detection head (it is built unconditionally there):
UNet 2,466,151, UNet++ 2,953,027, dilated UNet++ 5,315,395 (README: 2.47 M, 2.95 M, 5.32 M; the first is also
checked layer by layer: encoder 1,180,752 + decoder 1,284,560 + 1x1 head 68 + detection head 771). The classes
here reproduce those counts exactly with the default arguments (tests/networks/test_unet_plus_plus.py).

Deviations, chosen for export and mixed precision, with the same function:

* the networks return LOGITS, not ``log_softmax`` / sigmoid probabilities. ``log_softmax`` is applied by the loss
  (:class:`losses.exp_log.EdemaLoss`), softmax/argmax by the post-processing; the detection head returns logits and
  the loss uses ``BCEWithLogits`` (numerically safe under autocast, where ``BCELoss`` on probabilities is refused).
  Max-pooling before the sigmoid equals max-pooling after it (the sigmoid is monotone), so
  ``sigmoid(det_logit)`` is exactly the reference's detection probability.
* one tensor out: ``forward(x) -> (B, num_classes + num_det_classes, H, W)``, segmentation logits in channels
  ``[0:num_classes]`` and the detection logits broadcast over H x W in the last channels (the packing of
  ``networks.magnet.MagnetNet``); :func:`split_seg_det_output` unpacks it. The packed tensor also slides through
  :class:`monai.inferers.SliceInferer`, so a whole cube ``(1, 3, S, H, W)`` gives ``(1, C + 3, S, H, W)``.
  With ``num_det_classes=0`` the head is not built and the output is just ``(B, num_classes, H, W)``.
* with ``deep_supervision=False`` only the X_04 head is built (the reference keeps all four and uses one).

Why not MONAI's :class:`monai.networks.nets.BasicUNetPlusPlus`: even with ``norm="batch"``, ``act="relu"`` and
``features=(16, 32, 64, 128, 256, 16)`` it has 2,283,264 parameters for 3 -> 4 channels (reference 2.95 M, -23 %),
because (1) it normalises every decoder convolution (the reference decoder has no normalisation), (2) it upsamples
with 2x2 transposed convolutions that HALVE the channels at levels 1-3 and keep them at level 0, where the reference
uses 4x4 transposed convolutions mapping to the skip width (4x the weights), and (3) it has no bottleneck hook for the
dilated module or the detection head, and returns a list of un-averaged heads instead of one tensor. Its building
blocks do fit, so this module is assembled from them: :class:`monai.networks.nets.basic_unet.TwoConv` (Conv + BN +
ReLU, or Conv + ReLU without ``norm``), :class:`monai.networks.blocks.UpSample` (``kernel_size=4`` gives exactly the
reference's ConvTranspose 4x4 / stride 2 / padding 1) and :class:`monai.networks.blocks.Convolution` (dilated convs).

Shared pieces: both networks use the registered plain encoder (:class:`networks.encoders.unet.UNetEncoder`);
:class:`UNet` is a :class:`networks.segmentation.SegmentationModel` with the
:class:`networks.decoders.unet.UNetDecoder` (deconv 4x4 upsampling, no norm). UNet++ keeps its own decoder: its
nodes X_ij read every earlier node of their level (X_i0 .. X_i,j-1), a grid rather than the chain of one
block per skip that the UNet decoder is, and deep supervision reads four of those nodes.

Checkpoints written before these pieces existed (``enc.{i}``, ``up3`` .. ``up0`` in UNet; ``conv00`` .. ``conv40``
in UNet++) load unchanged: the old names are mapped on load (:func:`networks.checkpoint.rename_keys_on_load`,
mappings :data:`UNET_RENAMES`, :data:`UNET_PLUS_PLUS_RENAMES`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution, UpSample
from monai.networks.nets.basic_unet import TwoConv

from networks.checkpoint import rename_keys_on_load
from networks.decoders.unet import UNetDecoder
from networks.encoders import build_encoder
from networks.segmentation import SegmentationModel

__all__ = [
    "UNET_PLUS_PLUS_RENAMES",
    "UNET_RENAMES",
    "DetectionHead",
    "DilatedBottleneck",
    "NestedUp",
    "UNet",
    "UNetPlusPlus",
    "pack_seg_det_output",
    "seg_det_probabilities",
    "split_seg_det_output",
]

_RELU = ("relu", {"inplace": True})

#: checkpoint key prefixes of :class:`UNet` before it was a SegmentationModel -> today's
UNET_RENAMES: dict[str, str] = {
    "enc.": "encoder.blocks.",
    **{f"up{level}.up.": f"decoder.blocks.{3 - level}.up." for level in range(4)},
    **{f"up{level}.conv.": f"decoder.blocks.{3 - level}.convs." for level in range(4)},
}
#: checkpoint key prefixes of :class:`UNetPlusPlus` before it used the registered encoder -> today's
UNET_PLUS_PLUS_RENAMES: dict[str, str] = {f"conv{level}0.": f"encoder.blocks.{level}." for level in range(5)}


def _unet_encoder(in_channels: int, features: Sequence[int]) -> nn.Module:
    """2 x (Conv3x3 + BatchNorm + ReLU) per level, the reference's ``unetConv2(is_batchnorm=True)``."""
    return build_encoder("unet", in_channels=in_channels, features=features, act=_RELU)


def _check_features(features: Sequence[int]) -> tuple[int, int, int, int, int]:
    if len(features) != 5 or any(int(f) < 1 for f in features):
        raise ValueError(f"features must be five positive channel counts (one per level), got {tuple(features)}")
    return tuple(int(f) for f in features)  # type: ignore[return-value]


def _init_weights(module: nn.Module) -> None:
    """Kaiming-normal (fan-in) convolutions, BatchNorm weights ~ N(1, 0.02) and zero bias, as the reference does."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class NestedUp(nn.Module):
    """Upsample the deeper node, concatenate it with ``n_skips`` same-level nodes, then 2 x (Conv3x3 + ReLU).

    The upsampling is a ConvTranspose 4x4 / stride 2 / padding 1 from ``in_channels`` to ``out_channels``; the
    convolutions see ``(n_skips + 1) * out_channels`` channels and use no normalisation (reference ``unetUp``).
    """

    def __init__(self, in_channels: int, out_channels: int, n_skips: int = 1) -> None:
        super().__init__()
        if n_skips < 1:
            raise ValueError(f"n_skips must be at least 1, got {n_skips}")
        self.up = UpSample(2, in_channels, out_channels, scale_factor=2, kernel_size=4, mode="deconv")
        norm: Any = None  # no normalisation in the decoder
        self.conv = TwoConv(2, (n_skips + 1) * out_channels, out_channels, act=_RELU, norm=norm, bias=True)

    def forward(self, deeper: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        return self.conv(torch.cat([self.up(deeper)] + skips, dim=1))


class DilatedBottleneck(nn.Module):
    """Four cascaded Conv3x3 + BN + ReLU with dilation 1, 2, 4, 8; returns the input plus all four outputs."""

    def __init__(self, channels: int, dilations: Sequence[int] = (1, 2, 4, 8)) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            Convolution(2, channels, channels, kernel_size=3, dilation=d, padding=d, act=_RELU, norm="batch")
            for d in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for conv in self.convs:
            x = conv(x)
            out = out + x
        return out


class DetectionHead(nn.Module):
    """Dropout -> Conv1x1 -> global max pooling: one logit per lesion and image, shape ``(B, num_det_classes)``."""

    def __init__(self, in_channels: int, num_det_classes: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.conv = nn.Conv2d(in_channels, num_det_classes, kernel_size=1)
        self.pool = nn.AdaptiveMaxPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(self.dropout(x))).flatten(1)


def pack_seg_det_output(seg_logits: torch.Tensor, det_logits: torch.Tensor) -> torch.Tensor:
    """Append the ``(B, K)`` detection logits to ``(B, C, H, W)`` segmentation logits as K constant channels."""
    b, _, h, w = seg_logits.shape
    det = det_logits.to(seg_logits.dtype)[:, :, None, None].expand(b, det_logits.shape[1], h, w)
    return torch.cat([seg_logits, det], dim=1)


def split_seg_det_output(out: torch.Tensor, num_classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Unpack a network output into ``(seg_logits (B, C, ...), det_logits (B, K))``.

    Works on a slice batch ``(B, C + K, H, W)`` and on a stacked cube ``(B, C + K, S, H, W)`` from
    :class:`monai.inferers.SliceInferer`; for the latter ``det_logits`` is ``(B, K, S)`` (one logit per slice).
    ``K`` is 0 (an empty tensor) when the network was built without a detection head.
    """
    if out.ndim < 4 or out.shape[1] < num_classes:
        raise ValueError(f"expected (B, {num_classes} + K, ...) network output, got shape {tuple(out.shape)}")
    seg = out[:, :num_classes]
    det = out[:, num_classes:]
    if out.ndim == 4:
        return seg, det[:, :, 0, 0]
    return seg, det[:, :, :, 0, 0]


def seg_det_probabilities(out: torch.Tensor, num_classes: int = 4) -> torch.Tensor:
    """Packed logits -> packed probabilities of the same shape: softmax over the ``num_classes`` segmentation
    channels, sigmoid of each detection channel (the reference's ``exp(log_softmax)`` and ``Sigmoid``).

    Works on ``(B, C + K, H, W)`` slice batches and ``(B, C + K, S, H, W)`` cubes; the activation of
    :class:`networks.ensemble.ProbabilityEnsemble` for the UNet/UNet++ fusion.
    """
    if out.ndim < 4 or out.shape[1] < num_classes:
        raise ValueError(f"expected (B, {num_classes} + K, ...) network output, got shape {tuple(out.shape)}")
    seg = torch.softmax(out[:, :num_classes].float(), dim=1)
    return torch.cat([seg, torch.sigmoid(out[:, num_classes:].float())], dim=1)


class UNet(SegmentationModel):
    """The reference's plain UNet (2.47 M parameters with the defaults) with the optional detection head.

    A :class:`~networks.segmentation.SegmentationModel`: the plain encoder, the UNet decoder with 4x4 transposed
    convs and Conv3x3 + ReLU without norm, a 1x1 head; :meth:`decode` adds the detection head on the deepest map.

    Args:
        in_channels: input channels (3 for the 2.5D stack of slices i-1, i, i+1).
        num_classes: segmentation classes including background.
        features: channels of the five encoder levels (reference: 64..1024 divided by ``feature_scale`` 4).
        num_det_classes: detection logits from the bottleneck (one per lesion); 0 builds no detection head.
        det_dropout: dropout before the detection head's 1x1 convolution.

    ``forward(x (B, in_channels, H, W))`` with H and W divisible by 16 returns
    ``(B, num_classes + num_det_classes, H, W)`` logits (see :func:`split_seg_det_output`).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 4,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        num_det_classes: int = 3,
        det_dropout: float = 0.5,
    ) -> None:
        f = _check_features(features)
        encoder = _unet_encoder(in_channels, f)
        decoder = UNetDecoder(
            f,
            encoder.reductions,
            decoder_channels=f[3::-1],
            upsample="deconv",
            deconv_kernel_size=4,
            norm=None,
            act=_RELU,
            bias=True,
        )
        super().__init__(encoder, decoder, nn.Conv2d(f[0], num_classes, kernel_size=1))
        self.num_classes = num_classes
        self.det = DetectionHead(f[4], num_det_classes, det_dropout) if num_det_classes > 0 else None
        _init_weights(self)
        rename_keys_on_load(self, UNET_RENAMES)

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Packed segmentation (+ detection from the deepest map) logits from the encoder's ``features``."""
        seg = self.head(self.decoder(features))
        if self.det is None:
            return seg
        return pack_seg_det_output(seg, self.det(features[-1]))


class UNetPlusPlus(nn.Module):
    """The reference's UNet++ ("UNet_Nested", 2.95 M) or, with ``dilated=True``, its dilated UNet++ (5.32 M).

    Args:
        in_channels: input channels (3 for the 2.5D stack of slices i-1, i, i+1).
        num_classes: segmentation classes including background.
        features: channels of the five encoder levels.
        num_det_classes: detection logits from the bottleneck (one per lesion); 0 builds no detection head.
        det_dropout: dropout before the detection head's 1x1 convolution.
        deep_supervision: average the logits of the four heads on X_01..X_04 (reference default); otherwise only
            the X_04 head is built and used.
        dilated: insert the dilated module (dilations 1, 2, 4, 8, summed with its input) after X_40.

    ``forward(x (B, in_channels, H, W))`` with H and W divisible by 16 returns
    ``(B, num_classes + num_det_classes, H, W)`` logits (see :func:`split_seg_det_output`).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 4,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        num_det_classes: int = 3,
        det_dropout: float = 0.5,
        deep_supervision: bool = True,
        dilated: bool = False,
    ) -> None:
        super().__init__()
        f = _check_features(features)
        self.num_classes = num_classes
        self.deep_supervision = deep_supervision
        self.encoder = _unet_encoder(in_channels, f)
        self.dilation = DilatedBottleneck(f[4]) if dilated else None
        # node X_ij (level i, column j) upsamples X_{i+1, j-1} and concatenates X_i0 .. X_i,j-1
        self.up01 = NestedUp(f[1], f[0], 1)
        self.up11 = NestedUp(f[2], f[1], 1)
        self.up21 = NestedUp(f[3], f[2], 1)
        self.up31 = NestedUp(f[4], f[3], 1)
        self.up02 = NestedUp(f[1], f[0], 2)
        self.up12 = NestedUp(f[2], f[1], 2)
        self.up22 = NestedUp(f[3], f[2], 2)
        self.up03 = NestedUp(f[1], f[0], 3)
        self.up13 = NestedUp(f[2], f[1], 3)
        self.up04 = NestedUp(f[1], f[0], 4)
        n_heads = 4 if deep_supervision else 1
        self.heads = nn.ModuleList(nn.Conv2d(f[0], num_classes, kernel_size=1) for _ in range(n_heads))
        self.det = DetectionHead(f[4], num_det_classes, det_dropout) if num_det_classes > 0 else None
        _init_weights(self)
        rename_keys_on_load(self, UNET_PLUS_PLUS_RENAMES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x00, x10, x20, x30, x40 = self.encoder(x)
        if self.dilation is not None:
            x40 = self.dilation(x40)
        x01 = self.up01(x10, [x00])
        x11 = self.up11(x20, [x10])
        x21 = self.up21(x30, [x20])
        x31 = self.up31(x40, [x30])
        x02 = self.up02(x11, [x00, x01])
        x12 = self.up12(x21, [x10, x11])
        x22 = self.up22(x31, [x20, x21])
        x03 = self.up03(x12, [x00, x01, x02])
        x13 = self.up13(x22, [x10, x11, x12])
        x04 = self.up04(x13, [x00, x01, x02, x03])
        if self.deep_supervision:
            nodes = [x01, x02, x03, x04]
            seg = torch.zeros_like(x04[:, :1])
            for i, head in enumerate(self.heads):
                seg = seg + head(nodes[i])
            seg = seg / len(nodes)
        else:
            seg = self.heads[0](x04)
        if self.det is None:
            return seg
        return pack_seg_det_output(seg, self.det(x40))
