"""UniMatch's strong views and CutMix boxes (Yang et al., CVPR 2023, LiheYoung/UniMatch; the FUGC 2025 7th-place
solution, apuomline/FUGC2025_7th_solution, ``dataset/dataset.py`` and ``dataset/transform.py``).

As in the originals the data pipeline makes the views: an unlabelled item's weak view (after the weak
augmentation) is copied into two strong views, each augmented independently by colour jitter (0.5, 0.5, 0.5,
0.25) at p 0.8 and Gaussian blur sigma U(0.1, 2.0) at p 0.5, and each gets its own CutMix box (p 0.5). The
trainer (``engines.unimatch.UniMatchTrainer``) pastes, inside each box, the same strong view of a second
unlabelled batch (:func:`cutmix`) and swaps the pseudo-labels there.

CutMix box (UniMatch's ``obtain_cutmix_box``): with probability ``prob`` a box of area ``U(0.02, 0.4) * H * W``
pixels; then, until the box fits inside the image, an aspect ratio (height / width) ``r ~ U(0.3, 1 / 0.3)``, a
width ``int(sqrt(area / r))``, a height ``int(sqrt(area * r))`` and a top-left corner uniform over the image are
drawn (the area is drawn once, the rest again until the box fits). Otherwise the box is empty.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import Compose, CopyItemsd, MapTransform, RandomizableTransform, Transform

from transforms.intensity import RandColorJitterd, RandGaussianBlurd

__all__ = ["RandCutMixBoxd", "cutmix", "sample_cutmix_box", "unimatch_strong_views"]


def sample_cutmix_box(
    height: int,
    width: int,
    rng: np.random.RandomState,
    area_range: Sequence[float] = (0.02, 0.4),
    aspect_range: Sequence[float] = (0.3, 1 / 0.3),
    max_tries: int = 10000,
) -> tuple[int, int, int, int]:
    """``(top, left, box_height, box_width)`` of one CutMix box (module doc), drawn with ``rng``.

    Raises:
        ValueError: no box of the drawn area fits the image within ``max_tries`` draws (an image far more
            elongated than the aspect range allows), or invalid ranges.
    """
    if not 0 < area_range[0] <= area_range[1] <= 1:
        raise ValueError(f"area_range must satisfy 0 < low <= high <= 1, got {area_range}.")
    if not 0 < aspect_range[0] <= aspect_range[1]:
        raise ValueError(f"aspect_range must satisfy 0 < low <= high, got {aspect_range}.")
    area = rng.uniform(*area_range) * height * width
    for _ in range(max_tries):
        ratio = rng.uniform(*aspect_range)
        box_w, box_h = int(math.sqrt(area / ratio)), int(math.sqrt(area * ratio))
        left, top = rng.randint(0, width), rng.randint(0, height)
        if left + box_w <= width and top + box_h <= height:
            return top, left, box_h, box_w
    raise ValueError(
        f"no CutMix box of area {area:.0f} px with aspect in {tuple(aspect_range)} fits a {height} x {width} image."
    )


class RandCutMixBoxd(RandomizableTransform, MapTransform):
    """Add ``box_key``: a bool CutMix box mask ``(1, H, W)`` (module doc), empty with probability ``1 - prob``.

    ``keys`` name the images whose spatial size ``(H, W)`` (the last two axes of the first key present) the box
    covers; they are not changed.
    """

    def __init__(
        self,
        keys: KeysCollection,
        box_key: str,
        prob: float = 0.5,
        area_range: Sequence[float] = (0.02, 0.4),
        aspect_range: Sequence[float] = (0.3, 1 / 0.3),
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.box_key = box_key
        self.area_range = tuple(area_range)
        self.aspect_range = tuple(aspect_range)
        self.box: tuple[int, int, int, int] | None = None

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        super().randomize(None)
        self.box = None
        if self._do_transform:
            self.box = sample_cutmix_box(*spatial_shape, self.R, self.area_range, self.aspect_range)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        first = self.first_key(d)
        if first == ():
            return d
        height, width = d[first].shape[-2:]
        self.randomize((height, width))
        box = torch.zeros(1, height, width, dtype=torch.bool)
        if self.box is not None:
            top, left, box_h, box_w = self.box
            box[:, top : top + box_h, left : left + box_w] = True
        d[self.box_key] = box
        return d


def cutmix(target: torch.Tensor, source: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """``target`` with ``source`` pasted inside ``box``: batches of images ``(B, C, H, W)`` or maps ``(B, H, W)``
    (pseudo-labels, confidences), boxes ``(B, 1, H, W)`` or ``(B, H, W)``, bool or {0, 1}."""
    box = box.bool()
    if box.ndim == target.ndim + 1:
        box = box.squeeze(1)
    elif box.ndim == target.ndim - 1:
        box = box.unsqueeze(1)
    if target.shape != source.shape or box.shape[0] != target.shape[0] or box.shape[-2:] != target.shape[-2:]:
        raise ValueError(
            f"cutmix needs target and source of one shape and a box of their batch and size, got target "
            f"{tuple(target.shape)}, source {tuple(source.shape)}, box {tuple(box.shape)}."
        )
    return torch.where(box, source, target)


def unimatch_strong_views(
    image_key: str = "image",
    strong_keys: Sequence[str] = ("image_s1", "image_s2"),
    box_keys: Sequence[str] = ("box_s1", "box_s2"),
    jitter: Sequence[float] = (0.5, 0.5, 0.5, 0.25),
    jitter_prob: float = 0.8,
    blur_sigma: Sequence[float] = (0.1, 2.0),
    blur_prob: float = 0.5,
    cutmix_prob: float = 0.5,
    area_range: Sequence[float] = (0.02, 0.4),
    aspect_range: Sequence[float] = (0.3, 1 / 0.3),
) -> Compose:
    """Transforms that add the strong views and CutMix boxes of an unlabelled item (module doc).

    Put them after the weak augmentation: ``image_key`` (the weak view, channel-first floats in [0, 1]) is copied
    to each of ``strong_keys``, which is jittered (``jitter`` = brightness, contrast, saturation, hue) and
    blurred independently, and gets its own box under the matching ``box_keys`` entry.
    """
    if len(strong_keys) != len(box_keys):
        raise ValueError(f"one box key per strong view: got {list(strong_keys)} and {list(box_keys)}.")
    if len(jitter) != 4:
        raise ValueError(f"jitter must be (brightness, contrast, saturation, hue), got {list(jitter)}.")
    brightness, contrast, saturation, hue = jitter
    transforms: list[Transform] = [CopyItemsd(image_key, times=len(strong_keys), names=list(strong_keys))]
    for strong_key, box_key in zip(strong_keys, box_keys):
        transforms += [
            RandColorJitterd(strong_key, jitter_prob, brightness, contrast, saturation, hue),
            RandGaussianBlurd(strong_key, blur_prob, blur_sigma),
            RandCutMixBoxd(strong_key, box_key, cutmix_prob, area_range, aspect_range),
        ]
    return Compose(transforms)
