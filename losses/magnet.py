"""MAGNET's supervised loss (CSV 2026, 4th place; lyyek/CSV2026) built from MONAI losses.

Segmentation (both views' logits concatenated along the batch, as MAGNET does):
``smp.losses.FocalLoss("multiclass")`` (sum over the classes of the binary sigmoid focal loss of each class
channel, gamma 2, no alpha, mean over pixels) + soft Dice over all 3 classes, background included,
``D_c = (2 sum p g + 1e-5) / (sum p^2 + sum g^2 + 1e-5)`` summed over the whole batch on softmax
probabilities, loss = mean_c (1 - D_c).

MONAI's ``DiceFocalLoss`` reproduces this exactly (checked numerically in ``tests/losses/test_magnet.py``):
its focal part is the per-channel sigmoid focal loss averaged over the classes too, so
``lambda_focal = num_classes`` turns the mean into smp's sum; its Dice part with ``softmax=True,
squared_pred=True, batch=True, include_background=True`` is MAGNET's Dice.

Classification: BCE with logits against label-smoothed targets (0.025 / 0.975), weight 0.3, off for the
first 15 epochs (see :meth:`MagnetLoss.cls_warmup_handler`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from ignite.engine import Events
from monai.handlers import ParamSchedulerHandler
from monai.losses import DiceFocalLoss
from torch import nn

from losses.classification import LabelSmoothingBCEWithLogitsLoss

__all__ = ["magnet_seg_loss", "MagnetLoss"]


def magnet_seg_loss(num_classes: int = 3) -> DiceFocalLoss:
    """MONAI ``DiceFocalLoss`` configured as MAGNET's focal + Dice segmentation loss.

    Takes logits (N, num_classes, H, W) and class indices (N, 1, H, W).
    """
    return DiceFocalLoss(
        include_background=True,
        to_onehot_y=True,
        softmax=True,
        squared_pred=True,
        batch=True,
        smooth_nr=1e-5,
        smooth_dr=1e-5,
        gamma=2.0,
        lambda_dice=1.0,
        lambda_focal=float(num_classes),
    )


class MagnetLoss(nn.Module):
    """Supervised MAGNET loss: ``seg_loss(both views) + cls_weight * cls_loss``.

    ``forward(pred, target)`` takes the network output ``pred``, which ``split_output`` turns into
    ``(long logits (B, C, H, W), transverse logits (B, C, H, W), risk logit (B,))`` (for MagnetNet's packed
    output: ``networks.magnet.split_views_output``, given by the bundle config, so that the loss does not depend
    on a network's layout), and ``target = {"label": (B, 2, H, W) class indices
    [long, trans], "cls": (B, 1) 0/1}``, the layout ``engines.prepare_batch.PrepareBatchMultiTarget`` gives.
    The long and transverse logits (and masks) are concatenated along the batch before ``seg_loss``.

    ``cls_weight`` is a plain attribute so a handler can change it during training. MAGNET trains without the
    classification term for the first 15 epochs; :meth:`cls_warmup_handler` returns the MONAI
    ``ParamSchedulerHandler`` that does it, e.g. in a bundle config's train handlers::

        "$@loss.cls_warmup_handler(15)"

    Args:
        split_output: ``pred -> (long_logits, trans_logits, cls_logit)``.
        seg_loss: loss of (N, C, H, W) logits vs (N, 1, H, W) class indices; default :func:`magnet_seg_loss`.
        cls_loss: loss of (B,) logits vs (B,) 0/1 targets; default ``LabelSmoothingBCEWithLogitsLoss(0.05)``.
        cls_weight: weight of the classification term.
        num_classes: segmentation classes per view (background included), for the default ``seg_loss``.
    """

    def __init__(
        self,
        split_output: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
        seg_loss: nn.Module | None = None,
        cls_loss: nn.Module | None = None,
        cls_weight: float = 0.3,
        num_classes: int = 3,
    ) -> None:
        super().__init__()
        self.seg_loss = seg_loss if seg_loss is not None else magnet_seg_loss(num_classes)
        self.cls_loss = cls_loss if cls_loss is not None else LabelSmoothingBCEWithLogitsLoss(smoothing=0.05)
        self.cls_weight = cls_weight
        self.split_output = split_output

    def supervised_terms(self, pred: torch.Tensor, target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Return ``{"seg": ..., "cls": ..., "total": seg + cls_weight * cls}`` (scalars, for logging too)."""
        if not isinstance(target, dict) or "label" not in target or "cls" not in target:
            raise ValueError("MagnetLoss needs targets {'label': (B, 2, H, W), 'cls': (B, 1)}.")
        long_logits, trans_logits, cls_logit = self.split_output(pred)
        labels = target["label"]
        if labels.ndim != 4 or labels.shape[1] != 2 or labels.shape[2:] != long_logits.shape[2:]:
            raise ValueError(
                f"target 'label' must be (B, 2, H, W) matching the prediction's {tuple(long_logits.shape[2:])}, "
                f"got {tuple(labels.shape)}."
            )
        cls_target = target["cls"].reshape(-1)
        if cls_target.numel() != cls_logit.numel():
            raise ValueError(f"target 'cls' has {cls_target.numel()} values for a batch of {cls_logit.numel()}.")
        seg_logits = torch.cat([long_logits, trans_logits], dim=0)
        seg = self.seg_loss(seg_logits, torch.cat([labels[:, :1], labels[:, 1:]], dim=0))
        cls = self.cls_loss(cls_logit, cls_target.to(cls_logit.dtype))
        return {"seg": seg, "cls": cls, "total": seg + self.cls_weight * cls}

    def forward(self, pred: torch.Tensor, target: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.supervised_terms(pred, target)["total"]

    def cls_warmup_handler(self, warmup_epochs: int = 15, cls_weight: float | None = None) -> ParamSchedulerHandler:
        """Handler that keeps ``cls_weight`` at 0 for the first ``warmup_epochs`` epochs, then sets it.

        It runs at every ``EPOCH_STARTED`` of the trainer it is attached to (epochs count from 1 there), so
        epochs 1..warmup_epochs train without the classification term, as MAGNET's 0-based
        ``epoch < cls_warmup_epochs``.

        Args:
            warmup_epochs: epochs without the classification term.
            cls_weight: weight afterwards; defaults to the current ``self.cls_weight``.
        """
        weight = self.cls_weight if cls_weight is None else cls_weight
        return ParamSchedulerHandler(
            parameter_setter=partial(setattr, self, "cls_weight"),
            value_calculator="linear",
            vc_kwargs={
                "initial_value": 0.0,
                "step_constant": warmup_epochs,
                "step_max_value": warmup_epochs,
                "max_value": weight,
            },
            epoch_level=True,
            event=Events.EPOCH_STARTED,
        )
