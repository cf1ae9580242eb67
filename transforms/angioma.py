"""Transform pipelines of the CCF BDCI 2021 angioma bundle and the imgaug operations MONAI lacks.

The rank-1 solution augments with imgaug, the same random draw applied to image and mask (its train.py). Here the
same pipeline is built from MONAI transforms with per-key interpolation (image bilinear/bicubic, mask nearest);
intensity operations touch the image only. imgaug -> MONAI:

=====================================================  ===================================================
imgaug (seed)                                          here
=====================================================  ===================================================
``Sequential(random_order=True)`` (top level)          ``RandomOrder``
Fliplr / Flipud p 0.3                                  ``RandFlipd`` (spatial axis 1 / 0), prob 0.3
Sometimes(0.5, Crop percent 0-5 % per side)            ``OneOf`` [``RandScaleCropd`` 90-100 % per axis,
                                                       random centre, + ``Resized`` back; identity]
Sometimes(0.5, Affine scale 0.8-1.2, translate ±20 %,  ``RandAffined`` prob 0.5, same ranges; shear ±5° as
rotate ±10°, shear ±5°, order {0,1}, cval 0-255,       factors tan 5° on both axes; bilinear; zero padding
mode ALL)                                              (random order/cval/border mode not reproduced)
SomeOf((0, 5), random order) of the 7 below            ``SomeOf(num_transforms=(0, 5))`` (random order)
Sharpen alpha 0-1, lightness 0.75-1.25                 :class:`RandSharpend` (imgaug's kernel)
Sometimes(0.5, PiecewiseAffine scale 0.01-0.05)        ``Rand2DElasticd`` prob 0.5, control points every
                                                       size/3 px (imgaug's 4x4 grid), offsets 1-5 % of size
LinearContrast 0.75-1.25                               ``RandScaleIntensityFixedMeand`` factors ±0.25
                                                       (centre = image mean instead of 127.5)
OneOf[GaussianBlur σ 0-3, AverageBlur k 2-7,           ``OneOf`` [``RandGaussianSmoothd`` σ 0-3 (drawn per
MedianBlur k 3-11]                                     axis), :class:`RandKernelBlurd` mean 2-7 / median 3-11]
AdditiveGaussianNoise scale 0-0.05·255                 ``RandGaussianNoised`` std drawn in 0-0.05 (on [0, 1])
OneOf[Dropout 1-10 %, CoarseDropout 3-15 %,            ``OneOf`` [:class:`RandDropoutd` per pixel,
size 2-5 %]                                            :class:`RandDropoutd` on a 2-5 % grid]
Sometimes(0.5, Elastic α 0.5-3.5, σ 0.25)              ``Rand2DElasticd`` prob 0.5, one control point per
                                                       pixel, offsets std α/√3 (σ 0.25 smooths nothing)
=====================================================  ===================================================

Masks are resized with ``"nearest-exact"`` (pixel centres aligned with the image's bicubic resize); the seed's
OpenCV ``INTER_NEAREST`` (torch's ``"nearest"``) shifts mask edges by up to half a source pixel against the image.
The images are resized to ``image_size`` and scaled to [0, 1] *before* augmenting (pixel ranges above are relative
to ``image_size``), and clipped to [0, 1] after it, as imgaug's uint8 arithmetic would. The README calls the
first four "DA" and says "EDA" picks one of the rest; the code picks 0 to 5, which is what is reproduced.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    EnsureTyped,
    Identityd,
    MapTransform,
    OneOf,
    Rand2DElasticd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandomizableTransform,
    RandomOrder,
    RandScaleCropd,
    RandScaleIntensityFixedMeand,
    RemoveSmallObjectsd,
    Resized,
    ScaleIntensityRanged,
    SomeOf,
    Transform,
)
from monai.utils import convert_data_type, convert_to_dst_type
from scipy import ndimage

from transforms.png import LoadGreyPNGd, LoadMaskPNGd
from transforms.postprocessing import EdgeMedianFilterd

__all__ = [
    "RandDropoutd",
    "RandKernelBlurd",
    "RandSharpend",
    "angioma_inference_transforms",
    "angioma_postprocessing",
    "angioma_train_transforms",
    "angioma_val_transforms",
]

IMAGE, LABEL = "image", "label"


def _as_numpy(img: object) -> np.ndarray:
    return convert_data_type(img, np.ndarray)[0]


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


def _clip01(keys: KeysCollection) -> Transform:
    """Clip to [0, 1] (an identity range mapping with clipping)."""
    return ScaleIntensityRanged(keys, a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True)


def _load_resize_scale(image_size: int, with_label: bool) -> list[Transform]:
    keys = [IMAGE, LABEL] if with_label else [IMAGE]
    loaders: list[Transform] = [LoadGreyPNGd(IMAGE)]
    if with_label:
        loaders.append(LoadMaskPNGd(LABEL, reference_key=IMAGE))
    return loaders + [
        Resized(keys, spatial_size=(image_size, image_size), mode=["bicubic", "nearest-exact"][: len(keys)]),
        ScaleIntensityRanged(IMAGE, a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True),
    ]


def _da(image_size: int) -> list[Transform]:
    keys, modes = [IMAGE, LABEL], ["bilinear", "nearest"]
    crop = Compose(
        [
            RandScaleCropd(keys, roi_scale=0.9, max_roi_scale=1.0, random_center=True, random_size=True),
            Resized(keys, spatial_size=(image_size, image_size), mode=["bicubic", "nearest-exact"]),
        ]
    )
    shear = math.tan(math.radians(5.0))
    return [
        RandFlipd(keys, prob=0.3, spatial_axis=1),
        RandFlipd(keys, prob=0.3, spatial_axis=0),
        OneOf([crop, Identityd(keys)], weights=[0.5, 0.5]),
        RandAffined(
            keys,
            prob=0.5,
            rotate_range=math.radians(10.0),
            shear_range=(shear, shear),
            translate_range=(0.2 * image_size, 0.2 * image_size),
            scale_range=(0.2, 0.2),
            mode=modes,
            padding_mode="zeros",
        ),
    ]


def _eda(image_size: int) -> Transform:
    keys, modes = [IMAGE, LABEL], ["bilinear", "nearest"]
    return SomeOf(
        [
            RandSharpend(IMAGE, alpha=(0.0, 1.0), lightness=(0.75, 1.25)),
            Rand2DElasticd(
                keys,
                spacing=image_size / 3.0,
                magnitude_range=(0.01 * image_size, 0.05 * image_size),
                prob=0.5,
                mode=modes,
                padding_mode="zeros",
            ),
            RandScaleIntensityFixedMeand(IMAGE, factors=0.25, fixed_mean=True, preserve_range=True, prob=1.0),
            OneOf(
                [
                    RandGaussianSmoothd(IMAGE, sigma_x=(0.0, 3.0), sigma_y=(0.0, 3.0), prob=1.0),
                    RandKernelBlurd(IMAGE, filter="mean", kernel_size=(2, 7)),
                    RandKernelBlurd(IMAGE, filter="median", kernel_size=(3, 11)),
                ]
            ),
            RandGaussianNoised(IMAGE, prob=1.0, mean=0.0, std=0.05, sample_std=True),
            OneOf(
                [
                    RandDropoutd(IMAGE, fraction=(0.01, 0.1)),
                    RandDropoutd(IMAGE, fraction=(0.03, 0.15), size_fraction=(0.02, 0.05)),
                ]
            ),
            Rand2DElasticd(
                keys,
                spacing=1.0,
                magnitude_range=(0.5 / math.sqrt(3.0), 3.5 / math.sqrt(3.0)),
                prob=0.5,
                mode=modes,
                padding_mode="zeros",
            ),
        ],
        num_transforms=(0, 5),
    )


def angioma_train_transforms(image_size: int = 256, use_da: bool = True, use_eda: bool = True) -> Compose:
    """Training pipeline: load, resize (image bicubic, mask nearest-exact), /255, augment, clip to [0, 1].

    Input items ``{"image": png path, "label": png path, ...}``; output ``"image"`` float ``(1, S, S)`` in
    [0, 1], ``"label"`` float ``(1, S, S)`` in {0, 1}, as plain tensors (the random transforms leave different
    meta histories, which a DataLoader could not collate). ``use_da`` / ``use_eda`` switch the two augmentation
    groups of the README ablation (flips, crop, affine / the ``SomeOf`` group), see the module doc.
    """
    steps = _load_resize_scale(image_size, with_label=True)
    augment = (_da(image_size) if use_da else []) + ([_eda(image_size)] if use_eda else [])
    if augment:
        steps += [RandomOrder(augment), _clip01(IMAGE)]
    return Compose(steps + [EnsureTyped([IMAGE, LABEL], dtype=torch.float32, track_meta=False)])


def angioma_val_transforms(image_size: int = 256) -> Compose:
    """Validation pipeline: load, resize to ``image_size`` (image bicubic, mask nearest-exact), /255; no augmentation.

    Output as :func:`angioma_train_transforms` but as MetaTensors (``Invertd`` can bring predictions back to
    the original size for a Dice at the challenge's resolution).
    """
    return Compose(_load_resize_scale(image_size, with_label=True))


def angioma_inference_transforms(image_size: int = 256) -> Compose:
    """Inference pipeline: load the image, resize to ``image_size`` (bicubic), /255.

    The original ``(H, W)`` stays in ``image.meta["spatial_shape"]`` and the resize in the MetaTensor's applied
    operations, so ``Invertd(keys="pred", transform=<this>, orig_keys="image")`` resizes predictions back.
    """
    return Compose(_load_resize_scale(image_size, with_label=False))


def angioma_postprocessing(keys: KeysCollection = "pred", min_size: int = 51, median_window: int = 19) -> Compose:
    """RSIP then EMF on a thresholded {0, 1} mask ``(1, H, W)`` at the original resolution (postprocess.py, intent).

    Args:
        keys: mask keys.
        min_size: components (8-connected) with fewer pixels are deleted; 51 = the seed's "at most 50 px";
            0 switches the step off.
        median_window: :class:`transforms.postprocessing.EdgeMedianFilterd` window; 1 switches the step off.
    """
    steps: list[Transform] = []
    if min_size > 0:
        steps.append(RemoveSmallObjectsd(keys, min_size=min_size, connectivity=2))
    if median_window > 1:
        steps.append(EdgeMedianFilterd(keys, window=median_window))
    return Compose(steps)
