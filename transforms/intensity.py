"""Intensity transforms MONAI lacks, dictionary versions (``monai.transforms.intensity.dictionary`` style).

They reproduce augmentations of the original solutions that MONAI has no exact counterpart for: MAGNET's
(CSV 2026 carotid, 4th place) brightness/contrast and square cutout, and imgaug's ``Sharpen``,
``AverageBlur``/``MedianBlur`` and ``Dropout``/``CoarseDropout`` used by the CCF BDCI 2021 angioma rank-1 solution
(chaineypung/CCF-BDCI-2021-ULSEG-Rank1st). Each is a ``RandomizableTransform`` + ``MapTransform`` drawing from
``self.R``, so a ``Compose`` seeds it like a MONAI transform.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import convert_data_type, convert_to_dst_type
from scipy import ndimage

__all__ = [
    "RandBrightnessContrastd",
    "RandDropoutd",
    "RandKernelBlurd",
    "RandSharpend",
    "RandSquareCutoutd",
    "ToUnitIntervald",
]


def _as_numpy(img: object) -> np.ndarray:
    return convert_data_type(img, np.ndarray)[0]


class ToUnitIntervald(MapTransform):
    """Divide an image by ``max_value`` when its maximum exceeds 1, as the CSV 2026 loaders do.

    Stored images are uint8-range (0-255); an image already in [0, 1] is left alone.
    """

    def __init__(self, keys: KeysCollection, max_value: float = 255.0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.max_value = max_value

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            if d[key].max() > 1:
                d[key] = d[key] / self.max_value
        return d


class RandBrightnessContrastd(RandomizableTransform, MapTransform):
    """Brightness then contrast about 0.5, clipped to [0, 1]: ``v = clip((v·b − 0.5)·c + 0.5, 0, 1)``.

    ``b ~ U(1 − brightness, 1 + brightness)`` and ``c ~ U(1 − contrast, 1 + contrast)`` are drawn together,
    with one probability for both (MAGNET's ``random_brightness_contrast``); all keys share the draw.
    """

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.5,
        brightness: float = 0.2,
        contrast: float = 0.2,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.brightness = brightness
        self.contrast = contrast
        self.factors = (1.0, 1.0)

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.factors = (
                self.R.uniform(1 - self.brightness, 1 + self.brightness),
                self.R.uniform(1 - self.contrast, 1 + self.contrast),
            )

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        brightness, contrast = self.factors
        for key in self.key_iterator(d):
            d[key] = torch.clamp((d[key] * brightness - 0.5) * contrast + 0.5, 0.0, 1.0)
        return d


class RandSquareCutoutd(RandomizableTransform, MapTransform):
    """Fill 1 to ``max_holes`` holes with ``fill_value``; each hole's height and width are the same fraction
    ``f ~ U(size_range)`` of the image's height and width (a square on a square image), placed uniformly
    inside the image. All keys share the holes (MAGNET's ``coarse_dropout``).
    """

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.2,
        max_holes: int = 1,
        size_range: tuple[float, float] = (0.05, 0.15),
        fill_value: float = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if max_holes < 1:
            raise ValueError(f"max_holes must be at least 1, got {max_holes}")
        self.max_holes = max_holes
        self.size_range = size_range
        self.fill_value = fill_value
        self.holes: list[tuple[slice, slice]] = []

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        super().randomize(None)
        self.holes = []
        if not self._do_transform:
            return
        height, width = spatial_shape
        for _ in range(self.R.randint(1, self.max_holes + 1)):
            fraction = self.R.uniform(*self.size_range)
            hole_h, hole_w = int(height * fraction), int(width * fraction)
            top = self.R.randint(0, max(1, height - hole_h + 1))
            left = self.R.randint(0, max(1, width - hole_w + 1))
            self.holes.append((slice(top, top + hole_h), slice(left, left + hole_w)))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        first = self.first_key(d)
        if first == ():
            return d
        self.randomize(d[first].shape[-2:])
        if not self.holes:
            return d
        for key in self.key_iterator(d):
            out = d[key].clone()
            for rows, cols in self.holes:
                out[..., rows, cols] = self.fill_value
            d[key] = out
        return d


class RandSharpend(RandomizableTransform, MapTransform):
    """imgaug ``Sharpen``: convolve with ``(1 - a) * identity + a * [[-1,-1,-1], [-1, 8 + L, -1], [-1,-1,-1]]``.

    ``a`` (alpha) and ``L`` (lightness) are drawn per call; the kernel sums to ``L``, so lightness also scales the
    brightness. 2D channel-first images; borders reflected as OpenCV's ``filter2D`` does (reflect-101).

    Args:
        keys: image keys.
        alpha: range of the blend between the image (0) and its sharpened version (1).
        lightness: range of the centre weight offset (1 keeps the mean brightness).
        prob: probability of applying.
        allow_missing_keys: skip missing keys instead of raising.
    """

    def __init__(
        self,
        keys: KeysCollection,
        alpha: tuple[float, float] = (0.0, 1.0),
        lightness: tuple[float, float] = (0.75, 1.25),
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.alpha = alpha
        self.lightness = lightness
        self._kernel = torch.zeros(3, 3)

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        alpha, lightness = self.R.uniform(*self.alpha), self.R.uniform(*self.lightness)
        effect = -torch.ones(3, 3, dtype=torch.float64)
        effect[1, 1] = 8 + lightness
        identity = torch.zeros(3, 3, dtype=torch.float64)
        identity[1, 1] = 1
        self._kernel = ((1 - alpha) * identity + alpha * effect).float()

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            img = d[key]
            x = convert_data_type(img, torch.Tensor, dtype=torch.float32)[0]
            if x.ndim != 3:
                raise ValueError(f"{key}: RandSharpend expects a 2D image (C, H, W), got shape {tuple(x.shape)}")
            x = torch.as_tensor(x)[:, None]
            out = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self._kernel.to(x.device)[None, None])[:, 0]
            d[key] = convert_to_dst_type(out, img)[0]
        return d


class RandKernelBlurd(RandomizableTransform, MapTransform):
    """imgaug ``AverageBlur`` / ``MedianBlur``: a box mean or a median over a square window of random size.

    The window width is drawn per call, uniformly among the integers of ``kernel_size`` (only the odd ones for
    the median). Each channel is filtered alone, borders reflected as OpenCV does (reflect-101).

    Args:
        keys: image keys (channel-first, any number of spatial dims).
        filter: ``"mean"`` or ``"median"``.
        kernel_size: inclusive range of the window width in pixels.
        prob: probability of applying.
        allow_missing_keys: skip missing keys instead of raising.
    """

    def __init__(
        self,
        keys: KeysCollection,
        filter: str = "mean",
        kernel_size: tuple[int, int] = (2, 7),
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if filter not in ("mean", "median"):
            raise ValueError(f"filter must be 'mean' or 'median', got {filter!r}")
        sizes = [k for k in range(int(kernel_size[0]), int(kernel_size[1]) + 1) if filter == "mean" or k % 2 == 1]
        if not sizes or sizes[0] < 1:
            raise ValueError(f"no valid {filter} window width in {kernel_size}")
        self.filter = filter
        self.sizes = sizes
        self._size = sizes[0]

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self._size = int(self.R.choice(self.sizes))

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            img = d[key]
            array = _as_numpy(img)
            size = (1,) + (self._size,) * (array.ndim - 1)
            if self.filter == "mean":
                out = ndimage.uniform_filter(array.astype(np.float32), size=size, mode="mirror")
            else:
                out = ndimage.median_filter(array, size=size, mode="mirror")
            d[key] = convert_to_dst_type(out, img)[0]
        return d


class RandDropoutd(RandomizableTransform, MapTransform):
    """imgaug ``Dropout`` / ``CoarseDropout``: set a random fraction of pixels, or of coarse cells, to 0.

    A fraction ``p`` is drawn in ``fraction``; each pixel (``size_fraction=None``) is dropped with probability
    ``p``. With ``size_fraction`` the decision is made on a coarse grid whose side is a drawn fraction of the image
    side (at least ``min_cells``) and stretched to the image with nearest neighbour, which drops rectangles.
    All channels share the drop mask.

    Args:
        keys: image keys (channel-first, any number of spatial dims).
        fraction: range of the dropped fraction.
        size_fraction: range of the coarse grid's relative size (imgaug ``size_percent``), ``None`` = per pixel.
        min_cells: smallest coarse grid side (imgaug ``min_size``).
        prob: probability of applying.
        allow_missing_keys: skip missing keys instead of raising.
    """

    def __init__(
        self,
        keys: KeysCollection,
        fraction: tuple[float, float] = (0.01, 0.1),
        size_fraction: tuple[float, float] | None = None,
        min_cells: int = 3,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.fraction = fraction
        self.size_fraction = size_fraction
        self.min_cells = min_cells
        self._keep = np.ones((1,), dtype=bool)

    def randomize(self, spatial_shape: Sequence[int] | None = None) -> None:  # type: ignore[override]
        super().randomize(None)
        if not self._do_transform or spatial_shape is None:
            return
        p = self.R.uniform(*self.fraction)
        if self.size_fraction is None:
            grid = tuple(spatial_shape)
        else:
            s = self.R.uniform(*self.size_fraction)
            grid = tuple(max(self.min_cells, int(round(s * n))) for n in spatial_shape)
        keep = self.R.random_sample(grid) >= p
        index = [np.arange(n) * g // n for n, g in zip(spatial_shape, grid)]
        self._keep = keep[np.ix_(*index)]

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        first = next(self.key_iterator(d), None)
        if first is None:
            return d
        self.randomize(tuple(d[first].shape[1:]))  # type: ignore[attr-defined]
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            img = d[key]
            keep, *_ = convert_to_dst_type(self._keep[None], img)
            d[key] = img * keep  # type: ignore[operator]
        return d
