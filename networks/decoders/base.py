"""What every decoder checks: the number, channels and strides (``reductions``) of the encoder's feature maps."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

__all__ = ["DecoderLayout", "upsampling_factors"]


def upsampling_factors(coarse: Sequence[int], fine: Sequence[int], what: str) -> tuple[int, ...]:
    """Per-axis integer factor from stride ``coarse`` to stride ``fine``; ``ValueError`` naming ``what`` if none."""
    if len(coarse) != len(fine) or any(c % f != 0 for c, f in zip(coarse, fine)):
        raise ValueError(f"{what}: stride {tuple(coarse)} is not an integer multiple of stride {tuple(fine)}")
    return tuple(c // f for c, f in zip(coarse, fine))


class DecoderLayout(nn.Module):
    """Base of the decoders: remembers the encoder layout it was built for and checks features against it.

    Args:
        encoder_channels: channels of the encoder's maps, shallow to deep (``encoder.out_channels``).
        encoder_reductions: stride of each map, one integer per spatial axis (``encoder.reductions``).
        spatial_dims: 2 or 3.
    """

    def __init__(
        self, encoder_channels: Sequence[int], encoder_reductions: Sequence[Sequence[int]], spatial_dims: int
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if spatial_dims not in (2, 3):
            raise ValueError(f"{name}: spatial_dims must be 2 or 3, got {spatial_dims}")
        if len(encoder_channels) == 0 or len(encoder_channels) != len(encoder_reductions):
            raise ValueError(
                f"{name}: expected one reduction per encoder map, got channels {tuple(encoder_channels)} and "
                f"reductions {tuple(map(tuple, encoder_reductions))}"
            )
        if any(len(r) != spatial_dims for r in encoder_reductions):
            raise ValueError(
                f"{name}: expected reductions with {spatial_dims} axes, got {tuple(map(tuple, encoder_reductions))}"
            )
        self.spatial_dims = spatial_dims
        self.encoder_channels: list[int] = [int(c) for c in encoder_channels]
        self.encoder_reductions: tuple[tuple[int, ...], ...] = tuple(
            tuple(int(s) for s in r) for r in encoder_reductions
        )

    def check_encoder(self, encoder: nn.Module) -> None:
        """Raise a ``ValueError`` naming expected vs got when ``encoder``'s channels or reductions differ."""
        got_channels = tuple(int(c) for c in encoder.out_channels)
        got_reductions = tuple(tuple(int(s) for s in r) for r in encoder.reductions)
        if got_channels != tuple(self.encoder_channels) or got_reductions != self.encoder_reductions:
            raise ValueError(
                f"{type(self).__name__} was built for encoder maps with channels {tuple(self.encoder_channels)} at "
                f"strides {self.encoder_reductions}; {type(encoder).__name__} gives channels {got_channels} at strides "
                f"{got_reductions}"
            )

    def check_features(self, features: list[torch.Tensor]) -> None:
        """Raise a ``ValueError`` when the number or channels of ``features`` differ from the encoder layout."""
        if len(features) != len(self.encoder_channels):
            raise ValueError(f"the decoder expects {len(self.encoder_channels)} encoder maps, got {len(features)}")
        for i in range(len(features)):
            if features[i].shape[1] != self.encoder_channels[i]:
                raise ValueError(
                    f"encoder map {i}: the decoder expects {self.encoder_channels[i]} channels, "
                    f"got {features[i].shape[1]}"
                )
