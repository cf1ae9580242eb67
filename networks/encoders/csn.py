"""Channel-Separated Networks (CSN; Tran et al., ICCV 2019) as 3-D feature encoders, with mmaction2's names.

The RSNA 2022 cervical spine fracture solution (selimsef/rsna_cervical_fracture, 4th private / 1st public) uses
mmaction2's ``ResNet3dCSN`` both as the encoder of its 3-D segmentation UNet (ir-CSN-50) and as the trunk of its
per-vertebra classifiers (ir-CSN-152 and ip-CSN-152), initialised from mmaction2's IG65M + Kinetics-400
checkpoints. mmaction2 cannot be used here, so this rebuilds ``ResNet3dCSN`` natively:

- stem ``conv1``: conv (3, 7, 7) stride (1, 2, 2) + BN + ReLU, then ``maxpool`` (1, 3, 3) stride (1, 2, 2);
- stages ``layer1..layer4`` of bottlenecks ``conv1`` 1x1x1 -> ``conv2`` depthwise 3x3x3 -> ``conv3`` 1x1x1
  (x4 channels); "ip" (interaction-preserved) puts a 1x1x1 conv + BN (no activation) before the depthwise conv,
  "ir" (interaction-reduced) does not. A stage's stride sits in its first block's depthwise conv and in the
  1x1x1 ``downsample`` shortcut; spatial strides (1, 2, 2, 2), temporal strides (1, 2, 2, 2);
- BatchNorm eps 1e-3 (PyTorch's default momentum 0.1, as mmaction2's ``BN3d`` config), no biases in convs.

The first axis of the (B, C, D, H, W) input is what mmaction2 calls temporal; for CT it is the slice axis, which
the stem and the first stage keep at full resolution.

Module names are mmaction2's (each conv + norm pair is an mmcv ``ConvModule`` with children ``conv`` and ``bn``;
mmaction2 wraps a CSN block's ``conv2`` in an ``nn.Sequential``), so a recognizer checkpoint loads by stripping
its ``backbone.`` prefix and dropping ``cls_head.*`` (:meth:`CSNEncoder.remap_pretrained_keys`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from networks.encoders.base import register_encoder

__all__ = ["CSN_VARIANTS", "CSNBottleneck", "CSNEncoder", "ConvModule3d", "csn_encoder"]

#: mmaction2's CSN variants used by the cervical spine solution: blocks per stage and bottleneck mode.
CSN_VARIANTS: dict[str, dict[str, Any]] = {
    "ir_csn_50": {"stage_blocks": (3, 4, 6, 3), "bottleneck_mode": "ir"},
    "ir_csn_152": {"stage_blocks": (3, 8, 36, 3), "bottleneck_mode": "ir"},
    "ip_csn_152": {"stage_blocks": (3, 8, 36, 3), "bottleneck_mode": "ip"},
}

#: BatchNorm settings of mmaction2's ``ResNet3dCSN`` (``norm_cfg=dict(type="BN3d", eps=1e-3)``).
BN_EPS = 1e-3
BN_MOMENTUM = 0.1


class ConvModule3d(nn.Module):
    """Conv3d (no bias) -> BatchNorm3d -> optional ReLU, named ``conv``/``bn`` like mmcv's ``ConvModule``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: kernel size per axis (D, H, W).
        stride: stride per axis.
        padding: zero padding per axis.
        groups: convolution groups (``out_channels`` for a depthwise conv).
        activation: apply ReLU after the norm.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int] | int,
        stride: Sequence[int] | int = 1,
        padding: Sequence[int] | int = 0,
        groups: int = 1,
        activation: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv3d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm3d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.activate: nn.Module = nn.ReLU(inplace=True) if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


class CSNBottleneck(nn.Module):
    """Channel-separated bottleneck: 1x1x1 -> [ip: 1x1x1 ->] depthwise 3x3x3 (strided) -> 1x1x1, residual, ReLU.

    Args:
        in_channels: input channels.
        planes: bottleneck width; the block outputs ``4 * planes`` channels.
        stride: (temporal, spatial, spatial) stride of the depthwise conv and of the shortcut.
        bottleneck_mode: ``"ir"`` (interaction-reduced) or ``"ip"`` (interaction-preserved, extra 1x1x1 conv).
    """

    expansion = 4

    def __init__(
        self, in_channels: int, planes: int, stride: Sequence[int] = (1, 1, 1), bottleneck_mode: str = "ir"
    ) -> None:
        super().__init__()
        if bottleneck_mode not in ("ir", "ip"):
            raise ValueError(f"bottleneck_mode must be 'ir' or 'ip', got {bottleneck_mode!r}")
        out_channels = planes * self.expansion
        stride = tuple(stride)
        self.conv1 = ConvModule3d(in_channels, planes, 1)
        separated = [ConvModule3d(planes, planes, 1, activation=False)] if bottleneck_mode == "ip" else []
        separated.append(ConvModule3d(planes, planes, 3, stride=stride, padding=1, groups=planes))
        self.conv2 = nn.Sequential(*separated)
        self.conv3 = ConvModule3d(planes, out_channels, 1, activation=False)
        # mmaction2 gives the first block of a stage a projection shortcut when it strides or widens
        self.downsample: ConvModule3d | None = None
        if any(s != 1 for s in stride) or in_channels != out_channels:
            self.downsample = ConvModule3d(in_channels, out_channels, 1, stride=stride, activation=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


class CSNEncoder(nn.Module):
    """mmaction2 ``ResNet3dCSN`` trunk returning the stem output and the four stage outputs, shallow to deep.

    The maps are the ones the cervical spine UNet decodes from (its ``ResNet3dCSN.forward`` returns the stem's
    ``conv1`` output before the max pool, then ``layer1..layer4``; ``with_pool2=False``). With the default
    strides, for an input (B, 3, D, H, W): ``64@(D, H/2, W/2)``, ``256@(D, H/4, W/4)``, ``512@(D/2, H/8, W/8)``,
    ``1024@(D/4, H/16, W/16)``, ``2048@(D/8, H/32, W/32)``; ``reductions`` gives these strides per axis.
    ir-CSN-50 has 12,311,552 parameters, ir-CSN-152 28,883,968, ip-CSN-152 32,196,992 (mmaction2's backbones).

    Args:
        in_channels: input channels (3 for mmaction2's pretrained weights; the bundle repeats the 1-channel CT).
        stage_blocks: bottleneck blocks of each of the four stages ((3, 4, 6, 3) for depth 50, (3, 8, 36, 3) for
            152).
        bottleneck_mode: ``"ir"`` or ``"ip"`` (see :class:`CSNBottleneck`).
        base_channels: stem width; stage ``i`` has bottleneck width ``base_channels * 2**i`` and outputs four
            times that (narrow values give test and CPU-demo versions of the same network).
        spatial_strides: in-plane stride of each stage.
        temporal_strides: slice-axis stride of each stage.
    """

    spatial_dims = 3
    num_stages = 4

    def __init__(
        self,
        in_channels: int = 3,
        stage_blocks: Sequence[int] = (3, 4, 6, 3),
        bottleneck_mode: str = "ir",
        base_channels: int = 64,
        spatial_strides: Sequence[int] = (1, 2, 2, 2),
        temporal_strides: Sequence[int] = (1, 2, 2, 2),
    ) -> None:
        super().__init__()
        # four stages named in forward (not looked up by name) so that the encoder scripts with TorchScript, as
        # the Model Zoo's ckpt_export check does; every mmaction2 CSN variant has four
        if not len(stage_blocks) == len(spatial_strides) == len(temporal_strides) == self.num_stages:
            raise ValueError(
                f"stage_blocks {tuple(stage_blocks)}, spatial_strides {tuple(spatial_strides)} and temporal_strides "
                f"{tuple(temporal_strides)} must be of equal length {self.num_stages} (mmaction2's layer1..layer4)"
            )
        self.in_channels = in_channels
        self.conv1 = ConvModule3d(in_channels, base_channels, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3))
        self.maxpool = nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        channels = [base_channels]
        reductions = [(1, 2, 2)]
        reduction = (1, 4, 4)  # after the max pool
        inplanes = base_channels
        for i, (blocks, s, t) in enumerate(zip(stage_blocks, spatial_strides, temporal_strides)):
            planes = base_channels * 2**i
            layer = nn.Sequential(
                *[
                    CSNBottleneck(
                        inplanes if j == 0 else planes * CSNBottleneck.expansion,
                        planes,
                        stride=(t, s, s) if j == 0 else (1, 1, 1),
                        bottleneck_mode=bottleneck_mode,
                    )
                    for j in range(blocks)
                ]
            )
            inplanes = planes * CSNBottleneck.expansion
            self.add_module(f"layer{i + 1}", layer)
            reduction = (reduction[0] * t, reduction[1] * s, reduction[2] * s)
            channels.append(inplanes)
            reductions.append(reduction)
        self.out_channels: tuple[int, ...] = tuple(channels)
        self.reductions: tuple[tuple[int, ...], ...] = tuple(reductions)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"CSNEncoder expects a (B, {self.in_channels}, D, H, W) volume, got shape {list(x.shape)} "
                "(mmaction2's weights take 3 channels: repeat a 1-channel CT 3 times)"
            )
        x = self.conv1(x)
        features = [x]
        x = self.layer1(self.maxpool(x))
        features.append(x)
        x = self.layer2(x)
        features.append(x)
        x = self.layer3(x)
        features.append(x)
        features.append(self.layer4(x))
        return features

    def remap_pretrained_keys(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """mmaction2 names -> own names: strip a recognizer's ``backbone.`` prefix and drop its ``cls_head.*``.

        Plain backbone state dicts (no prefix) pass unchanged. The encoder's first key is the stem conv
        ``conv1.conv.weight``, where :func:`networks.checkpoint.load_pretrained_encoder` looks for the input conv.
        """
        return {k.removeprefix("backbone."): v for k, v in state.items() if not k.startswith("cls_head.")}


@register_encoder("csn")
def csn_encoder(variant: str = "ir_csn_50", in_channels: int = 3, **kwargs: Any) -> CSNEncoder:
    """Build a :class:`CSNEncoder` of an mmaction2 variant (see :data:`CSN_VARIANTS`).

    Args:
        variant: ``"ir_csn_50"`` (the segmentation encoder), ``"ir_csn_152"`` or ``"ip_csn_152"`` (the
            classifier trunks).
        in_channels: input channels.
        kwargs: other :class:`CSNEncoder` arguments (``base_channels``, ``stage_blocks``, strides); they override
            the variant, e.g. ``base_channels=8, stage_blocks=(1, 1, 1, 1)`` for a tiny test version.
    """
    if variant not in CSN_VARIANTS:
        raise ValueError(f"unknown CSN variant {variant!r}; choose one of {sorted(CSN_VARIANTS)}")
    return CSNEncoder(in_channels=in_channels, **{**CSN_VARIANTS[variant], **kwargs})
