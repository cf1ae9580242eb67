"""Loading of FUGC 2025 cases (:mod:`data.fugc`) as dictionary transforms.

:class:`LoadFUGCCased` reads an item's image (``(3, H, W)``, grey PNGs repeated to three channels, an opaque alpha
dropped) and, when present, its label (``(1, H, W)`` class indices 0..2), and refuses a label whose size differs
from its image's or whose values lie outside 0..2, naming the file (:func:`data.fugc.read_fugc_case`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform

from data.fugc import read_fugc_case

__all__ = ["LoadFUGCCased"]


class LoadFUGCCased(MapTransform):
    """Replace the paths ``data[image_key]`` and (if present) ``data[label_key]`` by their pixels.

    ``image_key``: float32 MetaTensor ``(3, H, W)`` with values 0..255 (meta ``filename_or_obj``,
    ``spatial_shape`` ``(H, W)``); ``label_key``: uint8 MetaTensor ``(1, H, W)`` of class indices.

    Raises:
        CaseReadError: an unreadable or unusable image or label (see :func:`data.fugc.read_fugc_case`).
    """

    def __init__(self, image_key: str = "image", label_key: str = "label", allow_missing_keys: bool = True) -> None:
        super().__init__([image_key, label_key], allow_missing_keys)
        self.image_key, self.label_key = image_key, label_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        image_path, label_path = d[self.image_key], d.get(self.label_key)
        image, label = read_fugc_case(image_path, label_path)  # type: ignore[arg-type]
        meta = {"spatial_shape": np.asarray(image.shape[1:]), "original_channel_dim": 0}
        d[self.image_key] = MetaTensor(
            torch.as_tensor(image.astype(np.float32)), meta={"filename_or_obj": str(image_path), **meta}
        )
        if label is not None:
            d[self.label_key] = MetaTensor(
                torch.as_tensor(label[None]), meta={"filename_or_obj": str(label_path), **meta}
            )
        return d
