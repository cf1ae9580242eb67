"""UniMatch's Dice with an ignore mask and (CE + Dice) / 2, against hand cases and an independent computation of the
formula of UniMatch's medical ``DiceLoss`` (per class over the kept pixels of the whole batch, squared sums)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from losses.unimatch import IgnoreMaskDiceLoss, unimatch_supervised_loss

C = 3


def reference_dice(probs: torch.Tensor, target: torch.Tensor, ignore: torch.Tensor | None = None) -> torch.Tensor:
    """UniMatch's ``DiceLoss(probs, target, ignore=...)`` written out: one pixel loop per class."""
    keep = torch.ones_like(target, dtype=torch.bool) if ignore is None else ignore != 1
    losses = []
    for c in range(probs.shape[1]):
        p, g = probs[:, c][keep], (target == c).float()[keep]
        losses.append(1 - (2 * (p * g).sum() + 1e-5) / ((p * p).sum() + (g * g).sum() + 1e-5))
    return sum(losses) / len(losses)


def test_dice_of_a_hand_case():
    # one image of 2 pixels; probabilities chosen directly through their logs
    probs = torch.tensor([[[[0.5, 0.2]], [[0.25, 0.6]], [[0.25, 0.2]]]])  # (1, 3, 1, 2)
    target = torch.tensor([[[0, 1]]])
    # class 0: I = 0.5, P2 = .25 + .04, G2 = 1; class 1: I = .6, P2 = .0625 + .36, G2 = 1; class 2: I 0, G2 0
    d0 = (2 * 0.5 + 1e-5) / (0.29 + 1 + 1e-5)
    d1 = (2 * 0.6 + 1e-5) / (0.4225 + 1 + 1e-5)
    d2 = 1e-5 / (0.0625 + 0.04 + 1e-5)
    expected = ((1 - d0) + (1 - d1) + (1 - d2)) / 3
    loss = IgnoreMaskDiceLoss(C)(probs.log(), target)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # ignoring the second pixel: class 0 I .5 P2 .25 G2 1; class 1 I 0 P2 .0625 G2 0; class 2 I 0 P2 .0625 G2 0
    d0, d1 = (1 + 1e-5) / (1.25 + 1e-5), 1e-5 / (0.0625 + 1e-5)
    expected = ((1 - d0) + 2 * (1 - d1)) / 3
    mask = torch.tensor([[[True, False]]])
    assert IgnoreMaskDiceLoss(C)(probs.log(), target, mask).item() == pytest.approx(expected, rel=1e-6)


def test_dice_equals_the_reference_with_and_without_ignore_mask():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, C, 5, 7, generator=g)
    target = torch.randint(0, C, (3, 5, 7), generator=g)
    ignore = torch.rand(3, 5, 7, generator=g) < 0.4
    loss = IgnoreMaskDiceLoss(C)
    probs = logits.softmax(1)
    torch.testing.assert_close(loss(logits, target), reference_dice(probs, target))
    torch.testing.assert_close(loss(logits, target, ~ignore), reference_dice(probs, target, ignore.float()))
    # channel-first targets and float {0, 1} masks are the same
    torch.testing.assert_close(loss(logits, target[:, None], (~ignore)[:, None].float()), loss(logits, target, ~ignore))


def test_ignored_pixels_get_no_gradient_and_do_not_change_the_loss():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, C, 4, 4, generator=g, requires_grad=True)
    target = torch.randint(0, C, (2, 4, 4), generator=g)
    keep = torch.zeros(2, 4, 4, dtype=torch.bool)
    keep[:, :2] = True
    loss = IgnoreMaskDiceLoss(C)(logits, target, keep)
    loss.backward()
    assert logits.grad[:, :, 2:].abs().max() == 0 and logits.grad[:, :, :2].abs().max() > 0
    changed = logits.detach().clone()
    changed[:, :, 2:] = torch.randn(2, C, 2, 4, generator=g)
    assert IgnoreMaskDiceLoss(C)(changed, target, keep).item() == pytest.approx(loss.item())


def test_all_pixels_ignored_gives_zero():
    logits = torch.randn(2, C, 3, 3)
    assert IgnoreMaskDiceLoss(C)(logits, torch.zeros(2, 3, 3), torch.zeros(2, 3, 3)).item() == pytest.approx(0.0)


def test_supervised_loss_is_half_cross_entropy_plus_half_dice():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, C, 6, 5, generator=g)
    target = torch.randint(0, C, (2, 1, 6, 5), generator=g)
    expected = (F.cross_entropy(logits, target[:, 0]) + reference_dice(logits.softmax(1), target[:, 0])) / 2
    torch.testing.assert_close(unimatch_supervised_loss()(logits, target), expected)


def test_bad_shapes_are_named():
    loss = IgnoreMaskDiceLoss(C)
    with pytest.raises(ValueError, match="logits must be"):
        loss(torch.randn(1, 2, 3, 3), torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match="target must be"):
        loss(torch.randn(1, C, 3, 3), torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match="mask must be"):
        loss(torch.randn(1, C, 3, 3), torch.zeros(1, 3, 3), torch.ones(2, 3, 3))
