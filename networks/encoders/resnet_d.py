"""ResNet-D feature encoder (He et al., "Bag of Tricks for Image Classification", CVPR 2019) with timm's names.

MONAI's ResNet has neither the deep stem nor the average-pool shortcuts and timm cannot be used here, so this
rebuilds timm's ``resnet18d`` / ``resnet34d`` / ``resnet50d`` trunk natively: a deep stem of three 3x3 convs
(widths 32-32-64, first one stride 2, keys ``conv1.0``/``conv1.1``/``conv1.3``/``conv1.4``/``conv1.6``) with
``bn1``, and four ``layer{i}`` stages whose first block downsamples its shortcut with a 2x2 average pool
(``downsample.0``, no weights) before the 1x1 conv (``downsample.1``) and BatchNorm (``downsample.2``). The
classifier ``fc`` is left out.

Feature taps follow the FUGC 2025 7th-place solution (``encode_for_resnet`` in apuomline/FUGC2025_7th_solution
``model/resnet_unet.py``): ``act1`` and the outputs of ``layer1..4``, with the stem max-pool **skipped**, so
``layer1`` stays at H/2: ``[64@H/2, 64@H/2, 128@H/4, 256@H/8, 512@H/16]`` for resnet34d. ``stem_pool=True`` runs
timm's max-pool instead (``[64@H/2, 64@H/4, 128@H/8, 256@H/16, 512@H/32]``). Any input size works (each stride
rounds up).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from networks.checkpoint import unwrap_state_dict
from networks.encoders.base import register_encoder

__all__ = ["RESNET_D_VARIANTS", "BasicBlock", "Bottleneck", "ResNetDEncoder", "resnet_d_encoder"]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers (the first with ``stride``) + shortcut, ReLU after the sum (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = downsample
        self.act2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(x + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (with ``stride``) -> 1x1 expand (x4), BN after each, + shortcut (ResNet-50 and up)."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(channels, channels * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels * self.expansion)
        self.downsample = downsample
        self.act3 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))))
        return self.act3(self.bn3(self.conv3(x)) + shortcut)


_BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}

#: timm's ResNet-D variants (block type and blocks per stage); all have stem width 32 and avg-pool shortcuts.
RESNET_D_VARIANTS: dict[str, dict[str, Any]] = {
    "resnet18d": {"block": "basic", "layers": (2, 2, 2, 2)},
    "resnet34d": {"block": "basic", "layers": (3, 4, 6, 3)},
    "resnet50d": {"block": "bottleneck", "layers": (3, 4, 6, 3)},
}


def _avg_down_shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """ResNet-D shortcut: 2x2 average pool (ceil mode, padding not counted) when striding, then 1x1 conv + BN.

    Pooling before a stride-1 conv keeps every input position in the shortcut, where ResNet-B's stride-2 1x1
    conv drops three quarters of them.
    """
    pool: nn.Module = (
        nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
    )
    return nn.Sequential(pool, nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))


class ResNetDEncoder(nn.Module):
    """ResNet-D trunk returning ``[act1, layer1, layer2, layer3, layer4]`` (see the module docstring for strides).

    Same layers and names as timm ``ResNet(stem_type="deep", stem_width=32, avg_down=True)`` minus ``fc``, so
    the resnet34d encoder (3 input channels) has 21,303,904 parameters and loads timm's ``resnet34d`` weights by
    their own key names (:meth:`remap_pretrained_keys`).

    Args:
        in_channels: input channels (pretrained RGB stems are adapted on load).
        block: ``"basic"`` (ResNet-18/34) or ``"bottleneck"`` (ResNet-50 and up).
        layers: blocks per stage.
        widths: base width of each stage (a bottleneck stage outputs four times it).
        stem_width: width of the first two stem convs; the stem outputs twice it.
        stem_pool: run timm's 3x3 stride-2 max-pool before ``layer1``; the FUGC solution skips it (``False``).
    """

    spatial_dims = 2

    def __init__(
        self,
        in_channels: int = 3,
        block: str = "basic",
        layers: Sequence[int] = (3, 4, 6, 3),
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_width: int = 32,
        stem_pool: bool = False,
    ) -> None:
        super().__init__()
        if block not in _BLOCKS:
            raise ValueError(f"unknown ResNet block {block!r}; choose one of {sorted(_BLOCKS)}")
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError(f"ResNet has four stages: got layers {tuple(layers)} and widths {tuple(widths)}")
        block_type = _BLOCKS[block]
        self.in_channels = in_channels
        stem_channels = stem_width * 2
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, stem_width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
            nn.Conv2d(stem_width, stem_width, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
            nn.Conv2d(stem_width, stem_channels, 3, padding=1, bias=False),
        )
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1) if stem_pool else nn.Identity()

        stages = []
        previous = stem_channels
        for i, (depth, width) in enumerate(zip(layers, widths)):
            stride = 1 if i == 0 else 2
            out_channels = width * block_type.expansion
            needs_projection = stride > 1 or previous != out_channels
            shortcut = _avg_down_shortcut(previous, out_channels, stride) if needs_projection else None
            blocks = [block_type(previous, width, stride, shortcut)]
            blocks += [block_type(out_channels, width) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            previous = out_channels
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

        first = 4 if stem_pool else 2
        self.out_channels: tuple[int, ...] = (stem_channels,) + tuple(w * block_type.expansion for w in widths)
        self.reductions: tuple[tuple[int, ...], ...] = ((2, 2),) + tuple((first * 2**i,) * 2 for i in range(4))
        self._init_weights()

    def _init_weights(self) -> None:
        """timm's ResNet initialisation: He-normal (fan-out) convs; the last BN of each residual branch starts at
        zero so every block starts as the identity."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)
            elif isinstance(module, Bottleneck):
                nn.init.zeros_(module.bn3.weight)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self.act1(self.bn1(self.conv1(x)))
        x1 = self.layer1(self.maxpool(stem))
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        return [stem, x1, x2, x3, self.layer4(x3)]

    def remap_pretrained_keys(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """timm ``resnet*d`` key names (also wrapped under ``"state_dict"``/``"model"``, or saved from a timm
        ``features_only`` model, which has the same names) -> this encoder's: the same names, ``fc.*`` dropped."""
        return {k: v for k, v in unwrap_state_dict(state).items() if not k.startswith("fc.")}


@register_encoder("resnet_d")
def resnet_d_encoder(variant: str = "resnet34d", in_channels: int = 3, **kwargs: Any) -> ResNetDEncoder:
    """Build a :class:`ResNetDEncoder` of a timm variant (see :data:`RESNET_D_VARIANTS`).

    Args:
        variant: ``"resnet18d"``, ``"resnet34d"`` or ``"resnet50d"``.
        in_channels: input channels.
        kwargs: other :class:`ResNetDEncoder` arguments (``widths``, ``stem_width``, ``layers`` for narrow
            test/demo versions, ``stem_pool``); they override the variant's.
    """
    if variant not in RESNET_D_VARIANTS:
        raise ValueError(f"unknown ResNet-D variant {variant!r}; choose one of {sorted(RESNET_D_VARIANTS)}")
    return ResNetDEncoder(in_channels=in_channels, **{**RESNET_D_VARIANTS[variant], **kwargs})
