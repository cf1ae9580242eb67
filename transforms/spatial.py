"""Spatial helpers for configuring MONAI's spatial transforms from the parameters of other libraries.

:func:`elastic_control_grid` turns the (α, σ) of a scipy-style elastic deformation (albumentations'
``ElasticTransform``, used by MAGNET, CSV 2026 carotid 4th place) into the ``spacing`` and ``magnitude_range`` of
MONAI's ``Rand2DElasticd``, so that a bundle config states the original's values::

    "elastic_grid": "$transforms.spatial.elastic_control_grid(@elastic_alpha, @elastic_sigma, @image_size / 512)",
    {"_target_": "Rand2DElasticd", "spacing": "$@elastic_grid[0]", "magnitude_range": "$@elastic_grid[1]", ...}
"""

from __future__ import annotations

import math

__all__ = ["elastic_control_grid"]


def elastic_control_grid(alpha: float, sigma: float, scale: float = 1.0) -> tuple[int, tuple[float, float]]:
    """``Rand2DElastic`` spacing and magnitude mimicking a scipy-style elastic field of ``alpha`` and ``sigma``.

    The original field is U(−1, 1) noise smoothed by a Gaussian of σ and multiplied by α: its RMS is
    α·sqrt(1/3)/(2·sqrt(π)·σ) and its correlation falls to one half at about 1.7σ. Bicubic interpolation of
    N(0, m²) offsets on control points every 2σ gives about the same RMS and correlation length.

    Args:
        alpha: field magnitude in pixels of the reference resolution.
        sigma: Gaussian smoothing in pixels of the reference resolution.
        scale: working resolution / reference resolution (pixel-valued parameters scale with it).

    Returns:
        ``(spacing, (magnitude, magnitude))``: control point spacing in pixels (at least 1) and the offset range.
    """
    rms = alpha * math.sqrt(1.0 / 3.0) / (2.0 * math.sqrt(math.pi) * sigma) * scale
    return max(1, round(2 * sigma * scale)), (rms, rms)
