"""A segmentation network as encoder + decoder + head, with separate ``encode`` and ``decode`` steps.

Keeping the two steps apart lets a method work on the features in between: UniMatch (FUGC 2025 7th place)
decodes dropout-perturbed features next to the clean ones,
``model.decode([F.dropout2d(f, 0.5) for f in model.encode(x)])``. The model checks at construction that the
decoder was built for the encoder's ``out_channels`` and ``reductions`` (:mod:`networks.encoders.base`), so a
mismatch raises instead of returning a wrongly sized map.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from networks.decoders.base import DecoderLayout
from networks.encoders.base import check_encoder

__all__ = ["SegmentationModel"]


class SegmentationModel(nn.Module):
    """``forward(x) = decode(encode(x))`` with ``decode(features) = head(decoder(features))``.

    Args:
        encoder: a module following the encoder contract (``build_encoder(...)``).
        decoder: a decoder of :mod:`networks.decoders` built for ``encoder.out_channels`` / ``encoder.reductions``.
        head: maps the decoder output to the logits (a 1x1 conv, or a last upsampling block + conv); identity
            when ``None``.

    Raises:
        TypeError: the encoder does not follow the contract.
        ValueError: the decoder was built for other channels or strides (the message names both).
    """

    def __init__(self, encoder: nn.Module, decoder: DecoderLayout, head: nn.Module | None = None) -> None:
        super().__init__()
        decoder.check_encoder(check_encoder(encoder))
        self.encoder = encoder
        self.decoder = decoder
        self.head = head if head is not None else nn.Identity()

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's feature maps, shallow to deep."""
        return self.encoder(x)

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Logits from (possibly perturbed) ``features`` as returned by :meth:`encode`."""
        return self.head(self.decoder(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
