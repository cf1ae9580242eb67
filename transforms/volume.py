"""Volume transforms MONAI lacks: 2-D augmentations applied with ONE random draw to every slice of a volume.

Slice-wise 2-D augmentation of a 3-D stack with shared parameters is what albumentations' ``ReplayCompose`` does
in the RSNA 2022 cervical spine reference solution (selimsef/rsna_cervical_fracture,
``training/dataset_seq.py``): the first slice draws the parameters, every other slice replays them. MONAI's 3-D
transforms either lack an in-plane-only mode (``RandGridDistortiond`` distorts every axis) or would resample the
whole volume. :class:`InPlaned` instead folds the slice axis into the channels, ``(C, X, Y, Z) -> (C*Z, X, Y)``,
runs ordinary 2-D MONAI dictionary transforms once (one draw, applied identically to all channels, i.e. all
slices) and unfolds the result. Each slice is resampled in 2-D only, so no slice is ever blended with another.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import Compose, MapTransform, Randomizable
from monai.utils import convert_to_tensor

__all__ = ["InPlaned"]


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
