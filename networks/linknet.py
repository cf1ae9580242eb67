"""LinkNet (Chaurasia & Culurciello, VCIP 2017) on any multi-scale encoder, in the layout of smp's ``Linknet``.

The CCF BDCI 2021 ULSEG rank-1 model is ``segmentation_models_pytorch`` 0.1.0 ``Linknet`` with an
``efficientnet-b6`` encoder, 1 input channel and 1 output logit. This module rebuilds it from MONAI
pieces: the encoder is MONAI's EfficientNet (:class:`networks.efficientnet.EfficientNetSkipEncoder`, returning the
smp skips) or MONAI's ResNet in the ImageNet layout (:class:`ResNetSkipEncoder`, the seed's ResNet34 ablation);
the decoder blocks are MONAI ``Convolution`` s.

Parameter counts (1 input channel, 1 output): LinkNet-B6 39,916,245 = encoder 39,402,984 + decoder 513,228 +
head 33. smp 0.1.0's figure of 41,248,965 also counts the 3-channel stem (+1,008) and the EfficientNet
classifier conv + BN (``_conv_head``/``_bn1``, +1,331,712) that smp keeps in the encoder but never runs; those
are removed here so that every parameter receives a gradient (DistributedDataParallel refuses unused ones).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.nets.resnet import ResNet, ResNetBlock, ResNetBottleneck, ResNetFeatures, get_inplanes

from networks.efficientnet import EfficientNetSkipEncoder
from networks.checkpoint import load_pretrained_encoder

__all__ = [
    "RESNET_VARIANTS",
    "LinkNet",
    "LinkNetDecoder",
    "LinkNetDecoderBlock",
    "ResNetSkipEncoder",
    "linknet_encoder",
    "load_encoder_weights",
]

#: ImageNet ResNets by name: (blocks per layer, block type)
RESNET_VARIANTS: dict[str, tuple[tuple[int, ...], str]] = {
    "resnet18": ((2, 2, 2, 2), "basic"),
    "resnet34": ((3, 4, 6, 3), "basic"),
    "resnet50": ((3, 4, 6, 3), "bottleneck"),
}


class ResNetSkipEncoder(ResNet):
    """MONAI ResNet in the torchvision ImageNet layout returning ``[stem@H/2, layer1@H/4, …, layer4@H/32]``.

    MONAI's ``ResNetFeatures`` uses the MedicalNet layout (parameter-free "A" shortcuts for resnet18/34); this
    one has the 7x7 stride-2 stem, max-pool and 1x1-conv + BN "B" shortcuts without bias of torchvision, whose
    module names it shares (``conv1``, ``bn1``, ``layer{i}.{j}.conv1``, ``…downsample.0``), so a torchvision
    ``resnet34`` state dict loads through :func:`load_encoder_weights` (``fc.*`` dropped). The stem is the
    ReLU output before the max-pool, as in smp. Channels are in ``self.out_channels`` (resnet34:
    ``(64, 64, 128, 256, 512)``).

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
        self.out_channels = (widths[0],) + tuple(w * expansion for w in widths)

    forward = ResNetFeatures.forward

    def remap_pretrained_keys(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Drop the classifier (``fc.*``) of a torchvision-named state dict."""
        return {k: v for k, v in state.items() if not k.startswith("fc.")}


def linknet_encoder(name: str, in_channels: int = 1, spatial_dims: int = 2, **kwargs: Any) -> nn.Module:
    """Build a LinkNet encoder by name: ``"efficientnet-b0"`` … ``"efficientnet-b8"`` or ``"resnet18/34/50"``.

    ``kwargs`` go to the encoder class (e.g. ``widen_factor=0.25`` for a narrow CPU-demo ResNet, ``norm``).
    """
    if name.startswith("efficientnet-"):
        return EfficientNetSkipEncoder(name, in_channels=in_channels, spatial_dims=spatial_dims, **kwargs)
    if name in RESNET_VARIANTS:
        layers, block = RESNET_VARIANTS[name]
        return ResNetSkipEncoder(layers, block, in_channels=in_channels, spatial_dims=spatial_dims, **kwargs)
    raise ValueError(f"unknown encoder {name!r}: use efficientnet-b0..b8 or one of {list(RESNET_VARIANTS)}")


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load encoder weights from a local file (in place), e.g. ImageNet weights for the seed's pretrained encoder.

    The encoder's ``remap_pretrained_keys`` (if any) brings foreign names to its own: the lukemelas / smp
    EfficientNet names for :class:`EfficientNetSkipEncoder`, the torchvision names for :class:`ResNetSkipEncoder`;
    the encoder's own ``state_dict()`` names always work. Reading, stem adaptation (RGB summed to grey, as smp
    does for ``in_channels=1``) and the strict checks are :func:`networks.checkpoint.load_pretrained_encoder`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is unreadable or does not fit the encoder; the message names the file and the keys.
    """
    remap = getattr(encoder, "remap_pretrained_keys", None)
    load_pretrained_encoder(encoder, path, remap=remap if callable(remap) else None)


class LinkNetDecoderBlock(nn.Module):
    """1x1 conv C->C/4 + norm + act, 4x4 stride-2 transposed conv C/4->C/4 + norm + act, 1x1 conv C/4->out + norm + act.

    As smp's LinkNet ``DecoderBlock``: the 1x1 convs have no bias, the transposed conv has one.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        spatial_dims: int = 2,
        norm: str | tuple = "batch",
        act: str | tuple = ("relu", {"inplace": True}),
    ) -> None:
        super().__init__()
        mid = max(1, in_channels // 4)
        self.reduce = Convolution(spatial_dims, in_channels, mid, kernel_size=1, act=act, norm=norm, bias=False)
        self.up = Convolution(
            spatial_dims,
            mid,
            mid,
            strides=2,
            kernel_size=4,
            padding=1,
            output_padding=0,
            is_transposed=True,
            act=act,
            norm=norm,
            bias=True,
        )
        self.expand = Convolution(spatial_dims, mid, out_channels, kernel_size=1, act=act, norm=norm, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.up(self.reduce(x)))


class LinkNetDecoder(nn.Module):
    """LinkNet decoder: one upsampling block per encoder map, deepest first; the skips are ADDED (not the last block).

    For encoder maps with channels ``encoder_channels = (c0, …, cn-1)`` (shallowest first, strides 2, 4, …, 2^n)
    the channel path is ``cn-1 -> cn-2 -> … -> c0 -> out_channels``; for the EfficientNet-B6 skips
    ``(56, 40, 72, 200, 576)`` that is 576->200->72->40->56->32 (the rank-1 model). The output has the input's size.

    Args:
        encoder_channels: channels of the encoder maps, shallowest first.
        out_channels: channels of the last block (before the segmentation head).
        spatial_dims: 2 or 3.
        norm: MONAI norm spec of every block.
        act: MONAI activation spec of every block.
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        out_channels: int = 32,
        spatial_dims: int = 2,
        norm: str | tuple = "batch",
        act: str | tuple = ("relu", {"inplace": True}),
    ) -> None:
        super().__init__()
        if len(encoder_channels) == 0:
            raise ValueError("encoder_channels must name at least one encoder map")
        path = [int(c) for c in reversed(encoder_channels)] + [int(out_channels)]
        self.blocks = nn.ModuleList(
            LinkNetDecoderBlock(path[i], path[i + 1], spatial_dims, norm, act) for i in range(len(encoder_channels))
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        n = len(self.blocks)
        if len(features) != n:
            raise ValueError(f"the decoder expects {n} encoder maps, got {len(features)}")
        x = features[n - 1]
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i < n - 1:
                x = x + features[n - 2 - i]
        return x


class LinkNet(nn.Module):
    """LinkNet segmentation network: encoder, :class:`LinkNetDecoder`, 1x1 conv head to ``out_channels`` logits.

    ``LinkNet()`` is the CCF BDCI 2021 rank-1 model (EfficientNet-B6 encoder, 1 grey input channel, 1 logit).
    Inputs must have spatial sizes divisible by ``2 ** len(encoder maps)`` (32 for the named encoders); other
    sizes raise a ``ValueError`` instead of failing deep inside the encoder. TorchScript: ``torch.jit.script``
    works (tested), as does ``torch.jit.trace``.

    Args:
        encoder: a name for :func:`linknet_encoder` (``"efficientnet-b6"``, ``"efficientnet-b0"``, ``"resnet34"``,
            …) or a module returning a list of maps at strides 2, 4, …, 2^n, shallowest first (e.g. a
            :class:`ResNetSkipEncoder` with small widths). Bundle configs give a name (and ``encoder_kwargs``): a
            module given there would be one object shared by every model a factory builds (the fold ensemble).
        encoder_kwargs: extra arguments of a named encoder (``{"widen_factor": 0.25}``).
        in_channels: input channels of a named encoder.
        out_channels: output logits.
        decoder_channels: channels of the last decoder block (32 in smp).
        encoder_channels: channels of the encoder maps; default ``encoder.out_channels``.
        spatial_dims: 2 or 3 (for a named encoder).
        pretrained_path: local file of encoder weights, see :func:`load_encoder_weights`.
        norm: MONAI norm spec of the decoder.
        act: MONAI activation spec of the decoder.
    """

    def __init__(
        self,
        encoder: str | nn.Module = "efficientnet-b6",
        in_channels: int = 1,
        out_channels: int = 1,
        decoder_channels: int = 32,
        encoder_channels: Sequence[int] | None = None,
        spatial_dims: int = 2,
        pretrained_path: str | Path | None = None,
        norm: str | tuple = "batch",
        act: str | tuple = ("relu", {"inplace": True}),
        encoder_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(encoder, str):
            self.encoder = linknet_encoder(encoder, in_channels, spatial_dims, **dict(encoder_kwargs or {}))
        elif encoder_kwargs:
            raise ValueError("encoder_kwargs apply to a named encoder only, not to an encoder module")
        else:
            self.encoder = encoder
        if encoder_channels is None:
            encoder_channels = getattr(self.encoder, "out_channels", None)
            if encoder_channels is None:
                raise ValueError("give encoder_channels: the encoder module has no `out_channels` attribute")
        if pretrained_path is not None:
            load_encoder_weights(self.encoder, pretrained_path)
        self.decoder = LinkNetDecoder(encoder_channels, decoder_channels, spatial_dims, norm, act)
        self.head = Convolution(spatial_dims, decoder_channels, out_channels, kernel_size=1, conv_only=True, bias=True)
        self.size_divisor = 2 ** len(encoder_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for size in x.shape[2:]:
            if size % self.size_divisor != 0:
                raise ValueError(
                    f"LinkNet input spatial size {list(x.shape[2:])} must be divisible by {self.size_divisor}"
                )
        return self.head(self.decoder(self.encoder(x)))
