"""CSV 2026 score: DSC / NSD / F1 on hand-made cases, the table, and the Ignite metric in an evaluator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.engines import SupervisedEvaluator
from scipy.ndimage import binary_erosion, distance_transform_edt, gaussian_filter
from torch import nn

from engines.prepare_batch import PrepareBatchMultiTarget
from metrics.csv2026 import (
    CASE_KEYS,
    CONFUSION_KEYS,
    CSV2026Metric,
    case_segmentation_scores,
    csv2026_score_table,
    dice,
    f1_scores,
    format_score_table,
    normalized_surface_dice,
    time_score,
)


def _square(top: int, left: int, size: int, shape: tuple[int, int] = (10, 10)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


def _reference_nsd(pred: np.ndarray, gt: np.ndarray, tolerance: float) -> float:
    """The organisers' definition written out with scipy (both masks non-empty)."""
    pred_edge, gt_edge = pred ^ binary_erosion(pred), gt ^ binary_erosion(gt)
    pred_ok = (distance_transform_edt(~gt_edge)[pred_edge] <= tolerance).sum()
    gt_ok = (distance_transform_edt(~pred_edge)[gt_edge] <= tolerance).sum()
    return (pred_ok + gt_ok) / (pred_edge.sum() + gt_edge.sum())


def test_square_shifted_by_one_pixel() -> None:
    # A = rows 2-5 x cols 2-5, B = rows 2-5 x cols 3-6: |A| = |B| = 16, overlap 4 x 3 = 12 -> DSC 24 / 32.
    a, b = _square(2, 2, 4), _square(2, 3, 4)
    assert dice(a, b) == pytest.approx(0.75)
    # Each boundary = 16 - 2x2 interior = 12 px. Boundaries coincide on rows 2 and 5, cols 3-5: 6 px of each.
    # tolerance 0 -> (6 + 6) / 24; every other boundary px is 1 px from the other boundary -> 1 at tau >= 1.
    assert normalized_surface_dice(a, b, tolerance=0.0) == pytest.approx(0.5)
    assert normalized_surface_dice(a, b, tolerance=0.5) == pytest.approx(0.5)
    assert normalized_surface_dice(a, b, tolerance=1.0) == pytest.approx(1.0)
    assert normalized_surface_dice(a, b) == pytest.approx(1.0)


def test_identical_disjoint_and_empty_masks() -> None:
    a = _square(2, 2, 4)
    assert dice(a, a) == 1.0 and normalized_surface_dice(a, a) == 1.0
    # 3x3 squares at (0, 0) and (12, 12) of a 16x16 image: no overlap, nearest boundary px 10*sqrt(2) apart.
    far_a, far_b = _square(0, 0, 3, (16, 16)), _square(12, 12, 3, (16, 16))
    assert dice(far_a, far_b) == 0.0 and normalized_surface_dice(far_a, far_b) == 0.0
    empty = np.zeros((10, 10), dtype=bool)
    # DSC of a class absent from both masks: 0 as medpy's dc in MAGNET and the official baseline; 1 selectable
    assert dice(empty, empty) == 0.0 and normalized_surface_dice(empty, empty) == 1.0
    assert dice(empty, empty, empty_score=1.0) == 1.0
    assert dice(a, empty) == 0.0 and dice(empty, a) == 0.0
    assert normalized_surface_dice(a, empty) == 0.0 and normalized_surface_dice(empty, a) == 0.0


def test_nsd_tolerance_is_inclusive() -> None:
    # gt: one pixel at (5, 5); pred: pixels at (5, 2) (3 px away) and (5, 9) (4 px away). Single pixels are
    # their own boundary. Matched: pred (5, 2) and the gt pixel (its nearest pred pixel is exactly 3 away)
    # -> (1 + 1) / (2 + 1) = 2/3. Just below 3 nothing matches.
    gt = np.zeros((10, 10), dtype=bool)
    gt[5, 5] = True
    pred = np.zeros_like(gt)
    pred[5, 2] = pred[5, 9] = True
    assert normalized_surface_dice(pred, gt, tolerance=3.0) == pytest.approx(2 / 3)
    assert normalized_surface_dice(pred, gt, tolerance=2.99) == 0.0
    # diagonal offset (2, 2): distance sqrt(8) = 2.83 <= 3 counts; (3, 3): sqrt(18) = 4.24 does not
    diag = np.zeros_like(gt)
    diag[3, 3] = True
    assert normalized_surface_dice(diag, gt) == 1.0
    diag[3, 3], diag[2, 2] = False, True
    assert normalized_surface_dice(diag, gt) == 0.0


def test_nsd_matches_the_organisers_formula_on_random_blobs() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        # smooth blobs that also touch the image border (outside counts as background for the erosion)
        pred, gt = (gaussian_filter(rng.random((24, 20)), 2.0) for _ in range(2))
        pred, gt = pred > np.median(pred), gt > np.median(gt)
        for tol in (0.0, 1.0, 1.5, 3.0):
            assert normalized_surface_dice(pred, gt, tol) == pytest.approx(_reference_nsd(pred, gt, tol))


def test_mismatched_shapes_raise() -> None:
    with pytest.raises(ValueError, match="shape"):
        dice(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="shape"):
        normalized_surface_dice(np.zeros((4, 4)), np.zeros((4, 5)))


def test_case_segmentation_scores() -> None:
    # long view perfect; transverse: plaque perfect, vessel missed entirely (DSC 0, NSD 0)
    gt = np.zeros((12, 12), dtype=np.int64)
    gt[2:5, 2:8] = 2
    gt[6:9, 3:6] = 1
    pred_trans = np.where(gt == 2, 0, gt)
    scores = case_segmentation_scores(gt, pred_trans, gt, gt)
    assert tuple(scores) == CASE_KEYS
    assert scores["long_plaque_score"] == 1.0 and scores["long_score"] == 1.0
    assert scores["trans_vessel_dsc"] == 0.0 and scores["trans_vessel_nsd"] == 0.0
    # S_trans = 0.6 * 1 + 0.4 * 0 = 0.6; S_seg = 0.5 * 1 + 0.5 * 0.6 = 0.8
    assert scores["trans_score"] == pytest.approx(0.6)
    assert scores["seg_score"] == pytest.approx(0.8)


def test_class_absent_from_both_masks_scores_dsc_0_by_default() -> None:
    gt = np.zeros((12, 12), dtype=np.int64)
    gt[2:5, 2:8] = 2  # vessel only, no plaque in either view
    scores = case_segmentation_scores(gt, gt, gt, gt)
    assert scores["long_plaque_dsc"] == 0.0 and scores["long_plaque_nsd"] == 1.0
    assert scores["long_plaque_score"] == 0.5 and scores["long_vessel_score"] == 1.0
    assert case_segmentation_scores(gt, gt, gt, gt, empty_score=1.0)["long_plaque_dsc"] == 1.0


def test_f1_binary_and_macro() -> None:
    pred = [1, 1, 1, 0, 0, 0]
    true = [1, 0, 0, 0, 0, 1]
    # class 1: TP 1 (idx 0), FP 2 (idx 1, 2), FN 1 (idx 5) -> 2 / (2 + 2 + 1) = 0.4
    # class 0: TP 2 (idx 3, 4), FP 1 (idx 5), FN 2 (idx 1, 2) -> 4 / (4 + 1 + 2) = 4/7
    f1 = f1_scores(pred, true)
    assert f1["f1_high_risk"] == pytest.approx(0.4)
    assert f1["f1_low_risk"] == pytest.approx(4 / 7)
    assert f1["f1_macro"] == pytest.approx((0.4 + 4 / 7) / 2)
    # no high-risk case anywhere: its F1 is undefined -> 0 (zero_division); low risk perfect -> macro 0.5
    none = f1_scores([0, 0, 0], [0, 0, 0])
    assert (none["f1_high_risk"], none["f1_low_risk"], none["f1_macro"]) == (0.0, 1.0, 0.5)
    with pytest.raises(ValueError, match="0 \\(low risk\\) and 1"):
        f1_scores([0, 2], [0, 1])


def test_time_score() -> None:
    assert time_score(150.0, 100.0, 200.0) == pytest.approx(50.0)
    assert time_score(50.0, 100.0, 200.0) == 100.0 and time_score(300.0, 100.0, 200.0) == 0.0
    with pytest.raises(ValueError, match="T_max"):
        time_score(1.0, 2.0, 2.0)


def test_score_table_and_text() -> None:
    case_a = dict.fromkeys(CASE_KEYS, 1.0)
    case_b = dict.fromkeys(CASE_KEYS, 0.5)
    table = csv2026_score_table([case_a, case_b], [1, 0], [1, 1], time_ms=[10.0, 30.0])
    assert table["seg_score"] == pytest.approx(0.75) and table["long_plaque_dsc"] == pytest.approx(0.75)
    # high risk: TP 1, FN 1 -> 2/3; low risk: TP 0, FP 1 -> 0; macro 1/3
    assert table["f1_high_risk"] == pytest.approx(2 / 3) and table["f1_macro"] == pytest.approx(1 / 3)
    assert table["score"] == pytest.approx(0.4 * 2 / 3 + 0.4 * 0.75)
    assert table["score_macro"] == pytest.approx(0.4 / 3 + 0.4 * 0.75)
    assert table["time_ms"] == 20.0 and table["num_cases"] == 2
    # rows: true class, columns: predicted class
    assert [table[k] for k in CONFUSION_KEYS] == [0, 0, 1, 1]
    text = format_score_table(table)
    assert "S_seg" in text and "0.7500" in text and "20.0 ms" in text
    assert "true low                      0         0" in text and "true high                     1         1" in text
    with pytest.raises(ValueError, match="2 segmentation cases"):
        csv2026_score_table([case_a, case_b], [1], [1])


def _network_output(masks: torch.Tensor, cls_logits: torch.Tensor, num_classes: int = 3) -> torch.Tensor:
    """(B, 2, H, W) class indices + (B,) logits -> (B, 2C+1, H, W) logits whose argmax gives the masks."""
    views = [nn.functional.one_hot(masks[:, v].long(), num_classes).permute(0, 3, 1, 2).float() * 10 for v in (0, 1)]
    cls = cls_logits.float()[:, None, None, None].expand(-1, 1, *masks.shape[2:])
    return torch.cat([*views, cls], dim=1)


def test_ignite_metric_on_a_dummy_engine() -> None:
    label = torch.zeros(2, 2, 12, 12, dtype=torch.int64)
    label[:, :, 2:5, 2:8] = 2
    label[:, :, 6:9, 3:6] = 1
    pred_masks = label.clone()
    pred_masks[1, 1][pred_masks[1, 1] == 2] = 0  # case 2 misses the transverse vessel -> S_seg 0.8
    pred = _network_output(pred_masks, torch.tensor([3.0, -3.0]))
    batches = [{"pred": pred, "label": {"label": label, "cls": torch.tensor([[1.0], [1.0]])}}]
    engine = Engine(lambda e, batch: batch)
    metric = CSV2026Metric()
    metric.attach(engine, "csv")
    engine.run(batches, max_epochs=1)
    metrics = engine.state.metrics
    # S_seg = mean(1.0, 0.8) = 0.9; high risk: TP 1, FN 1 -> F1 2/3
    assert metrics["csv/seg_score"] == pytest.approx(0.9)
    assert metrics["csv/f1_high_risk"] == pytest.approx(2 / 3)
    assert metrics["csv"] == pytest.approx(0.4 * 2 / 3 + 0.4 * 0.9)
    assert metric.table["score"] == metrics["csv"]
    assert {f"csv/{key}" for key in CASE_KEYS} <= set(metrics)
    assert [metrics[f"csv/{k}"] for k in CONFUSION_KEYS] == [0, 0, 1, 1]


class _EchoNet(nn.Module):
    """Predicts the masks it receives as the image (class indices) and high risk everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _network_output(x.round(), torch.full((x.shape[0],), 5.0))


def test_metric_as_key_metric_of_a_monai_evaluator() -> None:
    label = torch.zeros(2, 12, 12, dtype=torch.int64)
    label[:, 3:9, 2:10] = 2
    label[:, 5:7, 4:7] = 1
    data = [{"image": label.float(), "label": label, "cls": torch.tensor([float(i % 2)])} for i in range(4)]
    loader = torch.utils.data.DataLoader(data, batch_size=2)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=loader,
        network=_EchoNet(),
        prepare_batch=PrepareBatchMultiTarget(target_keys=("label", "cls")),
        key_val_metric={"val_csv": CSV2026Metric()},
        decollate=False,
    )
    evaluator.run()
    # perfect masks -> S_seg 1; all predicted high risk, 2 of 4 are -> F1 = 2*2 / (2*2 + 2) = 2/3
    assert evaluator.state.metrics["val_csv/seg_score"] == pytest.approx(1.0)
    assert evaluator.state.metrics["val_csv"] == pytest.approx(0.4 * 2 / 3 + 0.4)
    assert evaluator.state.best_metric == pytest.approx(0.4 * 2 / 3 + 0.4)
