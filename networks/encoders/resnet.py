"""ResNet encoder in the torchvision ImageNet layout, returning the smp skips (stem first), on MONAI's ResNet.

MONAI's ``ResNetFeatures`` uses the MedicalNet layout (parameter-free "A" shortcuts for resnet18/34); the CCF BDCI
2021 rank-1 solution's ResNet34 ablation (``segmentation_models_pytorch`` 0.1.0 ``Linknet("resnet34")``) uses the
torchvision one. Registered as the encoder family ``"resnet"`` (variants ``resnet18``, ``resnet34``, ``resnet50``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.networks.nets.resnet import ResNet, ResNetBlock, ResNetBottleneck, ResNetFeatures, get_inplanes

from networks.encoders.base import register_encoder

__all__ = ["RESNET_VARIANTS", "ResNetSkipEncoder", "resnet_encoder"]

#: ImageNet ResNets by torchvision name: (blocks per layer, block type)
RESNET_VARIANTS: dict[str, tuple[tuple[int, ...], str]] = {
    "resnet18": ((2, 2, 2, 2), "basic"),
    "resnet34": ((3, 4, 6, 3), "basic"),
    "resnet50": ((3, 4, 6, 3), "bottleneck"),
}


class ResNetSkipEncoder(ResNet):
    """MONAI ResNet in the torchvision ImageNet layout returning ``[stem@H/2, layer1@H/4, …, layer4@H/32]``.

    It has the 7x7 stride-2 stem, max-pool and 1x1-conv + BN "B" shortcuts without bias of torchvision, whose
    module names it shares (``conv1``, ``bn1``, ``layer{i}.{j}.conv1``, ``…downsample.0``), so a torchvision
    ``resnet34`` state dict loads through :func:`networks.encoders.load_encoder_weights` (``fc.*`` dropped). The
    stem is the ReLU output before the max-pool, as in smp. Channels are in ``self.out_channels`` (resnet34:
    ``(64, 64, 128, 256, 512)``), strides in ``self.reductions`` (2, 4, 8, 16, 32 on every axis).

    Args:
        layers: blocks per layer, e.g. ``(3, 4, 6, 3)`` (resnet34) or ``(1, 1, 1, 1)`` for a tiny test encoder.
        block: ``"basic"`` or ``"bottleneck"``.
        in_channels: input channels.
        spatial_dims: 2 or 3.
        widen_factor: multiplies the widths 64, 128, 256, 512 (e.g. 0.25 for a CPU demo).
        norm: MONAI norm spec.
    """

    def __init__(
        self,
        layers: Sequence[int] = (3, 4, 6, 3),
        block: str = "basic",
        in_channels: int = 1,
        spatial_dims: int = 2,
        widen_factor: float = 1.0,
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__(
            block=block,
            layers=list(layers),
            block_inplanes=get_inplanes(),
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            conv1_t_size=7,
            conv1_t_stride=2,
            shortcut_type="B",
            widen_factor=widen_factor,
            feed_forward=False,
            bias_downsample=False,
            norm=norm,
        )
        expansion = (ResNetBottleneck if block == "bottleneck" else ResNetBlock).expansion
        widths = [int(w * widen_factor) for w in get_inplanes()]
        self.spatial_dims = spatial_dims
        self.out_channels = (widths[0],) + tuple(w * expansion for w in widths)
        self.reductions = tuple((2 ** (level + 1),) * spatial_dims for level in range(len(self.out_channels)))

    forward = ResNetFeatures.forward

    def remap_pretrained_keys(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Drop the classifier (``fc.*``) of a torchvision-named state dict."""
        return {k: v for k, v in state.items() if not k.startswith("fc.")}


@register_encoder("resnet")
def resnet_encoder(variant: str = "resnet34", in_channels: int = 1, **kwargs: Any) -> ResNetSkipEncoder:
    """Build a :class:`ResNetSkipEncoder` of a torchvision variant (see :data:`RESNET_VARIANTS`).

    ``kwargs`` are the other :class:`ResNetSkipEncoder` arguments (``widen_factor``, ``spatial_dims``, ``norm``).
    """
    if variant not in RESNET_VARIANTS:
        raise ValueError(f"unknown ResNet variant {variant!r}; choose one of {sorted(RESNET_VARIANTS)}")
    layers, block = RESNET_VARIANTS[variant]
    return ResNetSkipEncoder(layers, block, in_channels=in_channels, **kwargs)
