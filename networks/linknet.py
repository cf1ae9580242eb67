"""LinkNet (Chaurasia & Culurciello, VCIP 2017) on any registered encoder, in the layout of smp's ``Linknet``.

The CCF BDCI 2021 ULSEG rank-1 model is ``segmentation_models_pytorch`` 0.1.0 ``Linknet`` with an
``efficientnet-b6`` encoder, 1 input channel and 1 output logit. Here it is a :class:`SegmentationModel` of a
registered encoder (``"efficientnet"``: MONAI's EfficientNet returning the smp skips; ``"resnet"``: MONAI's
ResNet in the torchvision layout, the rank-1 solution's ResNet34 ablation), the
:class:`~networks.decoders.linknet.LinkNetDecoder` and a 1x1 conv head.

Parameter counts (1 input channel, 1 output): LinkNet-B6 39,916,245 = encoder 39,402,984 + decoder 513,228 +
head 33. smp's figure of 41,248,965 also counts the 3-channel stem (+1,008) and the EfficientNet classifier
conv + BN (``_conv_head``/``_bn1``, +1,331,712) that smp keeps in the encoder but never runs; those are removed
here so that every parameter receives a gradient (DistributedDataParallel refuses unused ones).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution

from networks.decoders.linknet import LinkNetDecoder
from networks.encoders import build_encoder, check_encoder, load_encoder_weights
from networks.segmentation import SegmentationModel

__all__ = ["LinkNet"]


class LinkNet(SegmentationModel):
    """LinkNet segmentation network: encoder, :class:`LinkNetDecoder`, 1x1 conv head to ``out_channels`` logits.

    ``LinkNet()`` is the CCF BDCI 2021 rank-1 model (EfficientNet-B6 encoder, 1 grey input channel, 1 logit).
    Inputs must have spatial sizes divisible by ``2 ** len(encoder maps)`` (32 for the registered encoders);
    other sizes raise a ``ValueError`` instead of failing deep inside the encoder. TorchScript: ``torch.jit.script``
    works (tested), as does ``torch.jit.trace``.

    Args:
        encoder: a registered encoder family (``"efficientnet"``, default variant ``b6``; ``"resnet"``; see
            :func:`networks.encoders.build_encoder`) or an encoder module whose maps lie at strides 2, 4, …, 2^n.
            Bundle configs give a name (and ``encoder_kwargs``): a module given there would be one object shared
            by every model a factory builds (the fold ensemble).
        encoder_kwargs: arguments of the named encoder's builder (``{"variant": "b6"}``,
            ``{"variant": "resnet18", "widen_factor": 0.25}``).
        in_channels: input channels of a named encoder.
        out_channels: output logits.
        decoder_channels: channels of the last decoder block (32 in smp).
        spatial_dims: 2 or 3 (for a named encoder).
        pretrained_path: local file of encoder weights, see :func:`networks.encoders.load_encoder_weights`.
        norm: MONAI norm spec of the decoder.
        act: MONAI activation spec of the decoder.

    Raises:
        TypeError: the encoder module does not follow the encoder contract.
        ValueError: an unknown encoder name, ``encoder_kwargs`` with an encoder module, or an encoder whose maps
            are not at strides 2, 4, …, 2^n (e.g. ConvNeXt, first map at stride 4).
    """

    def __init__(
        self,
        encoder: str | nn.Module = "efficientnet",
        in_channels: int = 1,
        out_channels: int = 1,
        decoder_channels: int = 32,
        spatial_dims: int = 2,
        pretrained_path: str | Path | None = None,
        norm: str | tuple = "batch",
        act: str | tuple = ("relu", {"inplace": True}),
        encoder_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(encoder, str):
            encoder = build_encoder(
                encoder, in_channels=in_channels, spatial_dims=spatial_dims, **dict(encoder_kwargs or {})
            )
        elif encoder_kwargs:
            raise ValueError("encoder_kwargs apply to a named encoder only, not to an encoder module")
        check_encoder(encoder)
        if pretrained_path is not None:
            load_encoder_weights(encoder, pretrained_path)
        decoder = LinkNetDecoder(
            encoder.out_channels, encoder.reductions, decoder_channels, encoder.spatial_dims, norm, act
        )
        head = Convolution(
            encoder.spatial_dims, decoder_channels, out_channels, kernel_size=1, conv_only=True, bias=True
        )
        super().__init__(encoder, decoder, head)
        self.size_divisor = 2 ** len(decoder.encoder_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for size in x.shape[2:]:
            if size % self.size_divisor != 0:
                raise ValueError(
                    f"LinkNet input spatial size {list(x.shape[2:])} must be divisible by {self.size_divisor}"
                )
        return self.decode(self.encode(x))
