"""Classification losses MONAI lacks."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LabelSmoothingBCEWithLogitsLoss"]


class LabelSmoothingBCEWithLogitsLoss(nn.BCEWithLogitsLoss):
    """``BCEWithLogitsLoss`` against smoothed binary targets ``y (1 - smoothing) + 0.5 smoothing``.

    With ``smoothing=0.05`` the targets 0 / 1 become 0.025 / 0.975 (MAGNET's risk classifier), which keeps the
    logits finite and the classifier less over-confident on a small labelled set.

    Args:
        smoothing: label smoothing factor in [0, 1).
        kwargs: passed to ``torch.nn.BCEWithLogitsLoss`` (``weight``, ``reduction``, ``pos_weight``).
    """

    def __init__(self, smoothing: float = 0.05, **kwargs) -> None:
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}.")
        super().__init__(**kwargs)
        self.smoothing = smoothing

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args: ``input`` logits and ``target`` 0/1 labels of the same shape."""
        target = target.to(input.dtype) * (1.0 - self.smoothing) + 0.5 * self.smoothing
        return super().forward(input, target)
