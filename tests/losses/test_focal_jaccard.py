"""FocalJaccardLoss: hand cases and an independent numpy computation of the reference formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from losses.focal_jaccard import FocalJaccardLoss


def _reference(logits: np.ndarray, target: np.ndarray, gamma=2.0, weight=0.1, min_voxels=16, eps=1e-4) -> float:
    """The RSNA 2022 solution's formula (selimsef/rsna_cervical_fracture) written out with numpy loops (float64)."""
    b, c = logits.shape[:2]
    z = logits.reshape(b, c, -1).astype(np.float64)
    t = target.reshape(b, -1)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p_t = np.take_along_axis(p, t[:, None], axis=1)[:, 0]
    focal = np.mean(-((1 - p_t) ** gamma) * np.log(p_t))
    per_sample = []
    for i in range(b):
        losses = []
        for k in range(1, c):
            g = (t[i] == k).astype(np.float64)
            if g.sum() <= min_voxels:
                continue
            inter = (p[i, k] * g).sum()
            losses.append(1 - (inter + eps) / (p[i, k].sum() + g.sum() - inter + eps))
        if losses:
            per_sample.append(np.mean(losses))
    jaccard = np.mean(per_sample) if per_sample else 0.0
    return focal + weight * jaccard


def test_uniform_logits_by_hand():
    # p = 0.5 everywhere: focal = 0.25 ln 2 per voxel; 32 of 64 voxels foreground: J = (16 + eps) / (48 + eps)
    logits = torch.zeros(1, 2, 4, 4, 4)
    target = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)
    target[..., :2, :, :] = 1
    expected = 0.25 * math.log(2) + 0.1 * (1 - (16 + 1e-4) / (48 + 1e-4))
    assert FocalJaccardLoss()(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_a_class_with_16_voxels_or_fewer_is_not_counted():
    logits = torch.zeros(1, 2, 4, 4, 4)
    target = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    target[0, 0] = 1  # exactly 16 voxels: not more than min_voxels
    assert FocalJaccardLoss()(logits, target).item() == pytest.approx(0.25 * math.log(2), rel=1e-6)
    assert FocalJaccardLoss(min_voxels=15)(logits, target).item() > 0.25 * math.log(2) + 0.05


def test_matches_an_independent_computation_with_per_sample_class_selection():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 4, 6, 6)).astype(np.float32)
    target = np.zeros((3, 4, 6, 6), dtype=np.int64)
    target[0, :2] = 1          # 72 voxels of class 1
    target[0, 2:, :2, :2] = 2  # 8 voxels of class 2: not counted
    target[1, :, :3] = 3       # 72 voxels of class 3
    target[1, :, 3:, :3] = 4   # 36 voxels of class 4
    # sample 2: background only, no counted class: left out of the Jaccard mean
    loss = FocalJaccardLoss(gamma=2.0, jaccard_weight=0.1, min_voxels=16)(torch.from_numpy(logits),
                                                                          torch.from_numpy(target)[:, None])
    assert loss.item() == pytest.approx(_reference(logits, target), rel=1e-5)
    other = FocalJaccardLoss(gamma=1.0, jaccard_weight=0.5, min_voxels=4)(torch.from_numpy(logits),
                                                                          torch.from_numpy(target))
    assert other.item() == pytest.approx(_reference(logits, target, 1.0, 0.5, 4), rel=1e-5)


def test_background_only_batch_has_zero_jaccard_and_a_gradient():
    logits = torch.randn(2, 3, 2, 4, 4, requires_grad=True)
    target = torch.zeros(2, 1, 2, 4, 4, dtype=torch.long)
    loss_fn = FocalJaccardLoss()
    assert loss_fn.counted_jaccard(logits.float(), target).item() == 0.0
    loss_fn(logits, target).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_bad_targets_raise():
    with pytest.raises(ValueError, match="does not fit"):
        FocalJaccardLoss()(torch.zeros(1, 3, 4, 4), torch.zeros(1, 1, 5, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        FocalJaccardLoss()(torch.zeros(1, 3, 4, 4), torch.full((1, 1, 4, 4), 3))
