"""Mean Teacher consistency losses of MAGNET (CSV 2026), on the network's packed two-view output.

Both losses compare the student's prediction on the strong view of an unlabelled case with the teacher's
prediction on its weak (unaugmented) view. They take packed outputs ``(B, 2C + 1, H, W)`` (channels ``[0:C]``
long-view logits, ``[C:2C]`` transverse-view logits, channel ``2C`` the risk logit broadcast over H, W), split by
``networks.magnet.split_views_output``, and share the call signature ``loss(student_out, teacher_out, mt_epoch)``
that ``engines.mean_teacher.MeanTeacherTrainer`` uses, ``mt_epoch`` being the 0-based epoch counted from the start of
the Mean Teacher phase (0 = first MT epoch). The teacher output is treated as a constant (detached).
"""

from __future__ import annotations

import torch
from torch import nn

from networks.magnet import split_views_output

__all__ = ["ConfidenceGatedConsistencyLoss", "TopKPlaqueConsistencyLoss"]

_EPS = 1e-8


def _views_and_risk(out: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-view segmentation logits ``(2B, C, H, W)`` (all long views, then all transverse views, as MAGNET
    concatenates them) and the risk logit ``(B,)`` of a packed output."""
    long_logits, trans_logits, risk_logit = split_views_output(out, num_classes)
    return torch.cat([long_logits, trans_logits], dim=0), risk_logit


def _check_pair(student_out: torch.Tensor, teacher_out: torch.Tensor, name: str) -> None:
    if student_out.shape != teacher_out.shape:
        raise ValueError(
            f"{name}: student and teacher outputs must have the same shape, "
            f"got {tuple(student_out.shape)} and {tuple(teacher_out.shape)}."
        )


class TopKPlaqueConsistencyLoss(nn.Module):
    """Plaque-guided segmentation consistency (MAGNET ``use_plaque_topk_mask``).

    For every image and every view separately, the ``k`` pixels with the highest teacher plaque probability are
    selected, ``k = max(1, int(k_ratio * H * W))``; a selected pixel weighs ``p_plaque ** weight_gamma`` (teacher
    probability), every other pixel 0. With ``p`` the softmax probabilities over the ``C`` classes::

        loss = sum_px w * mean_c (p_student - p_teacher) ** 2 / (sum_px w + 1e-8)

    summed over all pixels of the batch and both views. ``k_ratio`` grows linearly from ``k_ratio_start`` at
    ``mt_epoch`` 0 to ``k_ratio_end`` at ``mt_epoch == k_ratio_rampup_epochs`` and stays there. The loss is 0
    (the step is skipped, as in MAGNET) when the fraction of selected pixels is below ``min_mask_ratio`` or the
    weights sum to less than ``min_weight_sum``; the test runs on the device, without a host synchronisation.

    Exactly ``k`` pixels are selected per image (``torch.topk`` indices); MAGNET thresholds at the k-th value,
    which selects more than ``k`` pixels only when probabilities tie.

    Args:
        num_classes: segmentation classes ``C`` per view (3: background, plaque, vessel).
        plaque_index: class index of plaque.
        k_ratio_start: fraction of pixels selected in the first MT epoch.
        k_ratio_end: fraction selected from ``k_ratio_rampup_epochs`` MT epochs on.
        k_ratio_rampup_epochs: MT epochs of the linear ramp; 0 uses ``k_ratio_end`` at once.
        weight_gamma: exponent of the plaque probability that weighs a selected pixel.
        min_mask_ratio: smallest fraction of selected pixels for which the loss is computed.
        min_weight_sum: smallest sum of pixel weights for which the loss is computed (MAGNET: 1).
    """

    def __init__(
        self,
        num_classes: int = 3,
        plaque_index: int = 1,
        k_ratio_start: float = 0.01,
        k_ratio_end: float = 0.03,
        k_ratio_rampup_epochs: int = 20,
        weight_gamma: float = 2.0,
        min_mask_ratio: float = 1e-4,
        min_weight_sum: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0 <= plaque_index < num_classes:
            raise ValueError(f"plaque_index must be in [0, {num_classes}), got {plaque_index}.")
        if not (0.0 < k_ratio_start <= 1.0 and 0.0 < k_ratio_end <= 1.0):
            raise ValueError(f"k ratios must be in (0, 1], got {k_ratio_start} and {k_ratio_end}.")
        if k_ratio_rampup_epochs < 0:
            raise ValueError(f"k_ratio_rampup_epochs must be >= 0, got {k_ratio_rampup_epochs}.")
        self.num_classes = num_classes
        self.plaque_index = plaque_index
        self.k_ratio_start = k_ratio_start
        self.k_ratio_end = k_ratio_end
        self.k_ratio_rampup_epochs = k_ratio_rampup_epochs
        self.weight_gamma = weight_gamma
        self.min_mask_ratio = min_mask_ratio
        self.min_weight_sum = min_weight_sum

    def k_ratio(self, mt_epoch: int) -> float:
        """Fraction of pixels selected per image in MT epoch ``mt_epoch`` (0-based from the MT start)."""
        if self.k_ratio_rampup_epochs == 0:
            return self.k_ratio_end
        progress = min(max(mt_epoch / self.k_ratio_rampup_epochs, 0.0), 1.0)
        return self.k_ratio_start + (self.k_ratio_end - self.k_ratio_start) * progress

    def pixel_weights(self, teacher_out: torch.Tensor, mt_epoch: int = 0) -> torch.Tensor:
        """Per-pixel weights ``(2B, H, W)`` (long views, then transverse views) of a teacher packed output."""
        seg_t, _ = _views_and_risk(teacher_out, self.num_classes)
        plaque = torch.softmax(seg_t.detach().float(), dim=1)[:, self.plaque_index]
        return self._weights(plaque, mt_epoch)

    def _weights(self, plaque: torch.Tensor, mt_epoch: int) -> torch.Tensor:
        flat = plaque.flatten(1)
        k = max(1, int(self.k_ratio(mt_epoch) * flat.shape[1]))
        selected = torch.zeros_like(flat).scatter_(1, flat.topk(k, dim=1).indices, 1.0)
        weights = selected * flat.clamp(0.0, 1.0) ** self.weight_gamma
        return weights.view_as(plaque)

    def forward(self, student_out: torch.Tensor, teacher_out: torch.Tensor, mt_epoch: int = 0) -> torch.Tensor:
        """Weighted squared difference of softmax probabilities on the top-k plaque pixels (scalar)."""
        _check_pair(student_out, teacher_out, type(self).__name__)
        seg_s, _ = _views_and_risk(student_out, self.num_classes)
        seg_t, _ = _views_and_risk(teacher_out, self.num_classes)
        prob_s = torch.softmax(seg_s.float(), dim=1)
        prob_t = torch.softmax(seg_t.detach().float(), dim=1)
        weights = self._weights(prob_t[:, self.plaque_index], mt_epoch)
        selected_ratio = (weights > 0).float().mean()
        weight_sum = weights.sum()
        per_pixel = (prob_s - prob_t).pow(2).mean(dim=1)
        loss = (per_pixel * weights).sum() / (weight_sum + _EPS)
        keep = (selected_ratio >= self.min_mask_ratio) & (weight_sum >= self.min_weight_sum)
        return torch.where(keep, loss, torch.zeros_like(loss))


class ConfidenceGatedConsistencyLoss(nn.Module):
    """Risk-classification consistency gated by the teacher's confidence (MAGNET cls consistency).

    With ``p_t = sigmoid(teacher risk logit)`` and ``p_s = sigmoid(student risk logit)``, samples whose teacher
    confidence ``max(p_t, 1 - p_t)`` is at least ``threshold`` contribute::

        loss = sum_b m_b (p_s - p_t) ** 2 / (sum_b m_b + 1e-8)

    which is 0 when no sample is confident. ``mt_epoch`` is accepted for the common consistency-loss signature;
    this loss does not depend on it (the trainer decides from which epoch it counts).

    Args:
        num_classes: segmentation classes ``C`` per view of the packed output (locates the risk channel ``2C``).
        threshold: minimum teacher confidence of a sample that counts.
    """

    def __init__(self, num_classes: int = 3, threshold: float = 0.90) -> None:
        super().__init__()
        if not 0.5 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0.5, 1], got {threshold}.")
        self.num_classes = num_classes
        self.threshold = threshold

    def forward(self, student_out: torch.Tensor, teacher_out: torch.Tensor, mt_epoch: int = 0) -> torch.Tensor:
        """Squared difference of risk probabilities over the confidently predicted samples (scalar)."""
        _check_pair(student_out, teacher_out, type(self).__name__)
        _, cls_s = _views_and_risk(student_out, self.num_classes)
        _, cls_t = _views_and_risk(teacher_out, self.num_classes)
        prob_s = torch.sigmoid(cls_s.float())
        prob_t = torch.sigmoid(cls_t.detach().float())
        confident = (torch.maximum(prob_t, 1.0 - prob_t) >= self.threshold).float()
        return (confident * (prob_s - prob_t).pow(2)).sum() / (confident.sum() + _EPS)
