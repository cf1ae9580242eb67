"""EfficientNet encoder with the skips of ``segmentation_models_pytorch`` (the stem output first), on MONAI's network.

MONAI's :class:`~monai.networks.nets.EfficientNetBNFeatures` (the lukemelas EfficientNet-PyTorch layout) returns
the outputs of the stages that precede a stride change, so its first map is the output of stage 0 (32 channels
at H/2 for B6, what MONAI's FlexibleUNet uses). The smp encoder used by the CCF BDCI 2021 rank-1 LinkNet
(``segmentation_models_pytorch`` 0.1.0, ``efficientnet-b6``) returns the **stem** output instead
(56@H/2, then 40@H/4, 72@H/8, 200@H/16, 576@H/32). :class:`EfficientNetSkipEncoder` keeps MONAI's layers and
weights layout and only changes which maps are returned; it also removes the classifier part (``_conv_head``,
``_bn1``, ``_fc``) that a feature encoder never runs, so that no parameter goes without a gradient.
Registered as the encoder family ``"efficientnet"`` (variants ``b0`` .. ``b8``, ``l2``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from typing import Any

import torch
from monai.networks.nets.efficientnet import EfficientNetBNFeatures, efficientnet_params

from networks.encoders.base import register_encoder

__all__ = ["EfficientNetSkipEncoder", "efficientnet_encoder", "lukemelas_to_monai_efficientnet_keys"]

# a MONAI key "_blocks.{stage}.{block}.rest" is "_blocks.{block}.rest" in the lukemelas / smp layout
_MONAI_BLOCK_KEY = re.compile(r"^_blocks\.\d+\.(\d+\..+)$")
_CLASSIFIER_PREFIXES = ("_conv_head.", "_bn1.", "_fc.")


class EfficientNetSkipEncoder(EfficientNetBNFeatures):
    """EfficientNet (B0..B8, L2) returning ``[stem@H/2, @H/4, @H/8, @H/16, @H/32]`` as the smp encoder does.

    The channels of the maps are in ``self.out_channels``; for ``efficientnet-b6`` they are
    ``(56, 40, 72, 200, 576)``, for ``efficientnet-b0`` ``(32, 24, 40, 112, 320)``. The layers are MONAI's
    (TensorFlow "same" padding fixed for the model's nominal image size, BatchNorm eps 1e-3 / momentum 0.01,
    drop-connect 0.2), the same as lukemelas EfficientNet-PyTorch on which smp 0.1.0 builds. Inputs must have
    spatial sizes divisible by 32 (the static padding then gives every map exactly 1/2^k of the input).

    Weights: :func:`networks.encoders.load_encoder_weights` (a LinkNet's ``pretrained_path``) reads a local file in
    either this module's own naming (``encoder.state_dict()``) or the lukemelas / smp naming of the ImageNet file
    ``efficientnet-b6-c76e70fd.pth`` (``_blocks.{i}.…``), see :meth:`remap_pretrained_keys`; timm's
    ``efficientnet_b6`` naming (``conv_stem``, ``blocks.{stage}.{i}.conv_dw``, …) is not read.

    Args:
        model_name: ``"efficientnet-b0"`` … ``"efficientnet-b8"``, ``"efficientnet-l2"`` (MONAI's table).
        in_channels: input channels (1 for the grey ultrasound of the CCF BDCI recipe).
        spatial_dims: 2 or 3.
        norm: MONAI norm spec.
    """

    def __init__(
        self,
        model_name: str = "efficientnet-b6",
        in_channels: int = 1,
        spatial_dims: int = 2,
        norm: str | tuple = ("batch", {"eps": 1e-3, "momentum": 0.01}),
    ) -> None:
        super().__init__(
            model_name, pretrained=False, progress=False, spatial_dims=spatial_dims, in_channels=in_channels, norm=norm
        )
        for name in ("_conv_head", "_conv_head_padding", "_bn1", "_avg_pooling", "_dropout", "_fc"):
            delattr(self, name)
        # MONAI's extract_stacks[0] selects stage 0's output; smp uses the stem in its place
        self.feature_stacks = [int(i) for i in self.extract_stacks[1:]]
        self.spatial_dims = spatial_dims
        self.out_channels = (int(self._bn0.num_features),) + tuple(
            int(self._blocks_args[i - 1].output_filters) for i in self.feature_stacks
        )
        # the stem has stride 2 and every returned stage ends just before the next stride-2 stage
        self.reductions = tuple((2 ** (level + 1),) * spatial_dims for level in range(len(self.out_channels)))

    def forward(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps ``[stem, stage outputs at H/4, H/8, H/16, H/32]`` of ``inputs`` ``(B, C, *spatial)``."""
        x = self._swish(self._bn0(self._conv_stem(self._conv_stem_padding(inputs))))
        features = [x]
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i + 1 in self.feature_stacks:
                features.append(x)
        return features

    def remap_pretrained_keys(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Bring a state dict in this module's or the lukemelas naming to this module's naming (see the module doc).

        Classifier keys (``_conv_head``, ``_bn1``, ``_fc``) are dropped; keys that are neither are kept so that the
        caller can report them as unexpected.
        """
        return lukemelas_to_monai_efficientnet_keys(state, self.state_dict().keys())


@register_encoder("efficientnet")
def efficientnet_encoder(variant: str = "b6", in_channels: int = 1, **kwargs: Any) -> EfficientNetSkipEncoder:
    """Build an :class:`EfficientNetSkipEncoder` ``efficientnet-<variant>``: ``"b0"`` .. ``"b8"`` or ``"l2"``.

    ``kwargs`` are the other :class:`EfficientNetSkipEncoder` arguments (``spatial_dims``, ``norm``).
    """
    name = f"efficientnet-{variant}"
    if name not in efficientnet_params:
        variants = sorted(k.removeprefix("efficientnet-") for k in efficientnet_params)
        raise ValueError(f"unknown EfficientNet variant {variant!r}; choose one of {variants}")
    return EfficientNetSkipEncoder(name, in_channels=in_channels, **kwargs)


def lukemelas_to_monai_efficientnet_keys(
    state: Mapping[str, torch.Tensor], monai_keys: Collection[str]
) -> dict[str, torch.Tensor]:
    """Rename lukemelas / smp EfficientNet keys (``_blocks.{block}.…``) to MONAI's (``_blocks.{stage}.{block}.…``).

    MONAI numbers the blocks globally inside per-stage ``Sequential`` s, so the lukemelas key is the MONAI key without
    the stage index (the mapping MONAI's own ``_load_state_dict`` uses for the ImageNet download). Keys already in
    MONAI naming pass unchanged; classifier keys (``_conv_head``, ``_bn1``, ``_fc``) are dropped.

    Args:
        state: the state dict read from the file.
        monai_keys: the keys of the MONAI module the weights are meant for.
    """
    lukemelas_name = {}
    for key in monai_keys:
        match = _MONAI_BLOCK_KEY.match(key)
        lukemelas_name[f"_blocks.{match.group(1)}" if match else key] = key
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(_CLASSIFIER_PREFIXES):
            continue
        renamed[key if key in monai_keys else lukemelas_name.get(key, key)] = value
    return renamed
