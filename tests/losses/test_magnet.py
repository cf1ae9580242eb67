"""MAGNET loss: MONAI's DiceFocalLoss equals the hand-written MAGNET formulas; smoothing, weights, warm-up."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Engine

from losses.classification import LabelSmoothingBCEWithLogitsLoss
from losses.magnet import MagnetLoss, magnet_seg_loss
from networks.magnet import split_views_output


def _magnet_seg_formula(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """smp multiclass focal (sum over classes of the per-channel binary focal, mean over pixels) + MAGNET Dice."""
    num_classes = logits.shape[1]
    focal = logits.new_zeros(())
    for c in range(num_classes):
        target = (labels == c).float()
        bce = F.binary_cross_entropy_with_logits(logits[:, c], target, reduction="none")
        focal = focal + ((1 - torch.exp(-bce)) ** 2 * bce).mean()
    probs = torch.softmax(logits, dim=1)
    dice = logits.new_zeros(())
    for c in range(num_classes):
        p, g = probs[:, c], (labels == c).float()
        dice = dice + 1 - (2 * (p * g).sum() + 1e-5) / ((p * p).sum() + (g * g).sum() + 1e-5)
    return focal + dice / num_classes


def _batch(b: int = 2, size: int = 8) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    pred = torch.randn(b, 7, size, size) * 2
    target = {"label": torch.randint(0, 3, (b, 2, size, size)), "cls": torch.tensor([[1.0], [0.0]])[:b]}
    return pred, target


def test_monai_dice_focal_equals_magnet_formula() -> None:
    logits = torch.randn(4, 3, 8, 8) * 3
    labels = torch.randint(0, 3, (4, 8, 8))
    monai_value = magnet_seg_loss()(logits, labels[:, None])
    assert monai_value.item() == pytest.approx(_magnet_seg_formula(logits, labels).item(), rel=1e-5)


def test_label_smoothing_targets() -> None:
    loss = LabelSmoothingBCEWithLogitsLoss(smoothing=0.05)
    logits = torch.tensor([0.3, -1.2, 2.0])
    target = torch.tensor([1.0, 0.0, 1.0])
    expected = F.binary_cross_entropy_with_logits(logits, torch.tensor([0.975, 0.025, 0.975]))
    assert loss(logits, target).item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="smoothing"):
        LabelSmoothingBCEWithLogitsLoss(smoothing=1.0)


def test_magnet_loss_equals_hand_written_total() -> None:
    pred, target = _batch()
    terms = MagnetLoss(split_views_output).supervised_terms(pred, target)
    # the two views concatenated along the batch, as MAGNET does
    seg_logits = torch.cat([pred[:, 0:3], pred[:, 3:6]], dim=0)
    seg_labels = torch.cat([target["label"][:, 0], target["label"][:, 1]], dim=0)
    seg = _magnet_seg_formula(seg_logits, seg_labels)
    cls = F.binary_cross_entropy_with_logits(pred[:, 6, 0, 0], torch.tensor([0.975, 0.025]))
    assert terms["seg"].item() == pytest.approx(seg.item(), rel=1e-5)
    assert terms["cls"].item() == pytest.approx(cls.item(), rel=1e-5)
    assert terms["total"].item() == pytest.approx((seg + 0.3 * cls).item(), rel=1e-5)


def test_zero_cls_weight_gives_the_segmentation_loss() -> None:
    pred, target = _batch()
    loss = MagnetLoss(split_views_output, cls_weight=0.0)
    assert loss(pred, target).item() == loss.supervised_terms(pred, target)["seg"].item()


def test_gradient_reaches_every_output_channel() -> None:
    pred, target = _batch()
    pred.requires_grad_(True)
    MagnetLoss(split_views_output)(pred, target).backward()
    assert torch.isfinite(pred.grad).all()
    assert all(pred.grad[:, c].abs().sum() > 0 for c in range(7))


def test_bad_targets_raise() -> None:
    pred, target = _batch()
    with pytest.raises(ValueError, match="'label'"):
        MagnetLoss(split_views_output)(pred, {"label": target["label"][:, :1], "cls": target["cls"]})
    with pytest.raises(ValueError, match="'cls'"):
        MagnetLoss(split_views_output)(pred, {"label": target["label"]})


def test_cls_warmup_handler_switches_the_weight_on_after_15_epochs() -> None:
    loss = MagnetLoss(split_views_output, cls_weight=0.3)
    seen: list[float] = []
    trainer = Engine(lambda engine, batch: seen.append(loss.cls_weight))
    loss.cls_warmup_handler(warmup_epochs=15).attach(trainer)
    trainer.run([0], max_epochs=17)
    assert seen == [0.0] * 15 + [0.3, 0.3]
