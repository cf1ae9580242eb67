"""Intensity transforms MONAI lacks, dictionary versions (``monai.transforms.intensity.dictionary`` style).

They reproduce augmentations of the original solutions that MONAI has no exact counterpart for: MAGNET's
(CSV 2026 carotid, 4th place) brightness/contrast, gamma, noise of a random strength and square cutout, and imgaug's ``Sharpen``,
``AverageBlur``/``MedianBlur`` and ``Dropout``/``CoarseDropout`` used by the CCF BDCI 2021 angioma rank-1 solution
(chaineypung/CCF-BDCI-2021-ULSEG-Rank1st). Each is a ``RandomizableTransform`` + ``MapTransform`` drawing from
``self.R``, so a ``Compose`` seeds it like a MONAI transform.

Photometric augmentations of the FUGC 2025 7th-place solution (apuomline/FUGC2025_7th_solution) and UniMatch
(LiheYoung/UniMatch), on channel-first float images in [0, 1]: :class:`RandColorJitterd` (torchvision
``ColorJitter`` semantics: brightness, contrast about the grey mean, saturation and hue in a random order; MONAI has
no contrast about the mean, no saturation and no hue) and :class:`RandGaussianBlurd` (one sigma for every axis and
edge pixels repeated, as PIL's ``GaussianBlur``; MONAI's ``RandGaussianSmooth`` draws each axis' sigma and pads with
zeros, which darkens the border). The originals work on 8-bit PIL images and round every step; these do not round.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any
from monai.config import KeysCollection
from monai.data import get_track_meta
from monai.networks.layers import gaussian_1d, separable_filtering
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import convert_data_type, convert_to_dst_type, convert_to_tensor
import numpy as np
from scipy import ndimage
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

__all__ = [
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "grey",
    "GREY_WEIGHTS",
    "hsv_to_rgb",
    "RandBrightnessContrastd",
    "RandColorJitterd",
    "RandDropoutd",
    "RandGammad",
    "RandGaussianBlurd",
    "RandGaussianNoiseStdRanged",
    "RandKernelBlurd",
    "RandSharpend",
    "RandSquareCutoutd",
    "rgb_to_hsv",
    "ToUnitIntervald",
]


def _as_numpy(img: object) -> np.ndarray:
    return convert_data_type(img, np.ndarray)[0]


class ToUnitIntervald(MapTransform):
    """Bring a stored image to [0, 1]: divided by ``max_value`` as the CSV 2026 loaders do, or by its own range.

    The rule, per image: values already in [0, 1] are left alone; values in [0, ``max_value``] (the challenge's
    uint8 images, 0-255) are divided by ``max_value``; values outside it (int16 with negative values, 16-bit
    0..65535) are rescaled by their own range, ``(v - min) / (max - min)`` (a constant image gives 0), with a
    warning naming the file, since dividing them by 255 would leave them far outside [0, 1].
    """

    def __init__(self, keys: KeysCollection, max_value: float = 255.0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.max_value = max_value

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            low, high = float(d[key].min()), float(d[key].max())
            if low < 0 or high > self.max_value:
                meta = getattr(d[key], "meta", {})
                logger.warning(
                    "%s (%s): values [%g, %g] outside 0..%g; rescaled by their own range to [0, 1]",
                    meta.get("filename_or_obj", "image"), meta.get("h5_dataset", key), low, high, self.max_value,
                )
                d[key] = (d[key] - low) / (high - low) if high > low else d[key] * 0
            elif high > 1:
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


class RandGammad(RandomizableTransform, MapTransform):
    """Gamma ``v = clip(v, 0, 1) ** g``, ``g ~ U(gamma_range)``, on images in [0, 1] (MAGNET's ``random_gamma``,
    lyyek/CSV2026 dataset/transform.py); all keys share the draw.

    MONAI's ``RandAdjustContrastd`` rescales by the image's own min and max before and after the power, which
    equals ``v ** g`` only for an image spanning exactly [0, 1]; after a brightness/contrast change it does not.
    """

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.5,
        gamma_range: tuple[float, float] = (0.7, 1.3),
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        low, high = gamma_range
        if not 0 < low <= high:
            raise ValueError(f"gamma_range must be (low, high) with 0 < low <= high, got {gamma_range}")
        self.gamma_range = (float(low), float(high))
        self.gamma = 1.0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.gamma = self.R.uniform(*self.gamma_range)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            d[key] = torch.clamp(d[key], 0.0, 1.0) ** self.gamma
        return d


class RandGaussianNoiseStdRanged(RandomizableTransform, MapTransform):
    """Add Gaussian noise ``N(mean, s)`` with its standard deviation drawn as ``s ~ U(std_range)`` (MAGNET's
    strong Mean Teacher augmentation draws ``s`` from U(0.01, 0.04), lyyek/CSV2026 dataset/transform.py).

    MONAI's ``RandGaussianNoised(sample_std=True)`` draws ``s`` from U(0, std) only. Each key gets its own noise
    of the shared ``s``; values are not clipped (follow with a clip, as MAGNET does).
    """

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.5,
        std_range: tuple[float, float] = (0.01, 0.04),
        mean: float = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        low, high = std_range
        if not 0 <= low <= high:
            raise ValueError(f"std_range must be (low, high) with 0 <= low <= high, got {std_range}")
        self.std_range = (float(low), float(high))
        self.mean = mean
        self.std = 0.0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.std = self.R.uniform(*self.std_range)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            image = convert_to_tensor(d[key], track_meta=get_track_meta())
            noise = self.R.normal(self.mean, self.std, size=tuple(image.shape)).astype(np.float32)
            d[key] = image + convert_to_dst_type(noise, image)[0]
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

GREY_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R 601-2 luma weights of R, G, B (PIL's and torchvision's greyscale conversion)."""


def _check_channels(image: torch.Tensor) -> int:
    if image.ndim < 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"colour jitter needs a channel-first image with 1 or 3 channels, got {tuple(image.shape)}.")
    return image.shape[0]


def grey(image: torch.Tensor) -> torch.Tensor:
    """Greyscale ``(1, ...)`` of a channel-first RGB or grey image."""
    if _check_channels(image) == 1:
        return image
    r, g, b = image[0], image[1], image[2]
    return (GREY_WEIGHTS[0] * r + GREY_WEIGHTS[1] * g + GREY_WEIGHTS[2] * b).unsqueeze(0)


def _blend(image: torch.Tensor, other: torch.Tensor | float, factor: float) -> torch.Tensor:
    return torch.clamp(factor * image + (1.0 - factor) * other, 0.0, 1.0)


def adjust_brightness(image: torch.Tensor, factor: float) -> torch.Tensor:
    """``clip(image * factor)``: a blend with black."""
    return _blend(image, 0.0, factor)


def adjust_contrast(image: torch.Tensor, factor: float) -> torch.Tensor:
    """A blend with the mean of the image's greyscale (one value for the whole image)."""
    return _blend(image, grey(image).mean(), factor)


def adjust_saturation(image: torch.Tensor, factor: float) -> torch.Tensor:
    """A blend with the image's greyscale, pixel by pixel; a grey (1-channel) image is returned unchanged."""
    if _check_channels(image) == 1:
        return image
    return _blend(image, grey(image), factor)


def rgb_to_hsv(image: torch.Tensor) -> torch.Tensor:
    """Hue, saturation, value ``(3, ...)`` in [0, 1] of an RGB image ``(3, ...)`` in [0, 1] (hue 0 where grey)."""
    r, g, b = image[0], image[1], image[2]
    value, _ = image.max(0)
    delta = value - image.min(0).values
    saturation = torch.where(value > 0, delta / torch.where(value > 0, value, 1.0), 0.0)
    safe = torch.where(delta > 0, delta, 1.0)
    hue = torch.where(
        value == r, ((g - b) / safe) % 6.0, torch.where(value == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0)
    )
    hue = torch.where(delta > 0, hue / 6.0, 0.0) % 1.0
    return torch.stack([hue, saturation, value])


def hsv_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """RGB ``(3, ...)`` of a hue, saturation, value image ``(3, ...)`` in [0, 1]."""
    hue, saturation, value = image[0], image[1], image[2]
    sector = torch.floor(hue * 6.0)
    fraction = hue * 6.0 - sector
    sector = sector.long() % 6
    p = value * (1.0 - saturation)
    q = value * (1.0 - saturation * fraction)
    t = value * (1.0 - saturation * (1.0 - fraction))
    # (r, g, b) of each of the six hue sectors
    table = torch.stack(
        [
            torch.stack([value, t, p]),
            torch.stack([q, value, p]),
            torch.stack([p, value, t]),
            torch.stack([p, q, value]),
            torch.stack([t, p, value]),
            torch.stack([value, p, q]),
        ]
    )
    return torch.gather(table, 0, sector.expand(1, 3, *sector.shape)).squeeze(0)


def adjust_hue(image: torch.Tensor, shift: float) -> torch.Tensor:
    """Rotate the hue by ``shift`` turns (in [-0.5, 0.5]); a grey (1-channel) image is returned unchanged."""
    if _check_channels(image) == 1:
        return image
    hsv = rgb_to_hsv(image)
    hsv = torch.stack([(hsv[0] + shift) % 1.0, hsv[1], hsv[2]])
    return hsv_to_rgb(hsv).clamp(0.0, 1.0)


def _factor_range(name: str, value: float, centre: float, bound: float | None = None) -> tuple[float, float]:
    if value < 0 or (bound is not None and value > bound):
        limit = f"[0, {bound}]" if bound is not None else ">= 0"
        raise ValueError(f"{name} must be in {limit}, got {value}.")
    return (max(0.0, centre - value), centre + value) if centre else (-value, value)


class RandColorJitterd(RandomizableTransform, MapTransform):
    """torchvision ``ColorJitter(brightness, contrast, saturation, hue)`` with probability ``prob``.

    Factors are drawn as torchvision does: brightness, contrast and saturation ``~ U(max(0, 1 - v), 1 + v)``, the
    hue shift ``~ U(-hue, hue)`` (turns of the colour wheel), and the four adjustments are applied in a random
    order (each clipped to [0, 1]). A value of 0 leaves that adjustment out. Images are channel-first floats in
    [0, 1] with 3 (RGB) or 1 channel; saturation and hue leave a 1-channel image unchanged. All keys share one
    draw; use one instance per independently augmented view.
    """

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 1.0,
        brightness: float = 0.0,
        contrast: float = 0.0,
        saturation: float = 0.0,
        hue: float = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.ranges = {
            "brightness": _factor_range("brightness", brightness, 1.0),
            "contrast": _factor_range("contrast", contrast, 1.0),
            "saturation": _factor_range("saturation", saturation, 1.0),
            "hue": _factor_range("hue", hue, 0.0, bound=0.5),
        }
        self.amounts = {"brightness": brightness, "contrast": contrast, "saturation": saturation, "hue": hue}
        self.operations: list[tuple[str, float]] = []

    _ADJUST = {
        "brightness": adjust_brightness,
        "contrast": adjust_contrast,
        "saturation": adjust_saturation,
        "hue": adjust_hue,
    }

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self.operations = []
        if not self._do_transform:
            return
        names = list(self.ranges)
        for index in self.R.permutation(len(names)):
            name = names[index]
            if self.amounts[name] > 0:
                self.operations.append((name, float(self.R.uniform(*self.ranges[name]))))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self.operations:
            return d
        for key in self.key_iterator(d):
            image = convert_to_tensor(d[key], track_meta=get_track_meta(), dtype=torch.float32)
            for name, factor in self.operations:
                image = self._ADJUST[name](image, factor)
            d[key] = image
        return d


class RandGaussianBlurd(RandomizableTransform, MapTransform):
    """Gaussian blur with probability ``prob``, one ``sigma ~ U(sigma_range)`` (pixels) for all spatial axes.

    Channel-first images, every channel blurred alike; the kernel is MONAI's sampled-erf Gaussian truncated at
    ``truncated`` sigmas and renormalised to sum 1, and edge pixels are repeated beyond the border (PIL's
    ``GaussianBlur``). All keys share one draw.
    """

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.5,
        sigma_range: Sequence[float] = (0.1, 2.0),
        truncated: float = 4.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if len(sigma_range) != 2 or not 0 < sigma_range[0] <= sigma_range[1]:
            raise ValueError(f"sigma_range must be (low, high) with 0 < low <= high, got {sigma_range}.")
        self.sigma_range = (float(sigma_range[0]), float(sigma_range[1]))
        self.truncated = truncated
        self.sigma = 0.0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.sigma = float(self.R.uniform(*self.sigma_range))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            image = convert_to_tensor(d[key], track_meta=get_track_meta(), dtype=torch.float32)
            kernel = gaussian_1d(torch.tensor(self.sigma), truncated=self.truncated, approx="erf")
            kernel = (kernel / kernel.sum()).to(image.device)  # the truncated tails' mass back, as PIL's sums to 1
            blurred = separable_filtering(image.unsqueeze(0), [kernel] * (image.ndim - 1), mode="replicate")
            d[key] = blurred.squeeze(0)
        return d
