"""Post-processing of the CCF BDCI 2021 angioma rank-1 solution (chaineypung/CCF-BDCI-2021-ULSEG-Rank1st).

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
