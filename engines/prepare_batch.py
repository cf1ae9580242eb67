"""Batch preparation for workflows whose loss needs several targets (a mask and a class label, ...)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.engines import PrepareBatch


class PrepareBatchMultiTarget(PrepareBatch):
    """Return ``(batch[image_key], {key: batch[key] for key in target_keys})`` moved to ``device``.

    MONAI's default returns a single label tensor; MAGNET's loss needs the masks of both views and the
    risk class, so the targets travel together as a dict that the loss and the metrics unpack.
    """

    def __init__(self, image_key: str = "image", target_keys: Sequence[str] = ("label",)) -> None:
        self.image_key = image_key
        self.target_keys = tuple(target_keys)

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image = batchdata[self.image_key].to(device=device, non_blocking=non_blocking, **kwargs)
        targets = {
            key: batchdata[key].to(device=device, non_blocking=non_blocking, **kwargs)
            for key in self.target_keys
            if key in batchdata
        }
        return image, targets
