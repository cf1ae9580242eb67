"""Batch preparation for workflows whose loss needs several targets (a mask and a class label, ...)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.engines import PrepareBatch
from monai.utils import convert_to_tensor


def to_plain_tensor(value: torch.Tensor, **to_kwargs: Any) -> torch.Tensor:
    """``value`` as a plain ``torch.Tensor`` on the device: a MONAI ``MetaTensor`` dispatches every network op
    through its metadata handling, which made MAGNET 2.3x slower at inference and 30 % slower at training on a
    GPU (scripts/benchmark.py); the network needs none of it."""
    return convert_to_tensor(value, track_meta=False).to(**to_kwargs)


class PrepareBatchMultiTarget(PrepareBatch):
    """Return ``(batch[image_key], {key: batch[key] for key in target_keys})`` moved to ``device`` as plain tensors.

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
        to = {"device": device, "non_blocking": non_blocking, **kwargs}
        image = to_plain_tensor(batchdata[self.image_key], **to)
        targets = {key: to_plain_tensor(batchdata[key], **to) for key in self.target_keys if key in batchdata}
        return image, targets
