"""Utility transforms MONAI lacks, dictionary versions (``monai.transforms.utility.dictionary`` style).

:class:`StackNeighbourSlicesd` builds 2.5D inputs on the fly: each slice of a volume with its neighbours as channels
(the AI Challenger 2018 retinal edema reference writes these stacks to disk as "trans3channel" images instead).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import ensure_tuple_rep

__all__ = ["StackNeighbourSlicesd"]


class StackNeighbourSlicesd(MapTransform):
    """2.5D input: slice i of a cube with its ``radius`` neighbours on each side as channels, edges replicated.

    ``data[key]`` is a cube ``(S, H, W)`` (or ``(1, S, H, W)``), numpy or torch. With ``data[slice_key]`` = i it
    becomes ``(2 * radius + 1, H, W)`` = slices ``i - radius .. i + radius`` (indices clipped to ``0 .. S-1``);
    without a slice index the whole cube is stacked to ``(2 * radius + 1, S, H, W)`` (channel c of slice s is slice
    ``clip(s + c - radius)``). ``radius`` 0 just picks slice i as one channel: use it for the label.

    With ``reverse=True`` the channels run the other way, ``i + radius .. i - radius`` (whole cube: channel c of slice
    s is slice ``clip(s + radius - c)``). That is the order the AI Challenger 2018 retinal edema reference trained
    on: its ``data/utils/gen_image.py`` stacks (i-1, i, i+1) and writes them with ``cv2.imwrite``, which takes the
    channels as BGR, and its loader reads the PNGs back with PIL as RGB, so the network saw (i+1, i, i-1). Its
    released checkpoints need ``reverse=True``.

    Args:
        keys: keys of the cubes.
        radius: neighbours on each side, one value or one per key (e.g. ``[1, 0]`` for image and label).
        slice_key: key of the slice index; absent (or None) -> whole cube.
        reverse: channels from slice ``i + radius`` down to ``i - radius`` instead of upwards.
        allow_missing_keys: skip missing keys instead of raising.

    The result is a new array: the (cached) cube is never modified.
    """

    def __init__(
        self,
        keys: KeysCollection,
        radius: int | Sequence[int] = 1,
        slice_key: str = "slice",
        reverse: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.radius = ensure_tuple_rep(radius, len(self.keys))
        if any(int(r) < 0 for r in self.radius):
            raise ValueError(f"radius must be >= 0, got {radius}")
        self.slice_key = slice_key
        if not isinstance(reverse, bool):
            raise TypeError(f"reverse must be True or False, got {reverse!r}")
        self.reverse = reverse

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        index = d.get(self.slice_key)
        for key, radius in self.key_iterator(d, self.radius):
            cube: Any = d[key]
            if cube.ndim == 4 and cube.shape[0] == 1:
                cube = cube[0]
            if cube.ndim != 3:
                raise ValueError(f"'{key}' must be a cube (S, H, W), got shape {tuple(cube.shape)}")
            n = cube.shape[0]
            offsets = np.arange(-int(radius), int(radius) + 1)
            if self.reverse:
                offsets = offsets[::-1]
            if index is None:
                rows = np.clip(offsets[:, None] + np.arange(n)[None, :], 0, n - 1)
            else:
                i = int(index)  # type: ignore[call-overload]
                if not 0 <= i < n:
                    case = d.get("case", "?")
                    raise ValueError(f"'{self.slice_key}' {i} is outside the {n} slices of '{key}' (case {case})")
                rows = np.clip(offsets + i, 0, n - 1)
            if isinstance(cube, torch.Tensor):
                d[key] = cube[torch.as_tensor(rows, device=cube.device)]
            else:
                d[key] = np.asarray(cube)[rows]
        return d
