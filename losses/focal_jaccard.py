"""Softmax focal loss + soft Jaccard over the well-present foreground classes, built from MONAI losses.

The vertebra segmentation loss of the RSNA 2022 cervical spine solution (selimsef/rsna_cervical_fracture,
``training/losses.py``: ``FocalLossWithJaccardOptimized``, ``multiclass_jaccard``)::

    focal   = mean over voxels of  -(1 - p_t) ** gamma * log p_t          (p = softmax, t = target class)
    J_bc    = (I_bc + eps) / (P_bc + G_bc - I_bc + eps)                    (per sample b, foreground class c;
              I = sum p g, P = sum p, G = sum g over the sample's voxels; eps 1e-4)
    jaccard = mean over samples with a counted class of
              [mean over the sample's counted classes c of (1 - J_bc)],   counted: G_bc > min_voxels (16)
    loss    = focal_weight * focal + jaccard_weight * jaccard              (weights 1 and 0.1)

and ``jaccard = 0`` when no sample has a counted class. MONAI reproduces both terms (checked against an
independent computation in ``tests/losses/test_focal_jaccard.py``): ``FocalLoss(use_softmax=True,
reduction="none")`` gives ``-(1 - p_c) ** gamma * log p_c * g_c`` per class, whose sum over the classes is the
focal term per voxel; ``DiceLoss(jaccard=True, include_background=False, reduction="none")`` gives
``1 - (2 I + s) / (2 (P + G - I) + s)`` per sample and class, the Jaccard above with ``s = 2 eps``. What MONAI
lacks is the per-sample selection of the classes with more than ``min_voxels`` target voxels, done here.

Deviation: the reference's ``ignore_index`` 255 is not supported (the vertebra label maps hold 0..7 only).
"""

from __future__ import annotations

import torch
from monai.losses import DiceLoss, FocalLoss
from torch import nn

__all__ = ["FocalJaccardLoss"]


class FocalJaccardLoss(nn.Module):
    """``focal_weight * softmax focal + jaccard_weight * soft Jaccard`` over classes with > ``min_voxels`` voxels.

    Args:
        gamma: focal exponent (reference 2).
        focal_weight: weight of the focal term (reference 1).
        jaccard_weight: weight of the Jaccard term (reference 0.1).
        min_voxels: a foreground class counts in a sample's Jaccard only with more target voxels than this
            (reference 16).
        eps: smoothing of the Jaccard ratio's numerator and denominator (reference 1e-4).

    ``forward(logits, target)``: ``logits`` (B, C, *spatial) unnormalised scores, ``target`` (B, 1, *spatial) or
    (B, *spatial) class indices 0..C-1 (0 = background, never counted in the Jaccard). Computed in float32.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        focal_weight: float = 1.0,
        jaccard_weight: float = 0.1,
        min_voxels: int = 16,
        eps: float = 1e-4,
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if min_voxels < 0:
            raise ValueError(f"min_voxels must be >= 0, got {min_voxels}")
        self.focal_weight = focal_weight
        self.jaccard_weight = jaccard_weight
        self.min_voxels = min_voxels
        self.focal = FocalLoss(
            include_background=True, to_onehot_y=True, gamma=gamma, use_softmax=True, reduction="none"
        )
        # MONAI's Jaccard is 1 - (2 I + s) / (2 (P + G - I) + s): s = 2 eps gives the reference's (I + eps) / (.. + eps)
        self.jaccard = DiceLoss(
            include_background=False,
            to_onehot_y=True,
            softmax=True,
            jaccard=True,
            smooth_nr=2 * eps,
            smooth_dr=2 * eps,
            reduction="none",
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.ndim < 3:
            raise ValueError(f"logits must be (B, C, *spatial), got shape {tuple(logits.shape)}")
        if target.ndim == logits.ndim - 1:
            target = target.unsqueeze(1)
        if target.shape != (logits.shape[0], 1, *logits.shape[2:]):
            raise ValueError(
                f"target of shape {tuple(target.shape)} does not fit logits {tuple(logits.shape)}: "
                "expected class indices (B, 1, *spatial) or (B, *spatial)"
            )
        num_classes = logits.shape[1]
        logits = logits.float()
        target = target.long()
        if target.min() < 0 or target.max() >= num_classes:
            raise ValueError(f"target holds class indices outside [0, {num_classes - 1}]")
        focal = self.focal(logits, target).sum(dim=1).mean()
        return self.focal_weight * focal + self.jaccard_weight * self.counted_jaccard(logits, target)

    def counted_jaccard(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The Jaccard term alone (float32 logits, (B, 1, *spatial) int64 targets)."""
        batch, num_classes = logits.shape[:2]
        losses = self.jaccard(logits, target).reshape(batch, num_classes - 1)
        voxels = torch.stack([(target == c).flatten(1).sum(dim=1) for c in range(1, num_classes)], dim=1)
        counted = (voxels > self.min_voxels).to(losses.dtype)
        classes_per_sample = counted.sum(dim=1)
        has_class = classes_per_sample > 0
        per_sample = (losses * counted).sum(dim=1) / classes_per_sample.clamp_min(1.0)
        # no counted class in the whole batch: 0 (with a graph, so that backward still works)
        return (per_sample * has_class).sum() / has_class.sum().clamp_min(1)
