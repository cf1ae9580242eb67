"""The plain UNet encoder (Ronneberger et al., MICCAI 2015): double conv blocks with max-pooling in between.

As in the AI Challenger 2018 retinal edema 4th-place UNet (ShawnBIT/AI-Challenger-Retinal-Edema-Segmentation,
``unetConv2(is_batchnorm=True)``): each level is 2 x (Conv3x3 + BatchNorm + ReLU) with bias (MONAI ``TwoConv``),
levels after the first start with a 2x max-pool. Registered as the encoder family ``"unet"``; it has no
pretrained weights of a reference implementation, so its own key names are the only ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.networks.layers import Pool
from monai.networks.nets.basic_unet import TwoConv

from networks.encoders.base import register_encoder

__all__ = ["UNetEncoder", "unet_encoder"]


class UNetEncoder(nn.Module):
    """Returns one map per level, ``features[i]`` channels at stride ``2 ** i`` (the first at full resolution).

    Args:
        in_channels: input channels.
        features: channels of each level, e.g. ``(16, 32, 64, 128, 256)``.
        spatial_dims: 2 or 3.
        norm: MONAI norm spec of the convs (``None`` for none).
        act: MONAI activation spec of the convs.
    """

    def __init__(
        self,
        in_channels: int = 3,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        spatial_dims: int = 2,
        norm: str | tuple | None = "batch",
        act: str | tuple = ("relu", {"inplace": True}),
    ) -> None:
        super().__init__()
        if len(features) == 0 or any(int(f) < 1 for f in features):
            raise ValueError(f"features must be positive channel counts, one per level, got {tuple(features)}")
        self.spatial_dims = spatial_dims
        self.out_channels = tuple(int(f) for f in features)
        self.reductions = tuple((2**level,) * spatial_dims for level in range(len(features)))
        self.pool = Pool["max", spatial_dims](kernel_size=2)
        widths = (in_channels, *self.out_channels)
        self.blocks = nn.ModuleList(
            TwoConv(spatial_dims, widths[i], widths[i + 1], act=act, norm=norm, bias=True) for i in range(len(features))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            x = block(x if i == 0 else self.pool(x))
            features.append(x)
        return features

    def remap_pretrained_keys(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Own key names only (no reference implementation's weights exist)."""
        return dict(state)


@register_encoder("unet")
def unet_encoder(variant: str = "plain", in_channels: int = 3, **kwargs: Any) -> UNetEncoder:
    """Build a :class:`UNetEncoder`; the only variant is ``"plain"``, sizes are ``kwargs`` (``features``, ...)."""
    if variant != "plain":
        raise ValueError(f"unknown UNet encoder variant {variant!r}; choose 'plain'")
    return UNetEncoder(in_channels=in_channels, **kwargs)
