"""Spatial helpers for configuring MONAI's spatial transforms from the parameters of other libraries.

:func:`elastic_control_grid` turns the (α, σ) of a scipy-style elastic deformation (albumentations'
``ElasticTransform``, used by MAGNET, CSV 2026 carotid 4th place) into the ``spacing`` and ``magnitude_range`` of
MONAI's ``Rand2DElasticd``, so that a bundle config states the original's values::

    "elastic_grid": "$transforms.spatial.elastic_control_grid(@elastic_alpha, @elastic_sigma, @image_size / 512)",
    {"_target_": "Rand2DElasticd", "spacing": "$@elastic_grid[0]", "magnitude_range": "$@elastic_grid[1]", ...}

:class:`InPlaned` applies 2-D augmentations with ONE random draw to every slice of a volume, as albumentations'
``ReplayCompose`` does in the RSNA 2022 cervical spine solution (selimsef/rsna_cervical_fracture,
``training/dataset_seq.py``): it folds the slice axis into the channels, ``(C, X, Y, Z) -> (C*Z, X, Y)``, runs ordinary
2-D MONAI dictionary transforms once and unfolds the result, so no slice is blended with another (MONAI's 3-D
``RandGridDistortiond`` has no in-plane-only mode).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
import math
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import Compose, MapTransform, Randomizable
from monai.utils import convert_to_tensor
import numpy as np
import torch

__all__ = [
    "elastic_control_grid",
    "InPlaned",
]


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

class InPlaned(Randomizable, MapTransform):
    """Run 2-D dictionary ``transforms`` on every slice of the ``keys`` volumes with one shared random draw.

    Args:
        keys: keys of channel-first volumes ``(C, X, Y, Z)`` (all with the same spatial shape).
        transforms: 2-D MONAI dictionary transforms (or one ``Compose``) acting on the same ``keys``; they see
            ``(C*Z, X, Y)`` arrays. Per-key settings (e.g. ``mode=["bilinear", "nearest"]``) work as usual.
        slice_axis: the spatial axis (0, 1 or 2) that indexes the slices; the two others form the plane, in
            their original order.
        allow_missing_keys: skip missing keys instead of raising.

    The outputs keep their input dtype family (a label stays integer) only as far as the 2-D transforms do; the
    metadata of a ``MetaTensor`` input is kept as it was (an augmentation does not change the sampling grid
    the network sees, and training items are never inverted).
    """

    def __init__(
        self,
        keys: KeysCollection,
        transforms: Sequence | Compose,
        slice_axis: int = 2,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2 (a spatial axis of (C, X, Y, Z)), got {slice_axis}")
        self.transform = transforms if isinstance(transforms, Compose) else Compose(list(transforms))
        self.slice_axis = slice_axis

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> InPlaned:
        super().set_random_state(seed, state)
        self.transform.set_random_state(seed, state)
        return self

    def randomize(self, data: object = None) -> None:
        """The wrapped transforms draw their own parameters when called."""

    def _fold(self, volume: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        if volume.ndim != 4:
            raise ValueError(f"expected a channel-first volume (C, X, Y, Z), got shape {tuple(volume.shape)}")
        axis = self.slice_axis + 1
        moved = torch.movedim(volume, axis, 1)  # (C, Z, P, Q)
        return moved.reshape(-1, *moved.shape[2:]), tuple(moved.shape[:2])

    def _unfold(self, planes: torch.Tensor, leading: tuple[int, ...]) -> torch.Tensor:
        stacked = planes.reshape(*leading, *planes.shape[1:])
        return torch.movedim(stacked, 1, self.slice_axis + 1).contiguous()

    def __call__(self, data: Mapping[Hashable, torch.Tensor | np.ndarray]) -> dict:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        shapes = {key: tuple(d[key].shape[1:]) for key in keys}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"InPlaned needs volumes of one spatial shape, got {shapes}")
        originals, leading = {}, {}
        for key in keys:
            originals[key] = d[key]
            volume = convert_to_tensor(d[key], track_meta=False)
            d[key], leading[key] = self._fold(volume)
        d = self.transform(d)
        for key in keys:
            planes = convert_to_tensor(d[key], track_meta=False)
            volume = self._unfold(planes, leading[key])
            original = originals[key]
            d[key] = MetaTensor(volume, meta=dict(original.meta)) if isinstance(original, MetaTensor) else volume
        return d
