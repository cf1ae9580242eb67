from __future__ import annotations

import math

import pytest
import torch

from losses.consistency import ConfidenceGatedConsistencyLoss, TopKPlaqueConsistencyLoss

C = 3  # background, plaque, vessel
H = W = 4


def views(long_plaque: torch.Tensor, trans_plaque: torch.Tensor) -> torch.Tensor:
    """Logits (2B, C, H, W) of both views as one batch (long, then transverse) whose plaque logits are given and
    other logits are 0."""
    plaque = torch.cat([long_plaque, trans_plaque], dim=0)
    out = torch.zeros(plaque.shape[0], C, H, W)
    out[:, 1] = plaque
    return out


def plaque_prob(logit: torch.Tensor) -> torch.Tensor:
    """Softmax plaque probability when the two other classes have logit 0."""
    return torch.exp(logit) / (torch.exp(logit) + 2.0)


@pytest.fixture
def teacher_logits() -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct plaque logits per pixel; the transverse view is everywhere less plaque-like than the long one."""
    long_plaque = torch.linspace(-2.0, 4.0, H * W)[torch.randperm(H * W)].view(1, H, W)
    trans_plaque = torch.linspace(-6.0, -3.0, H * W)[torch.randperm(H * W)].view(1, H, W)
    return long_plaque, trans_plaque


def test_topk_selects_exactly_the_k_most_plaque_like_pixels_weighted_by_p_squared(teacher_logits):
    loss = TopKPlaqueConsistencyLoss(k_ratio_start=0.25, k_ratio_end=0.25)  # k = 4 of 16 pixels
    weights = loss.pixel_weights(views(*teacher_logits))
    assert weights.shape == (2, H, W)  # (long, trans) of the single case
    for view, logits in enumerate(teacher_logits):
        flat_logits = logits.flatten()
        top4 = set(flat_logits.argsort(descending=True)[:4].tolist())
        flat_w = weights[view].flatten()
        assert set(torch.nonzero(flat_w).flatten().tolist()) == top4
        expected = plaque_prob(flat_logits) ** 2
        idx = sorted(top4)
        torch.testing.assert_close(flat_w[idx], expected[idx])


def test_topk_loss_value_by_hand(teacher_logits):
    long_plaque, trans_plaque = teacher_logits
    teacher = views(long_plaque, trans_plaque)
    loss = TopKPlaqueConsistencyLoss(k_ratio_start=2 / 16, k_ratio_end=2 / 16, min_weight_sum=0.0)  # k = 2
    order = long_plaque.flatten().argsort(descending=True)
    first, second, third = (divmod(int(i), W) for i in order[:3])
    student = teacher.clone()
    student[0, 0, first[0], first[1]] = 1.0  # long-view background logit at the most plaque-like pixel
    p_t = torch.softmax(teacher[0, :, first[0], first[1]], 0)
    p_s = torch.softmax(student[0, :, first[0], first[1]], 0)
    diff = ((p_s - p_t) ** 2).mean()
    w1 = plaque_prob(long_plaque[0][first]) ** 2
    w2 = plaque_prob(long_plaque[0][second]) ** 2
    # the transverse view contributes its own two selected pixels to the denominator
    trans_top = trans_plaque.flatten().sort(descending=True).values[:2]
    w_trans = (plaque_prob(trans_top) ** 2).sum()
    torch.testing.assert_close(loss(student, teacher), diff * w1 / (w1 + w2 + w_trans))
    # a difference at the third pixel, outside the top 2, does not count
    student = teacher.clone()
    student[0, 0, third[0], third[1]] = 1.0
    assert loss(student, teacher).item() == 0.0


def test_topk_views_select_separately(teacher_logits):
    long_plaque, trans_plaque = teacher_logits
    teacher = views(long_plaque, trans_plaque)
    loss = TopKPlaqueConsistencyLoss(k_ratio_start=1 / 16, k_ratio_end=1 / 16, min_weight_sum=0.0)
    top = divmod(int(trans_plaque.flatten().argmax()), W)
    student = teacher.clone()
    student[1, 0, top[0], top[1]] = 1.0  # transverse background logit at the transverse view's top pixel
    assert loss(student, teacher).item() > 0.0


def test_topk_ratio_ramps_linearly_over_mt_epochs(teacher_logits):
    long_plaque, trans_plaque = teacher_logits
    teacher = views(long_plaque, trans_plaque)
    loss = TopKPlaqueConsistencyLoss(k_ratio_start=1 / 16, k_ratio_end=4 / 16, k_ratio_rampup_epochs=3)
    assert [loss.k_ratio(e) for e in (0, 1, 3, 10)] == pytest.approx([1 / 16, 2 / 16, 4 / 16, 4 / 16])
    assert [int((loss.pixel_weights(teacher, e)[0] > 0).sum()) for e in (0, 1, 2, 3, 7)] == [1, 2, 3, 4, 4]
    second = divmod(int(long_plaque.flatten().argsort(descending=True)[1]), W)
    student = teacher.clone()
    student[0, 0, second[0], second[1]] = 1.0
    assert loss(student, teacher, 0).item() == 0.0
    assert loss(student, teacher, 1).item() > 0.0


def test_topk_skipped_when_mask_too_small_or_too_light(teacher_logits):
    long_plaque, trans_plaque = teacher_logits
    teacher = views(long_plaque, trans_plaque)
    student = teacher + torch.randn_like(teacher)
    default = TopKPlaqueConsistencyLoss(k_ratio_start=0.25, k_ratio_end=0.25)
    assert default(student, teacher).item() > 0.0
    too_few = TopKPlaqueConsistencyLoss(k_ratio_start=0.25, k_ratio_end=0.25, min_mask_ratio=0.3)
    assert too_few(student, teacher).item() == 0.0
    # teacher nearly sure there is no plaque: weights p^2 sum below 1 -> skipped (MAGNET), unless allowed
    faint = views(torch.full((1, H, W), -8.0), torch.full((1, H, W), -8.0))
    assert default(faint + torch.randn_like(faint), faint).item() == 0.0
    permissive = TopKPlaqueConsistencyLoss(k_ratio_start=0.25, k_ratio_end=0.25, min_weight_sum=0.0)
    assert permissive(faint + torch.randn_like(faint), faint).item() > 0.0


def test_topk_gradient_reaches_student_only(teacher_logits):
    teacher = views(*teacher_logits).requires_grad_(True)
    student = (teacher.detach() + 0.5 * torch.randn_like(teacher)).requires_grad_(True)
    TopKPlaqueConsistencyLoss(k_ratio_start=0.5, k_ratio_end=0.5)(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_topk_takes_any_spatial_dims():
    teacher = torch.randn(2, C, 3, 4, 5)
    student = teacher + torch.randn_like(teacher)
    loss = TopKPlaqueConsistencyLoss(k_ratio_start=0.1, k_ratio_end=0.1, min_weight_sum=0.0)
    assert loss.pixel_weights(teacher).shape == (2, 3, 4, 5)
    assert ((loss.pixel_weights(teacher) > 0).flatten(1).sum(1) == 6).all()  # int(0.1 * 60) per image
    assert loss(student, teacher).item() > 0.0


def test_topk_rejects_wrong_layout():
    loss = TopKPlaqueConsistencyLoss(plaque_index=1)
    with pytest.raises(ValueError, match="plaque_index"):
        loss(torch.zeros(1, 1, H, W), torch.zeros(1, 1, H, W))
    with pytest.raises(ValueError, match="same shape"):
        loss(torch.zeros(1, C, H, W), torch.zeros(2, C, H, W))


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def test_confidence_gate_counts_only_confident_teacher_samples():
    teacher = torch.tensor([logit(0.95), logit(0.5), logit(0.02)])
    student = torch.tensor([logit(0.85), logit(0.1), logit(0.12)])
    loss = ConfidenceGatedConsistencyLoss(threshold=0.90)
    # samples 0 and 2 are confident: ((0.85 - 0.95)^2 + (0.12 - 0.02)^2) / 2
    torch.testing.assert_close(loss(student, teacher), torch.tensor(0.01))


def test_confidence_gate_is_zero_without_confident_samples():
    teacher = torch.tensor([logit(0.6), logit(0.3)])
    student = torch.tensor([logit(0.99), logit(0.01)])
    assert ConfidenceGatedConsistencyLoss(threshold=0.90)(student, teacher).item() == 0.0
