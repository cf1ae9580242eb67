"""UNet decoder for 2-D and 3-D encoders: upsample, concatenate the skip, convolve; N-D and with pluggable pieces.

The upsampling factor between consecutive maps comes from the encoder's ``reductions`` per axis, so anisotropic
video backbones (a first map at stride (1, 2, 2)) fit as well as 2-D ones. The pieces cover the UNet decoders of
the project's reference solutions:

* MAGNET (CSV 2026, 4th place): bilinear x2 (``align_corners=False``), the upsampled map resized to the skip
  when the sizes differ, ``[upsampled, skip]`` concatenated, two Conv3x3 + BN + ReLU without bias
  (``block="two_conv"``). MONAI's ``UpCat`` pads instead of resizing and puts the skip first, hence this module.
* RSNA 2022 cervical spine segmentation (selimsef/rsna_cervical_fracture, ``zoo/unet3d.py``): nearest
  upsampling, then a (2+1)-D pair (1x3x3 conv + ReLU, 3x1x1 conv + ReLU, no norm) before the concatenation
  (``conv_before_concat=True``) and another after it (``block="conv2plus1d"``); its last block without a skip is
  an :class:`UpsampleConv`.
* FUGC 2025 7th place (apuomline/FUGC2025_7th_solution): a 1x1 conv of the deeper map to the skip width before
  the upsampling (``project_to_skip=True``), bilinear with ``align_corners=True``, two Conv3x3 + BN + LeakyReLU;
  the last stage upsamples both inputs to full resolution (``output_reduction=(1, 1)``).
* AI Challenger 2018 retinal edema 4th place (ShawnBIT/AI-Challenger-Retinal-Edema-Segmentation, ``unetUp``):
  a 4x4 stride-2 transposed conv to the stage width (``upsample="deconv"``, ``deconv_kernel_size=4``), then two
  Conv3x3 + ReLU with bias and no norm.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution, UpSample
from monai.networks.nets.basic_unet import TwoConv

from networks.decoders.base import DecoderLayout, upsampling_factors

__all__ = ["CONV_BLOCKS", "UNetDecoder", "UNetUpBlock", "UpsampleConv", "conv_block"]

#: conv blocks by name: two 3^n convs (MONAI ``TwoConv``), one conv, or a (2+1)-D pair (3-D only)
CONV_BLOCKS = ("two_conv", "conv", "conv2plus1d")
_INTERPOLATION = {"nearest": (2, 3), "bilinear": (2,), "trilinear": (3,)}


def conv_block(
    block: str,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    norm: str | tuple | None = "batch",
    act: str | tuple | None = "relu",
    bias: bool = False,
    kernel_size: int = 3,
) -> nn.Module:
    """A convolution block of the decoders, each conv followed by ``norm`` (``None``: none) and ``act``.

    ``"two_conv"``: two ``kernel_size`` convs (MONAI ``TwoConv``, kernel 3); ``"conv"``: one conv;
    ``"conv2plus1d"``: a ``(1, k, k)`` conv then a ``(k, 1, 1)`` conv (3-D only), which factorises a 3-D conv into
    an in-plane and a through-plane one (the RSNA 2022 spine decoder, whose README reports NaNs under AMP with
    full 3-D convs there).
    """
    if block == "two_conv":
        if kernel_size != 3:
            raise ValueError(f"block 'two_conv' has 3^n kernels (MONAI TwoConv), got kernel_size={kernel_size}")
        return TwoConv(spatial_dims, in_channels, out_channels, act=act, norm=norm, bias=bias)
    if block == "conv":
        return Convolution(
            spatial_dims, in_channels, out_channels, kernel_size=kernel_size, act=act, norm=norm, bias=bias
        )
    if block == "conv2plus1d":
        if spatial_dims != 3:
            raise ValueError(f"block 'conv2plus1d' is 3-D only, got spatial_dims={spatial_dims}")
        k = kernel_size
        return nn.Sequential(
            Convolution(3, in_channels, out_channels, kernel_size=(1, k, k), act=act, norm=norm, bias=bias),
            Convolution(3, out_channels, out_channels, kernel_size=(k, 1, 1), act=act, norm=norm, bias=bias),
        )
    raise ValueError(f"unknown conv block {block!r}; choose one of {CONV_BLOCKS}")


def _interpolation(mode: str, spatial_dims: int, align_corners: bool) -> Optional[bool]:
    """Check ``mode`` for ``spatial_dims``; the ``align_corners`` to pass (``None`` for nearest, as torch wants)."""
    if mode == "deconv":
        return None
    if mode not in _INTERPOLATION:
        raise ValueError(f"unknown upsampling mode {mode!r}; choose one of {sorted(_INTERPOLATION) + ['deconv']}")
    if spatial_dims not in _INTERPOLATION[mode]:
        raise ValueError(f"upsampling mode {mode!r} does not apply to spatial_dims={spatial_dims}")
    return None if mode == "nearest" else align_corners


class UNetUpBlock(nn.Module):
    """One decoder stage: [1x1 projection] -> upsample -> [conv block] -> concat ``[x, skip]`` -> conv block.

    ``upsample="deconv"`` is a transposed conv (``self.up``, MONAI ``UpSample``) to ``out_channels``; the
    interpolation modes have no parameters.

    The upsampled map is resized to the skip's size when they differ (inputs not divisible by the encoder's
    total stride), as MAGNET does. Under tracing (TorchScript, ONNX export) the resize is always recorded, so that
    a graph traced on one input size runs on any other (at equal sizes the resize is the identity).

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the deeper input.
        skip_channels: channels of the skip connection.
        out_channels: channels of the output.
        scale: upsampling factor of the deeper input per axis.
        skip_scale: upsampling factor of the skip per axis (not 1 only where the stage outputs a finer map than
            the skip, e.g. FUGC's last stage).
        upsample: ``"nearest"``, ``"bilinear"`` (2-D), ``"trilinear"`` (3-D) or ``"deconv"``.
        align_corners: of the (bi/tri)linear interpolation.
        deconv_kernel_size: kernel of the transposed conv (default: the scale, i.e. no overlap).
        project_to_skip: 1x1 conv (with bias) of the deeper input to ``skip_channels`` before upsampling.
        conv_before_concat: a conv block ``-> out_channels`` on the upsampled map before the concatenation.
        block, norm, act, bias, kernel_size: the conv blocks, see :func:`conv_block`.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        scale: Sequence[int],
        skip_scale: Sequence[int] | None = None,
        upsample: str = "bilinear",
        align_corners: bool = False,
        deconv_kernel_size: int | None = None,
        project_to_skip: bool = False,
        conv_before_concat: bool = False,
        block: str = "two_conv",
        norm: str | tuple | None = "batch",
        act: str | tuple | None = "relu",
        bias: bool = False,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        if upsample == "deconv" and skip_scale is not None and any(s != 1 for s in skip_scale):
            raise ValueError("upsample='deconv' cannot upsample the skip; give an output_reduction of a skip")
        self.mode = "nearest" if upsample == "deconv" else upsample
        self.align_corners = _interpolation(upsample, spatial_dims, align_corners)
        self.scale: list[float] = [float(s) for s in scale]
        skip_scale = [1] * spatial_dims if skip_scale is None else list(skip_scale)
        self.skip_scale: list[float] = [float(s) for s in skip_scale]
        self.upsample_skip = any(s != 1 for s in skip_scale)
        width = in_channels
        self.project: Optional[nn.Module] = None
        if project_to_skip:
            self.project = Convolution(
                spatial_dims, in_channels, skip_channels, kernel_size=1, conv_only=True, bias=True
            )
            width = skip_channels
        self.up: Optional[nn.Module] = None
        if upsample == "deconv":
            self.up = UpSample(
                spatial_dims,
                width,
                out_channels,
                scale_factor=tuple(scale),
                kernel_size=deconv_kernel_size,
                mode="deconv",
            )
            width = out_channels
        self.up_conv: Optional[nn.Module] = None
        if conv_before_concat:
            self.up_conv = conv_block(block, spatial_dims, width, out_channels, norm, act, bias, kernel_size)
            width = out_channels
        self.convs = conv_block(block, spatial_dims, width + skip_channels, out_channels, norm, act, bias, kernel_size)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.project is not None:
            x = self.project(x)
        if self.up is not None:
            x = self.up(x)
        else:
            x = F.interpolate(x, scale_factor=self.scale, mode=self.mode, align_corners=self.align_corners)
        if self.upsample_skip:
            skip = F.interpolate(skip, scale_factor=self.skip_scale, mode=self.mode, align_corners=self.align_corners)
        if torch.jit.is_tracing() or x.shape[2:] != skip.shape[2:]:
            x = F.interpolate(x, size=skip.shape[2:], mode=self.mode, align_corners=self.align_corners)
        if self.up_conv is not None:
            x = self.up_conv(x)
        return self.convs(torch.cat([x, skip], dim=1))


class UNetDecoder(DecoderLayout):
    """UNet decoder over encoder maps ordered shallow to deep: one :class:`UNetUpBlock` per skip, deepest first.

    With encoder channels ``(c0, ..., cN)`` and ``decoder_channels`` ``(d1, ..., dN)`` (deepest stage first) the
    blocks are ``cN (+ c{N-1}) -> d1``, ``d1 (+ c{N-2}) -> d2``, ..., ``d{N-1} (+ c0) -> dN``; e.g. MAGNET's skips
    ``(80, 80, 160, 320, 640)`` with ``(320, 160, 80, 40)`` give 960->320, 480->160, 240->80, 160->40. The output
    has ``decoder_channels[-1]`` channels (``self.out_channels``) at stride ``self.output_reduction``: that of the
    shallowest map unless ``output_reduction`` asks for a finer one. No head: the segmentation model adds it.

    Args:
        encoder_channels: ``encoder.out_channels``.
        encoder_reductions: ``encoder.reductions``; consecutive strides must be integer multiples per axis.
        decoder_channels: output width of each stage, deepest stage first (``len(encoder_channels) - 1`` values).
        spatial_dims: 2 or 3.
        output_reduction: stride of the output per axis (e.g. ``(1, 1)``: full resolution); default the
            shallowest map's. The last stage then upsamples the skip too.
        upsample, align_corners, deconv_kernel_size, project_to_skip, conv_before_concat, block, norm, act, bias,
            kernel_size: of every stage, see :class:`UNetUpBlock`.

    Raises:
        ValueError: too few maps, a ``decoder_channels`` of the wrong length, or strides that are not integer
            multiples of one another (the message names them).
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        encoder_reductions: Sequence[Sequence[int]],
        decoder_channels: Sequence[int],
        spatial_dims: int = 2,
        output_reduction: Sequence[int] | None = None,
        upsample: str = "bilinear",
        align_corners: bool = False,
        deconv_kernel_size: int | None = None,
        project_to_skip: bool = False,
        conv_before_concat: bool = False,
        block: str = "two_conv",
        norm: str | tuple | None = "batch",
        act: str | tuple | None = "relu",
        bias: bool = False,
        kernel_size: int = 3,
    ) -> None:
        super().__init__(encoder_channels, encoder_reductions, spatial_dims)
        n = len(self.encoder_channels)
        if n < 2:
            raise ValueError(f"UNetDecoder needs at least two encoder maps, got channels {tuple(encoder_channels)}")
        if len(decoder_channels) != n - 1:
            raise ValueError(
                f"UNetDecoder: expected {n - 1} decoder_channels (one per skip) for {n} encoder maps, "
                f"got {tuple(decoder_channels)}"
            )
        reductions = self.encoder_reductions
        blocks = []
        coarse_channels, coarse_stride = self.encoder_channels[-1], reductions[-1]
        for stage, width in enumerate(decoder_channels):
            level = n - 2 - stage
            target = tuple(output_reduction) if level == 0 and output_reduction is not None else reductions[level]
            what = f"UNetDecoder stage {stage} (encoder map {level})"
            blocks.append(
                UNetUpBlock(
                    spatial_dims,
                    coarse_channels,
                    self.encoder_channels[level],
                    int(width),
                    scale=upsampling_factors(coarse_stride, target, what),
                    skip_scale=upsampling_factors(reductions[level], target, what),
                    upsample=upsample,
                    align_corners=align_corners,
                    deconv_kernel_size=deconv_kernel_size,
                    project_to_skip=project_to_skip,
                    conv_before_concat=conv_before_concat,
                    block=block,
                    norm=norm,
                    act=act,
                    bias=bias,
                    kernel_size=kernel_size,
                )
            )
            coarse_channels, coarse_stride = int(width), target
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = coarse_channels
        self.output_reduction: tuple[int, ...] = tuple(coarse_stride)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Decode ``features`` (shallow to deep, as many as ``encoder_channels``) into one map."""
        self.check_features(features)
        x = features[-1]
        n = len(features)
        for i, block in enumerate(self.blocks):
            x = block(x, features[n - 2 - i])
        return x


class UpsampleConv(nn.Module):
    """Upsample by ``scale_factor`` per axis, then a conv block: a decoder stage without a skip.

    The RSNA 2022 spine decoder ends with one: nearest (1, 2, 2) upsampling + Conv3x3x3 40->32 + SiLU
    (``block="conv"``, ``norm=None``, ``act="swish"``: MONAI's Swish with alpha 1 is SiLU, ``bias=True``).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        scale_factor: Sequence[int],
        upsample: str = "nearest",
        align_corners: bool = False,
        block: str = "conv",
        norm: str | tuple | None = None,
        act: str | tuple | None = "swish",
        bias: bool = True,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        self.mode = upsample
        self.align_corners = _interpolation(upsample, spatial_dims, align_corners)
        self.scale: list[float] = [float(s) for s in scale_factor]
        self.conv = conv_block(block, spatial_dims, in_channels, out_channels, norm, act, bias, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=self.scale, mode=self.mode, align_corners=self.align_corners)
        return self.conv(x)
