"""UniMatch's segmentation losses (Yang et al., CVPR 2023, LiheYoung/UniMatch ``more-scenarios/medical``), as the
FUGC 2025 7th-place solution (apuomline/FUGC2025_7th_solution, ``medical_util/utils.py``) uses them, built from
MONAI losses.

Their ``DiceLoss`` takes softmax probabilities and class indices; for each class ``c`` (background included) it
sums over every pixel of the batch that is not ignored::

    D_c = (2 sum p_c g_c + 1e-5) / (sum p_c^2 + sum g_c^2 + 1e-5),    loss = mean_c (1 - D_c)

(``g_c`` the one-hot target). An ignored pixel drops out of all three sums; a batch whose every pixel is ignored
gives ``D_c = 1``, a loss of 0.

* MONAI's ``DiceLoss(softmax=True, squared_pred=True, batch=True, include_background=True, smooth_nr=1e-5,
  smooth_dr=1e-5)`` is that formula without an ignore mask, so the supervised loss ``(CE + Dice) / 2`` of the
  labelled batch is MONAI's ``DiceCELoss`` with ``lambda_ce = lambda_dice = 0.5`` (:func:`unimatch_supervised_loss`).
* MONAI's ``DiceLoss`` has no ignore argument; its ``MaskedDiceLoss`` multiplies prediction and target by a mask,
  which removes the masked pixels from the sums exactly, but only when the target is already one-hot (it masks
  before ``to_onehot_y``, which would turn a masked pixel into background). :class:`IgnoreMaskDiceLoss` does the
  one-hot encoding first; it is the loss of the unlabelled terms, with the mask of confident pseudo-labels.
"""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss, MaskedDiceLoss
from monai.networks.utils import one_hot
from torch import nn

__all__ = ["DICE_SMOOTH", "IgnoreMaskDiceLoss", "unimatch_supervised_loss"]

DICE_SMOOTH = 1e-5
"""Smoothing term of UniMatch's Dice (numerator and denominator)."""


def unimatch_supervised_loss(ce_weight: float = 0.5, dice_weight: float = 0.5) -> DiceCELoss:
    """``ce_weight * CE + dice_weight * Dice``: UniMatch's ``(CE + Dice) / 2`` of the labelled batch.

    Takes logits ``(B, C, H, W)`` and class indices ``(B, 1, H, W)``; CE is averaged over all pixels, Dice as in
    the module doc.
    """
    return DiceCELoss(
        include_background=True,
        to_onehot_y=True,
        softmax=True,
        squared_pred=True,
        batch=True,
        smooth_nr=DICE_SMOOTH,
        smooth_dr=DICE_SMOOTH,
        lambda_ce=ce_weight,
        lambda_dice=dice_weight,
    )


class IgnoreMaskDiceLoss(nn.Module):
    """UniMatch's Dice (module doc) of logits against class indices, counting only the pixels of ``mask``.

    ``forward(logits, target, mask=None)``: ``logits`` ``(B, C, H, W)``; ``target`` class indices ``(B, H, W)``
    or ``(B, 1, H, W)`` (pseudo-labels); ``mask`` the pixels that count, bool or {0, 1}, ``(B, H, W)`` or
    ``(B, 1, H, W)`` (UniMatch: confidence >= threshold), None counting every pixel.

    Args:
        num_classes: number of classes ``C`` (background included, all of them averaged).
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
        self.num_classes = num_classes
        self.dice = MaskedDiceLoss(
            include_background=True,
            softmax=True,
            squared_pred=True,
            batch=True,
            smooth_nr=DICE_SMOOTH,
            smooth_dr=DICE_SMOOTH,
        )

    @staticmethod
    def _with_channel(x: torch.Tensor, name: str, shape: torch.Size) -> torch.Tensor:
        if x.ndim == 3:
            x = x.unsqueeze(1)
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[0] != shape[0] or x.shape[2:] != shape[2:]:
            raise ValueError(
                f"{name} must be (B, H, W) or (B, 1, H, W) matching the logits {tuple(shape)}, got {tuple(x.shape)}."
            )
        return x

    def forward(self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if logits.ndim != 4 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must be (B, {self.num_classes}, H, W), got {tuple(logits.shape)}.")
        target = self._with_channel(target, "target", logits.shape).long()
        target = one_hot(target, self.num_classes, dtype=logits.dtype)
        if mask is None:
            mask = torch.ones_like(logits[:, :1])
        else:
            mask = self._with_channel(mask, "mask", logits.shape).to(logits.dtype)
        return self.dice(logits, target, mask)
