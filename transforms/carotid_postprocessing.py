"""Turn MAGNET's packed network output into the CSV 2026 submission: two class masks and a risk class."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
import torch.nn.functional as F
from monai.transforms import Transform

__all__ = ["MagnetOutputToSubmissiond"]


class MagnetOutputToSubmissiond(Transform):
    """Split ``data[pred_key]`` (2C+1, h, w) into the submission entries of one case.

    The logits of each view are bilinearly resized to the spatial shape of the view as read from disk
    (``data[reference_key]`` before resizing: its ``spatial_shape`` meta entry, else its own shape), then
    arg-maxed, as MAGNET's inference does. The risk probability is the sigmoid of the risk logit, and
    the class is ``probability >= cls_threshold`` (0.8 at submission, 0.5 during MAGNET's validation).

    Adds ``mask_keys`` (uint8 (H, W) class indices), ``"cls"`` (uint8 (1,)) and ``"cls_prob"`` (float).
    """

    def __init__(
        self,
        pred_key: str = "pred",
        reference_keys: Sequence[str] = ("long_img", "trans_img"),
        mask_keys: Sequence[str] = ("long_mask", "trans_mask"),
        num_classes: int = 3,
        cls_threshold: float = 0.8,
    ) -> None:
        if len(reference_keys) != 2 or len(mask_keys) != 2:
            raise ValueError("MAGNET has two views: give two reference keys and two mask keys")
        self.pred_key = pred_key
        self.reference_keys = list(reference_keys)
        self.mask_keys = list(mask_keys)
        self.num_classes = num_classes
        self.cls_threshold = cls_threshold

    @staticmethod
    def _original_shape(reference: object) -> tuple[int, int]:
        meta = getattr(reference, "meta", {}) or {}
        shape = meta.get("spatial_shape")
        if shape is None:
            shape = reference.shape[-2:]  # type: ignore[attr-defined]
        return tuple(int(s) for s in torch.as_tensor(shape).flatten()[-2:].tolist())  # type: ignore[return-value]

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        pred = torch.as_tensor(d[self.pred_key]).float()
        c = self.num_classes
        if pred.ndim != 3 or pred.shape[0] != 2 * c + 1:
            raise ValueError(f"expected a ({2 * c + 1}, H, W) MAGNET output, got shape {tuple(pred.shape)}")
        for index, (reference_key, mask_key) in enumerate(zip(self.reference_keys, self.mask_keys)):
            logits = pred[index * c : (index + 1) * c][None]
            shape = self._original_shape(d[reference_key])
            if tuple(logits.shape[-2:]) != shape:
                logits = F.interpolate(logits, size=shape, mode="bilinear", align_corners=False)
            d[mask_key] = logits[0].argmax(0).to(torch.uint8)
        probability = torch.sigmoid(pred[2 * c].mean())
        d["cls_prob"] = float(probability)
        d["cls"] = (probability >= self.cls_threshold).to(torch.uint8).reshape(1)
        return d
