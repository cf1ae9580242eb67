"""ConvNeXt feature encoder (Liu et al., CVPR 2022) with timm's module names, in native PyTorch.

MONAI has no ConvNeXt and timm cannot be used here, so this rebuilds the timm ``ConvNeXt`` trunk (patch stem,
four stages, no classifier head) as a multi-scale encoder. Module names follow timm exactly (``stem.0``,
``stem.1``, ``stages.{i}.downsample.{0,1}``, ``stages.{i}.blocks.{j}.{conv_dw,norm,mlp.fc1,mlp.fc2,gamma}``), so
the ``state_dict`` of ``timm.create_model("convnext_nano")`` loads with its own key names through
:func:`networks.encoders.load_encoder_weights` (the ``head.*`` keys are dropped, the stem is adapted to the input
channels). Registered as the encoder family ``"convnext"`` (variants ``atto`` .. ``base``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers import DropPath

from networks.encoders.base import register_encoder

__all__ = [
    "CONVNEXT_VARIANTS",
    "ConvMlp",
    "ConvNeXtBlock",
    "ConvNeXtEncoder",
    "ConvNeXtStage",
    "LayerNorm2d",
    "convnext_encoder",
]

#: timm's ConvNeXt variants (depths, dims, conv_mlp), by the name after ``convnext_``.
CONVNEXT_VARIANTS: dict[str, dict[str, Any]] = {
    "atto": {"depths": (2, 2, 6, 2), "dims": (40, 80, 160, 320), "conv_mlp": True},
    "femto": {"depths": (2, 2, 6, 2), "dims": (48, 96, 192, 384), "conv_mlp": True},
    "pico": {"depths": (2, 2, 6, 2), "dims": (64, 128, 256, 512), "conv_mlp": True},
    "nano": {"depths": (2, 2, 8, 2), "dims": (80, 160, 320, 640), "conv_mlp": True},
    "tiny": {"depths": (3, 3, 9, 3), "dims": (96, 192, 384, 768), "conv_mlp": False},
    "small": {"depths": (3, 3, 27, 3), "dims": (96, 192, 384, 768), "conv_mlp": False},
    "base": {"depths": (3, 3, 27, 3), "dims": (128, 256, 512, 1024), "conv_mlp": False},
}


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (timm ``LayerNorm2d``; eps 1e-6 as in ConvNeXt)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__(num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvMlp(nn.Module):
    """Inverted-bottleneck MLP ``fc1 -> GELU -> fc2`` (timm ``Mlp``).

    With ``use_conv`` the layers are 1x1 convolutions on NCHW tensors, otherwise ``nn.Linear`` on NHWC tensors;
    both are named ``fc1``/``fc2`` as in timm.
    """

    def __init__(self, channels: int, hidden_channels: int, use_conv: bool = True) -> None:
        super().__init__()
        if use_conv:
            self.fc1: nn.Module = nn.Conv2d(channels, hidden_channels, kernel_size=1)
            self.fc2: nn.Module = nn.Conv2d(hidden_channels, channels, kernel_size=1)
        else:
            self.fc1 = nn.Linear(channels, hidden_channels)
            self.fc2 = nn.Linear(hidden_channels, channels)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7 -> LayerNorm -> MLP (x4) -> layer scale -> drop path -> residual.

    Args:
        channels: block width.
        mlp_ratio: MLP expansion ratio.
        kernel_size: depthwise kernel size.
        conv_mlp: 1x1-conv MLP with a channels-first norm (timm ``conv_mlp=True``) instead of Linear layers
            applied channels-last.
        ls_init_value: initial layer-scale value; ``None`` disables layer scale (no ``gamma`` parameter).
        drop_path: stochastic depth probability.
    """

    def __init__(
        self,
        channels: int,
        mlp_ratio: float = 4.0,
        kernel_size: int = 7,
        conv_mlp: bool = True,
        ls_init_value: float | None = 1e-6,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.use_conv_mlp = conv_mlp
        self.conv_dw = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        self.norm: nn.Module = LayerNorm2d(channels) if conv_mlp else nn.LayerNorm(channels, eps=1e-6)
        self.mlp = ConvMlp(channels, int(mlp_ratio * channels), use_conv=conv_mlp)
        self.gamma = nn.Parameter(torch.full((channels,), ls_init_value)) if ls_init_value is not None else None
        self.drop_path: nn.Module = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_dw(x)
        if self.use_conv_mlp:
            x = self.mlp(self.norm(x))
        else:
            x = self.mlp(self.norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        if self.gamma is not None:
            x = x * self.gamma.reshape(1, -1, 1, 1)
        return self.drop_path(x) + shortcut


class ConvNeXtStage(nn.Module):
    """One resolution stage: optional downsample (LayerNorm2d + 2x2 stride-2 conv) then ``depth`` blocks.

    Args:
        in_channels: channels entering the stage.
        out_channels: stage width.
        depth: number of blocks.
        stride: 2 to halve the resolution (stages 2-4), 1 for the first stage.
        drop_path_rates: one stochastic-depth rate per block (zeros when ``None``).
        conv_mlp, ls_init_value, kernel_size: passed to each :class:`ConvNeXtBlock`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        depth: int,
        stride: int = 2,
        drop_path_rates: Sequence[float] | None = None,
        conv_mlp: bool = True,
        ls_init_value: float | None = 1e-6,
        kernel_size: int = 7,
    ) -> None:
        super().__init__()
        if in_channels != out_channels or stride > 1:
            self.downsample: nn.Module = nn.Sequential(
                LayerNorm2d(in_channels),
                nn.Conv2d(in_channels, out_channels, kernel_size=stride, stride=stride),
            )
        else:
            self.downsample = nn.Identity()
        rates = list(drop_path_rates) if drop_path_rates is not None else [0.0] * depth
        self.blocks = nn.Sequential(
            *[
                ConvNeXtBlock(
                    out_channels,
                    kernel_size=kernel_size,
                    conv_mlp=conv_mlp,
                    ls_init_value=ls_init_value,
                    drop_path=rates[i],
                )
                for i in range(depth)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class ConvNeXtEncoder(nn.Module):
    """ConvNeXt trunk returning the four stage outputs ``[dims[0]@H/4, dims[1]@H/8, dims[2]@H/16, dims[3]@H/32]``.

    Same layers and names as timm ``ConvNeXt`` with the default ``patch`` stem (4x4 stride-4 conv + LayerNorm2d)
    minus the classifier head, so the nano encoder (3 input channels) has 14,951,280 parameters. Follows the
    encoder contract of :mod:`networks.encoders.base` (``spatial_dims`` 2, ``reductions`` 4, 8, 16, 32 with the
    default patch size).

    Args:
        in_channels: input channels (any number; pretrained stems are adapted by
            :func:`networks.encoders.load_encoder_weights`).
        depths: blocks per stage.
        dims: widths per stage.
        conv_mlp: 1x1-conv MLP + channels-first LayerNorm (timm atto..nano) instead of Linear MLP (tiny and up).
        drop_path_rate: stochastic-depth rate, ramped linearly over all blocks as in timm.
        ls_init_value: initial layer-scale value, ``None`` for no layer scale.
        kernel_size: depthwise kernel size.
        patch_size: stem patch size (stride of the first feature map).
    """

    def __init__(
        self,
        in_channels: int = 3,
        depths: Sequence[int] = (2, 2, 8, 2),
        dims: Sequence[int] = (80, 160, 320, 640),
        conv_mlp: bool = True,
        drop_path_rate: float = 0.0,
        ls_init_value: float | None = 1e-6,
        kernel_size: int = 7,
        patch_size: int = 4,
    ) -> None:
        super().__init__()
        if len(depths) != len(dims) or len(dims) == 0:
            raise ValueError(f"depths {tuple(depths)} and dims {tuple(dims)} must be non-empty and of equal length")
        self.in_channels = in_channels
        self.spatial_dims = 2
        self.out_channels: tuple[int, ...] = tuple(int(d) for d in dims)
        self.reductions: tuple[tuple[int, ...], ...] = tuple(
            (patch_size * 2**i,) * 2 for i in range(len(dims))
        )
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, dims[0], kernel_size=patch_size, stride=patch_size),
            LayerNorm2d(dims[0]),
        )
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        stages = []
        start, prev = 0, dims[0]
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            stages.append(
                ConvNeXtStage(
                    prev,
                    dim,
                    depth=depth,
                    stride=1 if i == 0 else 2,
                    drop_path_rates=rates[start : start + depth],
                    conv_mlp=conv_mlp,
                    ls_init_value=ls_init_value,
                    kernel_size=kernel_size,
                )
            )
            start, prev = start + depth, dim
        self.stages = nn.Sequential(*stages)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features: list[torch.Tensor] = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features

    def remap_pretrained_keys(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """timm names are this module's names: only the classifier (``head.*``, ``norm_pre.*``) is dropped."""
        return {k: v for k, v in state.items() if not k.startswith(("head.", "norm_pre."))}


def _init_weights(module: nn.Module) -> None:
    """timm's ConvNeXt initialisation: truncated normal (std 0.02) weights, zero biases."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


@register_encoder("convnext")
def convnext_encoder(variant: str = "nano", in_channels: int = 3, **kwargs: Any) -> ConvNeXtEncoder:
    """Build a :class:`ConvNeXtEncoder` of a timm variant (see :data:`CONVNEXT_VARIANTS`).

    Args:
        variant: ``"atto"``, ``"femto"``, ``"pico"``, ``"nano"``, ``"tiny"``, ``"small"`` or ``"base"``.
        in_channels: input channels.
        kwargs: other :class:`ConvNeXtEncoder` arguments (e.g. ``drop_path_rate``); they override the variant.
    """
    if variant not in CONVNEXT_VARIANTS:
        raise ValueError(f"unknown ConvNeXt variant {variant!r}; choose one of {sorted(CONVNEXT_VARIANTS)}")
    return ConvNeXtEncoder(in_channels=in_channels, **{**CONVNEXT_VARIANTS[variant], **kwargs})
