"""Exponential-logarithmic Dice, plain batch Dice and the retinal edema multi-task loss on hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from losses.exp_log import BatchDiceLoss, EdemaLoss, ExpLogDiceLoss, batch_dice_per_class, lesion_presence


def logits_from_probs(probs: np.ndarray) -> torch.Tensor:
    """(C, N) class probabilities of N pixels -> (1, C, 1, N) logits whose softmax gives them back."""
    return torch.log(torch.as_tensor(probs, dtype=torch.float64))[None, :, None, :].float()


def onehot_logits(target: torch.Tensor, num_classes: int, scale: float = 50.0) -> torch.Tensor:
    """Logits that put (almost) all probability on the target class of each pixel; target (B, 1, H, W)."""
    return scale * torch.nn.functional.one_hot(target[:, 0].long(), num_classes).movedim(-1, 1).float()


# 4 pixels, 2 classes: lesion probabilities 0.8, 0.6, 0.3, 0.1 on a target 1, 1, 0, 0
P1 = np.array([0.8, 0.6, 0.3, 0.1])
TARGET = torch.tensor([1, 1, 0, 0])[None, None, None, :]
DICE = 2 * (0.8 + 0.6) / (P1.sum() + 2)  # 2.8 / 3.8


def test_known_dice_value():
    logits = logits_from_probs(np.stack([1 - P1, P1]))
    dice = batch_dice_per_class(logits, TARGET)
    assert dice.shape == (1,)
    assert dice.item() == pytest.approx(DICE, rel=1e-5)
    assert ExpLogDiceLoss(gamma=0.5)(logits, TARGET).item() == pytest.approx(math.sqrt(-math.log(DICE)), rel=1e-5)
    assert ExpLogDiceLoss(gamma=1.0)(logits, TARGET).item() == pytest.approx(-math.log(DICE), rel=1e-5)
    assert BatchDiceLoss()(logits, TARGET).item() == pytest.approx(1 - DICE, rel=1e-5)


def test_absent_class_counts_as_dice_one():
    # class 2 is predicted with probability 0.2 everywhere but absent from the target
    probs = np.stack([0.8 * (1 - P1), 0.8 * P1, np.full(4, 0.2)])
    logits = logits_from_probs(probs)
    d1 = 2 * (0.8 * 0.8 + 0.8 * 0.6) / (0.8 * P1.sum() + 2)
    dice = batch_dice_per_class(logits, TARGET)
    assert dice.tolist() == pytest.approx([d1, 1.0], rel=1e-5)
    assert ExpLogDiceLoss()(logits, TARGET).item() == pytest.approx((math.sqrt(-math.log(d1)) + 0) / 2, rel=1e-5)
    assert BatchDiceLoss()(logits, TARGET).item() == pytest.approx(1 - (d1 + 1) / 2, rel=1e-5)


def test_dice_is_pooled_over_the_batch():
    # lesion only in image 0; image 1 predicts lesion probability 0.5 on two pixels (false positives)
    p = np.array([[0.8, 0.6, 0.3, 0.1], [0.5, 0.5, 0.0, 0.0]])
    probs = np.stack([1 - p, p], axis=1)  # (B, C, N)
    logits = torch.log(torch.as_tensor(probs).clamp_min(1e-12))[:, :, None, :].float()
    target = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])[:, None, None, :]
    expected = 2 * 1.4 / (p.sum() + 2)
    assert batch_dice_per_class(logits, target).item() == pytest.approx(expected, rel=1e-4)


def test_perfect_prediction_gives_zero():
    target = torch.tensor([[0, 1, 2, 3], [0, 0, 1, 1], [3, 3, 0, 0], [2, 0, 0, 1]])[None, None]
    logits = onehot_logits(target, 4)
    assert ExpLogDiceLoss()(logits, target).item() == pytest.approx(0.0, abs=1e-3)
    assert BatchDiceLoss()(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    det = 50.0 * (2 * lesion_presence(target) - 1)
    packed = torch.cat([logits, det[:, :, None, None].expand(1, 3, 4, 4)], dim=1)
    assert EdemaLoss()(packed, target).item() == pytest.approx(0.0, abs=1e-3)


def test_gradients_stay_finite_near_perfect_and_absent_classes():
    target = torch.tensor([[0, 1, 1, 0]])[None]
    logits = onehot_logits(target, 4, scale=30.0).requires_grad_(True)
    ExpLogDiceLoss()(logits, target).backward()
    assert torch.isfinite(logits.grad).all()


def test_include_background_scores_class_zero():
    logits = logits_from_probs(np.stack([1 - P1, P1]))
    d0 = 2 * (0.7 + 0.9) / ((1 - P1).sum() + 2)
    assert batch_dice_per_class(logits, TARGET, include_background=True).tolist() == pytest.approx([d0, DICE], rel=1e-5)


def test_ignore_index_pixels_are_left_out_of_dice():
    logits = logits_from_probs(np.stack([np.r_[1 - P1, 0.1], np.r_[P1, 0.9]]))
    target = torch.tensor([1, 1, 0, 0, 255])[None, None, None, :]
    assert batch_dice_per_class(logits, target).item() == pytest.approx(DICE, rel=1e-5)


def test_weighted_nll_matches_hand_computation():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, 3)
    target = torch.randint(0, 4, (2, 1, 3, 3))
    target[0, 0, 0, 0] = 255
    weights = np.array([1.0, 5.0, 10.0, 20.0])
    logp = torch.log_softmax(logits, dim=1).numpy()
    num = den = 0.0
    for b in range(2):
        for i in range(3):
            for j in range(3):
                y = int(target[b, 0, i, j])
                if y == 255:
                    continue
                num += -weights[y] * logp[b, y, i, j]
                den += weights[y]
    loss = EdemaLoss(dice_weight=0.0, det_weight=0.0)(logits, target)
    assert loss.item() == pytest.approx(num / den, rel=1e-5)


def test_detection_bce_uses_slice_presence_from_the_mask():
    target = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    target[0, 0, 1, 1] = 1  # image 0: REA
    target[1, 0, 2, 2] = 3  # image 1: PED
    target[1, 0, 0, 0] = 255  # ignored pixels are no lesion
    assert lesion_presence(target).tolist() == [[1, 0, 0], [0, 0, 1]]
    det = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.0, 1.5]])
    packed = torch.cat([torch.zeros(2, 4, 4, 4), det[:, :, None, None].expand(2, 3, 4, 4)], dim=1)
    y = np.array([[1, 0, 0], [0, 0, 1]], dtype=float)
    p = 1 / (1 + np.exp(-det.numpy()))
    expected = float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))
    loss = EdemaLoss(nll_weight=0.0, dice_weight=0.0)(packed, target)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_edema_loss_is_the_weighted_sum_of_its_terms():
    torch.manual_seed(1)
    out = torch.randn(2, 7, 8, 8)
    target = torch.randint(0, 4, (2, 1, 8, 8))
    nll = EdemaLoss(dice_weight=0, det_weight=0)(out, target)
    dice = EdemaLoss(nll_weight=0, det_weight=0, dice="plain")(out, target)
    det = EdemaLoss(nll_weight=0, dice_weight=0)(out, target)
    combined = EdemaLoss(nll_weight=2.0, dice="plain", dice_weight=0.5, det_weight=3.0)(out, target)
    assert combined.item() == pytest.approx(2 * nll.item() + 0.5 * dice.item() + 3 * det.item(), rel=1e-5)
    # without detection channels there is no detection term
    seg_only = EdemaLoss()(out[:, :4], target)
    assert seg_only.item() == pytest.approx(EdemaLoss(det_weight=0)(out, target).item(), rel=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="explog"):
        EdemaLoss(dice="focal")
    with pytest.raises(ValueError, match="class_weights"):
        EdemaLoss(class_weights=(1, 2))
