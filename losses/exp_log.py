"""Exponential-logarithmic Dice loss and the AI Challenger 2018 retinal edema multi-task loss.

Reference (ShawnBIT/AI-Challenger-Retinal-Edema-Segmentation, ``utils/loss.py``): ``mix_33`` = weighted NLL
(class weights 1, 5, 10, 20; ignore 255) + EL-Dice + BCE on the detection head (UNet++), ``mix_3`` = the same with
plain Dice (UNet); all three terms weight 1. Both Dice variants compute, for each foreground class i, ONE Dice over
the whole batch, ``D_i = 2 sum(p_i g_i) / (sum p_i + sum g_i)`` with no smoothing, and set ``D_i := 1`` when class i
is absent from the batch's ground truth (so an absent class contributes nothing, whatever is predicted). Then
EL-Dice = mean_i (-ln D_i) ** gamma (Wong et al., MICCAI 2018; gamma 0.5) and Dice = 1 - mean_i D_i.

MONAI's :class:`monai.losses.DiceLoss` (``batch=True``, ``smooth_nr=smooth_dr=0``) gives the same D_i for present
classes but scores an absent class as D = 0 (or 1 only if nothing is predicted at all), which would push every
lesion prediction towards zero in the many lesion-free batches; MONAI has no exponential-logarithmic loss. Hence
the small implementation here.

Deviations: the losses take LOGITS (the networks of :mod:`networks.unet_plus_plus` return logits) and apply
``softmax`` / ``log_softmax`` / ``BCEWithLogits`` themselves, in float32 (safe under autocast); pixels equal to
``ignore_index`` are left out of the Dice sums as they are of the NLL (the reference only ignores them in the NLL;
the challenge labels contain no such pixel, so this changes nothing on its data).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["BatchDiceLoss", "EdemaLoss", "ExpLogDiceLoss", "batch_dice_per_class", "lesion_presence"]


def _as_index_target(target: torch.Tensor, spatial_ndim: int) -> torch.Tensor:
    """``(B, 1, *spatial)`` or ``(B, *spatial)`` class indices -> ``(B, *spatial)`` int64."""
    if target.ndim == spatial_ndim + 2:
        if target.shape[1] != 1:
            raise ValueError(f"target must hold class indices (B, 1, ...), got shape {tuple(target.shape)}")
        target = target[:, 0]
    if target.ndim != spatial_ndim + 1:
        raise ValueError(f"target of shape {tuple(target.shape)} does not fit {spatial_ndim} spatial dimensions")
    if target.is_floating_point():
        target = target.round()
    return target.long()


def batch_dice_per_class(
    logits: torch.Tensor, target: torch.Tensor, include_background: bool = False, ignore_index: int = 255
) -> torch.Tensor:
    """Softmax Dice of each class over the whole batch; 1 for a class absent from the batch's ground truth.

    Args:
        logits: ``(B, C, *spatial)`` unnormalised scores.
        target: ``(B, 1, *spatial)`` or ``(B, *spatial)`` class indices; ``ignore_index`` pixels are left out.
        include_background: also return class 0.
        ignore_index: label value excluded from all sums.

    Returns:
        ``(C,)`` or ``(C - 1,)`` Dice values (float32) carrying gradients for the present classes.
    """
    num_classes = logits.shape[1]
    target = _as_index_target(target, logits.ndim - 2)
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
    probs = torch.softmax(logits.float(), dim=1)
    valid = target != ignore_index
    onehot = F.one_hot(torch.where(valid, target, 0), num_classes).movedim(-1, 1).float()
    valid = valid.unsqueeze(1).float()
    reduce_dims = [0] + list(range(2, logits.ndim))
    intersection = (probs * onehot * valid).sum(reduce_dims)
    pred_sum = (probs * valid).sum(reduce_dims)
    gt_sum = (onehot * valid).sum(reduce_dims)
    present = gt_sum > 0
    dice = torch.where(present, 2.0 * intersection / (pred_sum + gt_sum).clamp_min(1e-12), torch.ones_like(gt_sum))
    return dice if include_background else dice[1:]


class ExpLogDiceLoss(nn.Module):
    """Exponential-logarithmic Dice loss ``mean_i (-ln D_i) ** gamma`` with the batch Dice D_i of each class.

    Args:
        gamma: exponent (reference 0.5; 1 gives the mean negative log Dice).
        include_background: also score class 0 (the reference scores the lesions only).
        ignore_index: label value excluded from the sums.
        eps: floor for D_i inside the logarithm; a class with ``-ln D_i <= eps`` (an absent class, D_i = 1, or a
            perfect one) contributes exactly 0 with zero gradient, avoiding the infinite slope of the power at 0.
    """

    def __init__(
        self, gamma: float = 0.5, include_background: bool = False, ignore_index: int = 255, eps: float = 1e-7
    ) -> None:
        super().__init__()
        self.gamma = gamma
        self.include_background = include_background
        self.ignore_index = ignore_index
        self.eps = eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        dice = batch_dice_per_class(logits, target, self.include_background, self.ignore_index)
        neg_log = -torch.log(dice.clamp_min(self.eps))
        # below eps (absent class: exactly 0) the term is 0 with zero gradient instead of the power's infinite slope
        keep = neg_log > self.eps
        safe = torch.where(keep, neg_log, torch.ones_like(neg_log))
        return torch.where(keep, safe.pow(self.gamma), torch.zeros_like(neg_log)).mean()


class BatchDiceLoss(nn.Module):
    """Plain Dice loss ``1 - mean_i D_i`` with the batch Dice D_i of each class (absent class: D_i = 1)."""

    def __init__(self, include_background: bool = False, ignore_index: int = 255) -> None:
        super().__init__()
        self.include_background = include_background
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 1.0 - batch_dice_per_class(logits, target, self.include_background, self.ignore_index).mean()


def lesion_presence(target: torch.Tensor, num_classes: int = 4) -> torch.Tensor:
    """Per-image presence of classes 1..num_classes-1: ``(B, 1, H, W)`` or ``(B, H, W)`` -> ``(B, num_classes - 1)``."""
    flat = target.reshape(target.shape[0], -1)
    flat = flat.round().long() if flat.is_floating_point() else flat.long()
    return torch.stack([(flat == c).any(dim=1) for c in range(1, num_classes)], dim=1).float()


class EdemaLoss(nn.Module):
    """Weighted NLL + (EL-)Dice over the lesions + BCE on the slice-level detection logits (``mix_33`` / ``mix_3``).

    Args:
        num_classes: segmentation classes including background (the network's first ``num_classes`` channels).
        class_weights: NLL weight of each class (reference 1, 5, 10, 20).
        nll_weight: weight of the NLL term.
        dice: ``"explog"`` (EL-Dice, UNet++ recipe ``mix_33``) or ``"plain"`` (1 - mean Dice, UNet recipe ``mix_3``).
        dice_weight: weight of the Dice term.
        det_weight: weight of the detection BCE; ignored (no term) when the output carries no detection channels.
        gamma: EL-Dice exponent.
        ignore_index: label value ignored by the NLL and the Dice.

    ``forward(output, target)``: ``output`` is the packed network output ``(B, num_classes + K, H, W)`` of
    :mod:`networks.unet_plus_plus` (K = 3 detection logits, or 0), ``target`` the label ``(B, 1, H, W)`` of class
    indices; the detection targets are derived from it (a lesion with at least one pixel in the slice -> 1).
    """

    def __init__(
        self,
        num_classes: int = 4,
        class_weights: Sequence[float] | None = (1.0, 5.0, 10.0, 20.0),
        nll_weight: float = 1.0,
        dice: str = "explog",
        dice_weight: float = 1.0,
        det_weight: float = 1.0,
        gamma: float = 0.5,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"class_weights needs {num_classes} values, got {len(class_weights)}")
        if dice == "explog":
            self.dice: nn.Module = ExpLogDiceLoss(gamma=gamma, ignore_index=ignore_index)
        elif dice == "plain":
            self.dice = BatchDiceLoss(ignore_index=ignore_index)
        else:
            raise ValueError(f"dice must be 'explog' or 'plain', got {dice!r}")
        self.num_classes = num_classes
        self.nll_weight = nll_weight
        self.dice_weight = dice_weight
        self.det_weight = det_weight
        self.ignore_index = ignore_index
        weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weight)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        c = self.num_classes
        if output.ndim != 4 or output.shape[1] < c:
            raise ValueError(f"expected output (B, {c} + K, H, W), got shape {tuple(output.shape)}")
        seg = output[:, :c].float()
        labels = _as_index_target(target, 2)
        weight = None if self.class_weights is None else self.class_weights.to(seg.device)
        nll = F.nll_loss(F.log_softmax(seg, dim=1), labels, weight=weight, ignore_index=self.ignore_index)
        loss = self.nll_weight * nll
        loss = loss + self.dice_weight * self.dice(seg, labels)
        if output.shape[1] > c and self.det_weight != 0:
            det = output[:, c:, 0, 0].float()
            presence = lesion_presence(labels, c)
            if det.shape != presence.shape:
                raise ValueError(f"{det.shape[1]} detection channels but {presence.shape[1]} lesion classes")
            loss = loss + self.det_weight * F.binary_cross_entropy_with_logits(det, presence)
        return loss
