"""The encoder contract and the one registry of encoders.

Every encoder of the project is an ``nn.Module`` that

- returns from ``forward(x)`` a list of feature maps ordered shallow (fine) to deep (coarse);
- exposes ``spatial_dims`` (2 or 3), ``out_channels`` (channels of each map) and ``reductions`` (the stride of
  each map relative to the input, one integer per spatial axis, so anisotropic 3-D video backbones that keep the
  first axis fit the same decoders);
- offers ``remap_pretrained_keys(state) -> state`` turning a state dict in the reference implementation's key
  names (timm for 2-D backbones, mmaction2 for 3-D video backbones) into its own names, dropping the classifier.

Decoders read ``out_channels`` and ``reductions`` and raise on a mismatch instead of producing a wrong-sized
output. Encoders are built by family name through :func:`build_encoder`; variants and sizes are arguments of the
family's builder, so tests and CPU demos build narrow versions of the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch.nn as nn

from networks.checkpoint import load_pretrained_encoder

__all__ = [
    "ENCODERS",
    "build_encoder",
    "check_encoder",
    "load_encoder_weights",
    "register_encoder",
]


#: family name -> builder(**kwargs) -> encoder module
ENCODERS: dict[str, Callable[..., nn.Module]] = {}


def register_encoder(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering an encoder builder under ``name`` (one name per family, variants as arguments)."""

    def register(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in ENCODERS and ENCODERS[name] is not builder:
            raise ValueError(f"encoder {name!r} is registered twice")
        ENCODERS[name] = builder
        return builder

    return register


def build_encoder(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered encoder ``name`` with the builder's arguments (``variant``, widths, ``in_channels``...)."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; registered encoders: {sorted(ENCODERS)}")
    return check_encoder(ENCODERS[name](**kwargs))


def check_encoder(encoder: nn.Module) -> nn.Module:
    """Raise a ``TypeError`` naming what is missing when ``encoder`` does not follow the contract; return it."""
    missing = [a for a in ("spatial_dims", "out_channels", "reductions", "remap_pretrained_keys") if not hasattr(encoder, a)]
    if missing:
        raise TypeError(f"{type(encoder).__name__} does not follow the encoder contract: no {', '.join(missing)}")
    channels: Sequence[int] = encoder.out_channels
    reductions: Sequence[Sequence[int]] = encoder.reductions
    if len(channels) != len(reductions) or any(len(r) != encoder.spatial_dims for r in reductions):
        raise TypeError(
            f"{type(encoder).__name__}: out_channels {tuple(channels)} and reductions {tuple(reductions)} must have "
            f"one entry per feature map, each reduction with {encoder.spatial_dims} axes"
        )
    return encoder


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load local pretrained weights into ``encoder`` (in place) by the reference implementation's key names.

    ``encoder.remap_pretrained_keys`` brings the file's names to the encoder's own; the encoder's own
    ``state_dict()`` names always work. Reading, stem adaptation and the strict checks with messages naming the
    file and keys are :func:`networks.checkpoint.load_pretrained_encoder`.
    """
    load_pretrained_encoder(encoder, path, remap=encoder.remap_pretrained_keys)
