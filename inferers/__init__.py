"""Inferers that wrap MONAI's (``SimpleInferer``, ``SlidingWindowInferer``): test-time augmentation."""

from inferers.flip_tta import FlipTTAInferer

__all__ = ["FlipTTAInferer"]
