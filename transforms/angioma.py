"""Post-processing of the CCF BDCI 2021 angioma rank-1 solution (chaineypung/CCF-BDCI-2021-ULSEG-Rank1st).

Its augmentation (imgaug DA / EDA) is listed transform by transform in the bundle's ``configs/train.json``; the
mapping of each imgaug operation onto a MONAI (or :mod:`transforms.intensity`) transform is in the bundle's
``docs/README.md``.
"""

from __future__ import annotations

from monai.config import KeysCollection
from monai.transforms import Compose, Transform

from transforms.postprocessing import EdgeMedianFilterd, RemoveSmallComponentsd

__all__ = ["angioma_postprocessing"]


def angioma_postprocessing(keys: KeysCollection = "pred", max_size: int = 50, median_window: int = 19) -> Compose:
    """RSIP then EMF on a thresholded {0, 1} mask ``(1, H, W)`` at the original resolution (the rank-1 solution's intent).

    Args:
        keys: mask keys.
        max_size: components (8-connected) of at most this many pixels are deleted (the rank-1 solution's 50);
            0 switches the step off.
        median_window: :class:`transforms.postprocessing.EdgeMedianFilterd` window; 1 switches the step off.
    """
    steps: list[Transform] = []
    if max_size > 0:
        steps.append(RemoveSmallComponentsd(keys, max_size=max_size, connectivity=2))
    if median_window > 1:
        steps.append(EdgeMedianFilterd(keys, window=median_window))
    return Compose(steps)
