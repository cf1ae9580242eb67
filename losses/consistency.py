"""Consistency losses of MAGNET's Mean Teacher (CSV 2026, 4th place) on plain logits.

Both losses compare the student's prediction on the strong view of an unlabelled case with the teacher's
prediction on its weak (unaugmented) view, and share the call signature ``loss(student, teacher, mt_epoch)`` that
``engines.mean_teacher.ConsistencyTerm`` uses, ``mt_epoch`` being the 0-based epoch counted from the start of the
Mean Teacher phase (0 = first MT epoch). They take logits, not a network's output: the trainer's
``ConsistencyTerm.output_transform`` takes the output apart (for MAGNET's packed two-view output,
``networks.magnet.view_logits_as_batch`` and ``networks.magnet.risk_logit``). The teacher's logits are treated
as a constant (detached).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConfidenceGatedConsistencyLoss", "TopKPlaqueConsistencyLoss"]

_EPS = 1e-8


def _check_pair(student: torch.Tensor, teacher: torch.Tensor, name: str) -> None:
    if student.shape != teacher.shape:
        raise ValueError(
            f"{name}: student and teacher logits must have the same shape, "
            f"got {tuple(student.shape)} and {tuple(teacher.shape)}."
        )


class TopKPlaqueConsistencyLoss(nn.Module):
    """Plaque-guided segmentation consistency (MAGNET ``use_plaque_topk_mask``).

    Takes segmentation logits ``(N, C, *spatial)`` of student and teacher; MAGNET passes both views of each case as
    separate images (``networks.magnet.view_logits_as_batch``). For every image separately, the ``k`` pixels with
    the highest teacher plaque probability are selected, ``k = max(1, int(k_ratio * number of pixels))``; a
    selected pixel weighs ``p_plaque ** weight_gamma`` (teacher probability), every other pixel 0. With ``p`` the
    softmax probabilities over the ``C`` classes::

        loss = sum_px w * mean_c (p_student - p_teacher) ** 2 / (sum_px w + 1e-8)

    summed over all pixels of all images. ``k_ratio`` grows linearly from ``k_ratio_start`` at ``mt_epoch`` 0 to
    ``k_ratio_end`` at ``mt_epoch == k_ratio_rampup_epochs`` and stays there. The loss is 0 (the step is skipped,
    as in MAGNET) when the fraction of selected pixels is below ``min_mask_ratio`` or the weights sum to less than
    ``min_weight_sum``; the test runs on the device, without a host synchronisation.

    Exactly ``k`` pixels are selected per image (``torch.topk`` indices); MAGNET thresholds at the k-th value,
    which selects more than ``k`` pixels only when probabilities tie.

    Args:
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
        plaque_index: int = 1,
        k_ratio_start: float = 0.01,
        k_ratio_end: float = 0.03,
        k_ratio_rampup_epochs: int = 20,
        weight_gamma: float = 2.0,
        min_mask_ratio: float = 1e-4,
        min_weight_sum: float = 1.0,
    ) -> None:
        super().__init__()
        if plaque_index < 0:
            raise ValueError(f"plaque_index must be >= 0, got {plaque_index}.")
        if not (0.0 < k_ratio_start <= 1.0 and 0.0 < k_ratio_end <= 1.0):
            raise ValueError(f"k ratios must be in (0, 1], got {k_ratio_start} and {k_ratio_end}.")
        if k_ratio_rampup_epochs < 0:
            raise ValueError(f"k_ratio_rampup_epochs must be >= 0, got {k_ratio_rampup_epochs}.")
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

    def _check_logits(self, logits: torch.Tensor) -> None:
        if logits.ndim < 3 or logits.shape[1] <= self.plaque_index:
            raise ValueError(
                f"{type(self).__name__}: expected logits (N, C, *spatial) with C > plaque_index={self.plaque_index}, "
                f"got {tuple(logits.shape)}."
            )

    def pixel_weights(self, teacher_logits: torch.Tensor, mt_epoch: int = 0) -> torch.Tensor:
        """Per-pixel weights ``(N, *spatial)`` of teacher logits ``(N, C, *spatial)``."""
        self._check_logits(teacher_logits)
        plaque = torch.softmax(teacher_logits.detach().float(), dim=1)[:, self.plaque_index]
        return self._weights(plaque, mt_epoch)

    def _weights(self, plaque: torch.Tensor, mt_epoch: int) -> torch.Tensor:
        flat = plaque.flatten(1)
        k = max(1, int(self.k_ratio(mt_epoch) * flat.shape[1]))
        selected = torch.zeros_like(flat).scatter_(1, flat.topk(k, dim=1).indices, 1.0)
        weights = selected * flat.clamp(0.0, 1.0) ** self.weight_gamma
        return weights.view_as(plaque)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, mt_epoch: int = 0) -> torch.Tensor:
        """Weighted squared difference of softmax probabilities on the top-k plaque pixels (scalar)."""
        _check_pair(student_logits, teacher_logits, type(self).__name__)
        self._check_logits(teacher_logits)
        prob_s = torch.softmax(student_logits.float(), dim=1)
        prob_t = torch.softmax(teacher_logits.detach().float(), dim=1)
        weights = self._weights(prob_t[:, self.plaque_index], mt_epoch)
        selected_ratio = (weights > 0).float().mean()
        weight_sum = weights.sum()
        per_pixel = (prob_s - prob_t).pow(2).mean(dim=1)
        loss = (per_pixel * weights).sum() / (weight_sum + _EPS)
        keep = (selected_ratio >= self.min_mask_ratio) & (weight_sum >= self.min_weight_sum)
        return torch.where(keep, loss, torch.zeros_like(loss))


class ConfidenceGatedConsistencyLoss(nn.Module):
    """Binary-classification consistency gated by the teacher's confidence (MAGNET risk consistency).

    Takes binary logits of any shape (MAGNET: the risk logit ``(B,)``, ``networks.magnet.risk_logit``). With
    ``p_t = sigmoid(teacher logit)`` and ``p_s = sigmoid(student logit)``, elements whose teacher confidence
    ``max(p_t, 1 - p_t)`` is at least ``threshold`` contribute::

        loss = sum_b m_b (p_s - p_t) ** 2 / (sum_b m_b + 1e-8)

    which is 0 when no element is confident. ``mt_epoch`` is accepted for the common consistency-loss signature;
    this loss does not depend on it (the trainer decides from which epoch it counts).

    Args:
        threshold: minimum teacher confidence of an element that counts.
    """

    def __init__(self, threshold: float = 0.90) -> None:
        super().__init__()
        if not 0.5 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0.5, 1], got {threshold}.")
        self.threshold = threshold

    def forward(self, student_logit: torch.Tensor, teacher_logit: torch.Tensor, mt_epoch: int = 0) -> torch.Tensor:
        """Squared difference of probabilities over the confidently predicted elements (scalar)."""
        _check_pair(student_logit, teacher_logit, type(self).__name__)
        prob_s = torch.sigmoid(student_logit.float())
        prob_t = torch.sigmoid(teacher_logit.detach().float())
        confident = (torch.maximum(prob_t, 1.0 - prob_t) >= self.threshold).float()
        return (confident * (prob_s - prob_t).pow(2)).sum() / (confident.sum() + _EPS)
