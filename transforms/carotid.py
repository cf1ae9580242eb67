"""CSV 2026 carotid pipelines: reading the two-view h5 cases and MAGNET's augmentations, built from MONAI transforms.

The builders return a flat MONAI ``Compose`` (so that a ``CacheDataset`` caches everything up to the first
random transform) and can be called from a bundle config, e.g.
``{"_target_": "transforms.carotid.carotid_train_transforms", "image_size": 512}``.

Input items are ``{"case": "0000", "image": "<...>/images/0000.h5", "label": "<...>/labels/0000_label.h5"}``
(``data.csv2026``). Each view is read under its own key (``long_img``/``trans_img``, ``long_mask``/
``trans_mask``), resized, augmented **independently per view** (separate transform instances, as MAGNET
calls its helpers once per view), and finally stacked into the contract of CONTRIBUTING.md:
``"image"`` float (2, H, W) in [0, 1] = [long, trans], ``"label"`` int64 (2, H, W) with 0 background /
1 plaque / 2 vessel, ``"cls"`` float (1,); unlabelled cases carry ``"image"`` (weak, unaugmented) and
``"image_strong"``. ``"case"`` passes through.

Mapping of MAGNET's augmentation (lyyek/CSV2026, labelled) onto MONAI, and where it deviates:

* Augmentation runs at ``image_size`` right after resizing, not at 512 before a final resize; pixel-valued
  recipe parameters (elastic α, σ) are given at ``reference_size`` (512, the organisers' size) and scaled.
* hflip p .5: ``RandFlipd(spatial_axis=1)`` (the width axis of (C, H, W)).
* affine p .8: ``RandAffined`` rotate ±15°, translate ±10 % of each side, zero padding, bilinear image /
  nearest mask. MONAI draws the scale of each axis independently (0.9-1.1 each; PIL's was isotropic) and its
  shear is a factor: ±sin 5° on the width axis, the shear PIL's matrix applies.
* crop-resize p .5, side fraction U(.75, 1): ``RandZoomd(keep_size=False)`` by z ~ U(1, 1/.75) followed by a
  ``RandSpatialCropd`` of ``image_size`` at a random position, i.e. a crop of side 1/z at a random place,
  resized back (the side fraction is 1/U(1, 1.33) instead of U(.75, 1)).
* elastic p .1 (α 10, σ 6) and "grid distortion" p .05 (α = .03·512, σ = 5): ``Rand2DElasticd`` with
  control points every 2σ px and a per-point offset of the recipe field's RMS, α·sqrt(1/3) / (2·sqrt(π)·σ)
  (0.27 px and 0.50 px at 512: both are sub-pixel jitter, as in the original).
* brightness ×U(.8, 1.2) then contrast about 0.5 ×U(.8, 1.2) p .5 (one draw for both, clipped):
  :class:`RandBrightnessContrastd` (MONAI has no contrast about a fixed point).
* gamma U(.7, 1.3) p .5: ``RandAdjustContrastd``, which normalises by the image's own min/max first; equal to
  x**γ when the image spans [0, 1], as the zero padding and the white watermark of these images make it.
* noise σ .05 p .5: ``RandGaussianNoised(sample_std=False)``, then clipped to [0, 1] as the original does.
* blur radius U(.1, 1.5) p .2: ``RandGaussianSmoothd``, which draws σ of each axis independently (PIL's
  blur is isotropic).
* cutout p .2, 1 hole of side U(.05, .15)·size, fill 0, image only: :class:`RandSquareCutoutd` (MONAI's
  ``RandCoarseDropoutd`` draws each side independently). Final clip to [0, 1].

Quirk not reproduced: MAGNET's PIL helper turns a {0, 1}-only mask into {0, 255} (lyyek/CSV2026).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import (
    CastToTyped,
    Compose,
    ConcatItemsd,
    CopyItemsd,
    DeleteItemsd,
    MapLabelValued,
    MapTransform,
    Rand2DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandomizableTransform,
    RandSpatialCropd,
    RandZoomd,
    Resized,
    ScaleIntensityRanged,
    Transform,
)
from monai.utils import ensure_tuple, ensure_tuple_rep

from transforms.io import LoadH5d
from transforms.label import CheckLabelValuesd

__all__ = [
    "CLASS_LABELS",
    "IMAGE_KEYS",
    "MASK_KEYS",
    "STORED_LABELS",
    "STRONG_KEYS",
    "RandBrightnessContrastd",
    "RandSquareCutoutd",
    "ToUnitIntervald",
    "carotid_load_transforms",
    "carotid_strong_augmentation",
    "carotid_train_transforms",
    "carotid_unlabelled_transforms",
    "carotid_val_transforms",
]

IMAGE_KEYS = ("long_img", "trans_img")
MASK_KEYS = ("long_mask", "trans_mask")
STRONG_KEYS = ("long_img_strong", "trans_img_strong")
STORED_LABELS = (0, 128, 255)  # on disk: background, plaque, vessel
CLASS_LABELS = (0, 1, 2)  # class indices used by MAGNET and the official baseline: 1 plaque, 2 vessel


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


def _clip(keys: KeysCollection) -> ScaleIntensityRanged:
    """Clip to [0, 1] (an identity intensity mapping with ``clip=True``)."""
    return ScaleIntensityRanged(keys, a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True)


def _elastic_control_grid(alpha: float, sigma: float, scale: float) -> tuple[int, tuple[float, float]]:
    """``Rand2DElastic`` spacing and magnitude mimicking a scipy-style elastic field (α, σ in reference pixels).

    The original field is U(−1, 1) noise smoothed by a Gaussian of σ and multiplied by α: its RMS is
    α·sqrt(1/3)/(2·sqrt(π)·σ) and its correlation falls to one half at about 1.7σ. Bicubic interpolation of
    N(0, m²) offsets on control points every 2σ gives about the same RMS and correlation length.
    """
    rms = alpha * math.sqrt(1.0 / 3.0) / (2.0 * math.sqrt(math.pi) * sigma) * scale
    return max(1, round(2 * sigma * scale)), (rms, rms)


def carotid_load_transforms(labelled: bool = True) -> Compose:
    """Read a case: ``long_img``/``trans_img`` (1, H, W) float in [0, 1] from ``data["image"]`` and, when
    ``labelled``, ``long_mask``/``trans_mask`` (1, H, W) class indices 0/1/2 and ``cls`` (1,) from
    ``data["label"]``. A mask value other than 0/128/255 raises, naming the file.
    """
    transforms: list[Transform] = [LoadH5d("image", datasets=IMAGE_KEYS), ToUnitIntervald(IMAGE_KEYS)]
    if labelled:
        transforms += [
            LoadH5d("label", datasets=(*MASK_KEYS, "cls"), expected_ndim=(2, 2, 0)),
            CheckLabelValuesd(MASK_KEYS, allowed=STORED_LABELS),
            MapLabelValued(MASK_KEYS, orig_labels=STORED_LABELS, target_labels=CLASS_LABELS),
        ]
    return Compose(transforms)


def _load_and_resize(labelled: bool, spatial_size: tuple[int, int]) -> list[Transform]:
    keys = (*IMAGE_KEYS, *MASK_KEYS) if labelled else IMAGE_KEYS
    modes = ("bilinear",) * len(IMAGE_KEYS) + ("nearest",) * (len(keys) - len(IMAGE_KEYS))
    return [*carotid_load_transforms(labelled).transforms, Resized(keys, spatial_size=spatial_size, mode=modes)]


def _stack(labelled: bool, drop: Sequence[str]) -> list[Transform]:
    """Stack the views into ``"image"`` (and ``"label"`` int64), then delete the per-view keys ``drop``."""
    transforms: list[Transform] = [ConcatItemsd(IMAGE_KEYS, name="image")]
    if labelled:
        transforms += [ConcatItemsd(MASK_KEYS, name="label"), CastToTyped("label", dtype=torch.int64)]
    return transforms + [DeleteItemsd(drop)] if drop else transforms


def carotid_val_transforms(image_size: int | Sequence[int] = 512, labelled: bool = True) -> Compose:
    """Validation / inference: read, resize to ``image_size`` (image bilinear, mask nearest), stack.

    ``labelled=False`` reads images only (inference on new cases). The resized per-view images
    ``long_img``/``trans_img`` are kept: their meta ``spatial_shape`` is the size on disk, which the
    post-processing needs to bring the predictions back to it.
    """
    spatial_size = ensure_tuple_rep(image_size, 2)
    return Compose(_load_and_resize(labelled, spatial_size) + _stack(labelled, drop=MASK_KEYS if labelled else ()))


def carotid_train_transforms(
    image_size: int | Sequence[int] = 512,
    flip_prob: float = 0.5,
    affine_prob: float = 0.8,
    rotate_degrees: float = 15.0,
    translate_fraction: float = 0.1,
    scale_range: tuple[float, float] = (0.9, 1.1),
    shear_degrees: float = 5.0,
    crop_prob: float = 0.5,
    crop_fraction_range: tuple[float, float] = (0.75, 1.0),
    elastic_prob: float = 0.1,
    elastic_alpha: float = 10.0,
    elastic_sigma: float = 6.0,
    grid_distortion_prob: float = 0.05,
    grid_distortion_limit: float = 0.03,
    brightness_contrast_prob: float = 0.5,
    brightness_range: float = 0.2,
    contrast_range: float = 0.2,
    gamma_prob: float = 0.5,
    gamma_range: tuple[float, float] = (0.7, 1.3),
    noise_prob: float = 0.5,
    noise_std: float = 0.05,
    blur_prob: float = 0.2,
    blur_sigma_range: tuple[float, float] = (0.1, 1.5),
    cutout_prob: float = 0.2,
    cutout_max_holes: int = 1,
    cutout_size_range: tuple[float, float] = (0.05, 0.15),
    reference_size: int = 512,
) -> Compose:
    """Labelled training pipeline: read, resize, MAGNET's augmentation (lyyek/CSV2026) per view, stack.

    Defaults are the recipe's (see the module docstring for the MONAI transform of each step). Geometric
    steps move image and mask together; intensity steps touch the image only.

    Args:
        image_size: training size (H, W) or one int for both.
        flip_prob: horizontal flip probability.
        affine_prob, rotate_degrees, translate_fraction, scale_range, shear_degrees: random affine;
            rotation ±degrees, translation ±fraction of each side, per-axis scale range, shear ±degrees.
        crop_prob, crop_fraction_range: random crop of side fraction in the range, resized back.
        elastic_prob, elastic_alpha, elastic_sigma: elastic deformation, α and σ in pixels at
            ``reference_size``.
        grid_distortion_prob, grid_distortion_limit: MAGNET's "grid distortion", an elastic deformation with
            α = limit·reference_size and σ = max(2, 0.01·reference_size).
        brightness_contrast_prob, brightness_range, contrast_range: :class:`RandBrightnessContrastd`.
        gamma_prob, gamma_range: gamma correction.
        noise_prob, noise_std: additive Gaussian noise of fixed σ.
        blur_prob, blur_sigma_range: Gaussian blur, σ range in pixels.
        cutout_prob, cutout_max_holes, cutout_size_range: :class:`RandSquareCutoutd`.
        reference_size: the resolution the pixel-valued elastic parameters refer to (the organisers' 512).
    """
    spatial_size = ensure_tuple_rep(image_size, 2)
    scale = max(spatial_size) / reference_size
    elastic = _elastic_control_grid(elastic_alpha, elastic_sigma, scale)
    grid = _elastic_control_grid(
        grid_distortion_limit * reference_size, max(2, int(0.01 * reference_size)), scale
    )
    shear = math.sin(math.radians(shear_degrees))
    scale_delta = (scale_range[0] - 1.0, scale_range[1] - 1.0)
    modes = ("bilinear", "nearest")
    transforms = _load_and_resize(True, spatial_size)
    for image_key, mask_key in zip(IMAGE_KEYS, MASK_KEYS):
        keys = (image_key, mask_key)
        transforms += [
            RandFlipd(keys, prob=flip_prob, spatial_axis=1),
            RandAffined(
                keys,
                prob=affine_prob,
                rotate_range=math.radians(rotate_degrees),
                shear_range=(0.0, shear),
                translate_range=tuple(translate_fraction * s for s in spatial_size),
                scale_range=(scale_delta, scale_delta),
                mode=modes,
                padding_mode="zeros",
            ),
            RandZoomd(
                keys,
                prob=crop_prob,
                min_zoom=1.0 / crop_fraction_range[1],
                max_zoom=1.0 / crop_fraction_range[0],
                mode=modes,
                keep_size=False,
            ),
            RandSpatialCropd(keys, roi_size=spatial_size, random_size=False),
            Rand2DElasticd(keys, *elastic, prob=elastic_prob, mode=modes, padding_mode="reflection"),
            Rand2DElasticd(keys, *grid, prob=grid_distortion_prob, mode=modes, padding_mode="reflection"),
            RandBrightnessContrastd(
                image_key, prob=brightness_contrast_prob, brightness=brightness_range, contrast=contrast_range
            ),
            RandAdjustContrastd(image_key, prob=gamma_prob, gamma=gamma_range),
            RandGaussianNoised(image_key, prob=noise_prob, std=noise_std, sample_std=False),
            _clip(image_key),
            RandGaussianSmoothd(image_key, sigma_x=blur_sigma_range, sigma_y=blur_sigma_range, prob=blur_prob),
            RandSquareCutoutd(image_key, prob=cutout_prob, max_holes=cutout_max_holes, size_range=cutout_size_range),
            _clip(image_key),
        ]
    return Compose(transforms + _stack(True, drop=(*IMAGE_KEYS, *MASK_KEYS)))


def carotid_strong_augmentation(
    keys: KeysCollection,
    brightness_contrast_prob: float = 0.95,
    brightness_range: float = 0.3,
    contrast_range: float = 0.3,
    gamma_prob: float = 0.95,
    gamma_range: tuple[float, float] = (0.8, 1.2),
    noise_prob: float = 0.75,
    noise_max_std: float = 0.04,
    blur_prob: float = 0.15,
    blur_sigma_range: tuple[float, float] = (0.2, 1.8),
    cutout_prob: float = 0.5,
    cutout_max_holes: int = 3,
    cutout_size_range: tuple[float, float] = (0.05, 0.15),
) -> Compose:
    """Mean Teacher student input (lyyek/CSV2026 train.py): intensity-only, pixel-aligned, each key drawn independently.

    Brightness ×U(.7, 1.3) and contrast about 0.5 ×U(.7, 1.3) (p .95), gamma U(.8, 1.2) (p .95), Gaussian
    noise (p .75), blur σ U(.2, 1.8) per axis (p .15), 1-3 square holes of side U(.05, .15)·size filled 0
    (p .5), clipped to [0, 1]. Deviation: MONAI draws the noise σ from U(0, ``noise_max_std``); the recipe
    draws U(0.01, 0.04).
    """
    transforms: list[Transform] = []
    for key in ensure_tuple(keys):
        transforms += [
            RandBrightnessContrastd(
                key, prob=brightness_contrast_prob, brightness=brightness_range, contrast=contrast_range
            ),
            RandAdjustContrastd(key, prob=gamma_prob, gamma=gamma_range),
            RandGaussianNoised(key, prob=noise_prob, std=noise_max_std, sample_std=True),
            _clip(key),
            RandGaussianSmoothd(key, sigma_x=blur_sigma_range, sigma_y=blur_sigma_range, prob=blur_prob),
            RandSquareCutoutd(key, prob=cutout_prob, max_holes=cutout_max_holes, size_range=cutout_size_range),
            _clip(key),
        ]
    return Compose(transforms)


def carotid_unlabelled_transforms(image_size: int | Sequence[int] = 512, **strong: Any) -> Compose:
    """Unlabelled Mean Teacher pipeline: ``"image"`` = the resized, unaugmented views (teacher input, MAGNET's
    ``unlabeled_use_geometry=False``) and ``"image_strong"`` = the same pixels after
    :func:`carotid_strong_augmentation` (student input), each view augmented independently.

    Args:
        image_size: training size (H, W) or one int for both.
        strong: keyword arguments of :func:`carotid_strong_augmentation` (probabilities and ranges).
    """
    spatial_size = ensure_tuple_rep(image_size, 2)
    transforms = _load_and_resize(False, spatial_size)
    transforms += [
        CopyItemsd(IMAGE_KEYS, times=1, names=STRONG_KEYS),
        *carotid_strong_augmentation(STRONG_KEYS, **strong).transforms,
        ConcatItemsd(STRONG_KEYS, name="image_strong"),
        DeleteItemsd(STRONG_KEYS),
    ]
    return Compose(transforms + _stack(False, drop=IMAGE_KEYS))
