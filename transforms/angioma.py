"""Post-processing of the CCF BDCI 2021 angioma rank-1 solution (chaineypung/CCF-BDCI-2021-ULSEG-Rank1st).

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

Masks are resized with ``"nearest-exact"`` (pixel centres aligned with the image's bicubic resize); the rank-1 solution's
OpenCV ``INTER_NEAREST`` (torch's ``"nearest"``) shifts mask edges by up to half a source pixel against the image.
The images are resized to ``image_size`` and scaled to [0, 1] *before* augmenting (pixel ranges above are relative
to ``image_size``), and clipped to [0, 1] after it, as imgaug's uint8 arithmetic would. The README calls the
first four "DA" and says "EDA" picks one of the rest; the code picks 0 to 5, which is what is reproduced.
=======
Its augmentation (imgaug DA / EDA) is listed transform by transform in the bundle's ``configs/train.json``; the
mapping of each imgaug operation onto a MONAI (or :mod:`transforms.intensity`) transform is in the bundle's
``docs/README.md``.
"""

from __future__ import annotations

from monai.config import KeysCollection
from monai.transforms import Compose, RemoveSmallObjectsd, Transform

from transforms.postprocessing import EdgeMedianFilterd

__all__ = ["angioma_postprocessing"]


def angioma_postprocessing(keys: KeysCollection = "pred", min_size: int = 51, median_window: int = 19) -> Compose:
    """RSIP then EMF on a thresholded {0, 1} mask ``(1, H, W)`` at the original resolution (the rank-1 solution's intent).

    Args:
        keys: mask keys.
        min_size: components (8-connected) with fewer pixels are deleted; 51 = the rank-1 solution's "at most 50 px";
            0 switches the step off.
        median_window: :class:`transforms.postprocessing.EdgeMedianFilterd` window; 1 switches the step off.
    """
    steps: list[Transform] = []
    if min_size > 0:
        steps.append(RemoveSmallObjectsd(keys, min_size=min_size, connectivity=2))
    if median_window > 1:
        steps.append(EdgeMedianFilterd(keys, window=median_window))
    return Compose(steps)
