"""Challenge evaluation of the retinal edema task on hand-made cubes with known scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metrics.oct_cube import (
    cube_dice,
    detection_auc,
    edema_score_table,
    evaluate_cube,
    format_edema_table,
    slice_presence,
)


def make_cube(slices: int = 3, size: int = 4) -> np.ndarray:
    return np.zeros((slices, size, size), dtype=np.uint8)


def test_cube_dice_known_values_and_absent_lesion():
    gt, pred = make_cube(), make_cube()
    gt[0, :2, :2] = 1  # REA: 4 voxels
    pred[0, :2, :1] = 1  # 2 of them predicted ...
    pred[2, 3, 3] = 1  # ... plus 1 false positive on another slice
    gt[1, 0, :] = 2  # SRF: 4 voxels, none predicted
    pred[1, 3, :] = 3  # PED predicted but absent from the ground truth
    dice = cube_dice(pred, gt)
    assert dice["REA"] == pytest.approx(2 * 2 / (3 + 4))
    assert dice["SRF"] == 0.0
    assert math.isnan(dice["PED"])


def test_cube_dice_accepts_tensors_and_checks_shapes():
    gt = torch.zeros(2, 3, 3, dtype=torch.long)
    gt[0, 0, 0] = 3
    assert cube_dice(gt.clone(), gt)["PED"] == 1.0
    with pytest.raises(ValueError, match="shape"):
        cube_dice(gt[:1], gt)


def test_slice_presence():
    gt = make_cube(slices=4)
    gt[0, 0, 0] = 1
    gt[2, 1, 1] = 3
    gt[2, 2, 2] = 2
    assert slice_presence(gt).tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 1], [0, 0, 0]]


def test_detection_auc_known_values():
    truth = np.array([[1, 0, 1], [1, 1, 1], [0, 0, 1], [0, 1, 1]])
    probs = np.array([[0.9, 0.2, 0.5], [0.8, 0.4, 0.5], [0.1, 0.3, 0.5], [0.2, 0.1, 0.5]])
    auc = detection_auc(probs, truth)
    assert auc["REA"] == 1.0
    # SRF positives 0.4, 0.1 vs negatives 0.2, 0.3: pairs won 0.4>0.2, 0.4>0.3 -> 2 of 4
    assert auc["SRF"] == pytest.approx(0.5)
    assert math.isnan(auc["PED"])  # all slices positive: undefined, left out of the mean
    assert auc["mean"] == pytest.approx(0.75)


def test_detection_auc_pools_the_slices_of_all_cubes():
    per_cube_probs = [np.array([[0.9, 0.1, 0.1], [0.2, 0.2, 0.7]]), np.array([[0.6, 0.8, 0.3]])]
    per_cube_truth = [np.array([[1, 0, 0], [0, 0, 1]]), np.array([[0, 1, 0]])]
    pooled = detection_auc(per_cube_probs, per_cube_truth)
    assert pooled == detection_auc(np.concatenate(per_cube_probs), np.concatenate(per_cube_truth))
    assert pooled["REA"] == pytest.approx(1.0) and pooled["mean"] == pytest.approx(1.0)


def test_score_table_averages_each_lesion_over_cubes_that_have_it():
    gt_a, pred_a = make_cube(), make_cube()
    gt_a[0, 0, :2] = 1
    pred_a[0, 0, :1] = 1  # REA dice 2/3
    gt_a[1, 0, 0] = 2
    pred_a[1, 0, 0] = 2  # SRF dice 1
    gt_b, pred_b = make_cube(), make_cube()
    gt_b[0, 0, :2] = 1
    pred_b[0, 0, :2] = 1  # REA dice 1
    gt_b[2, 3, 3] = 3  # PED missed: dice 0
    probs_a = np.array([[0.9, 0.1, 0.2], [0.3, 0.8, 0.1], [0.1, 0.1, 0.3]])
    probs_b = np.array([[0.8, 0.2, 0.1], [0.2, 0.3, 0.2], [0.4, 0.2, 0.6]])
    results = [
        evaluate_cube(pred_a, gt_a, probs_a, case="a"),
        evaluate_cube(pred_b, gt_b, probs_b, case="b"),
    ]
    table = edema_score_table(results)
    assert table["dice"]["REA"] == pytest.approx((2 / 3 + 1) / 2)
    assert table["dice"]["SRF"] == pytest.approx(1.0)  # cube b has no SRF: left out
    assert table["dice"]["PED"] == pytest.approx(0.0)
    assert table["dice"]["mean"] == pytest.approx(((2 / 3 + 1) / 2 + 1 + 0) / 3)
    assert table["n_cubes"] == {"REA": 2, "SRF": 1, "PED": 1}
    assert table["auc"]["REA"] == 1.0 and table["auc"]["SRF"] == 1.0 and table["auc"]["PED"] == 1.0
    assert [row["case"] for row in table["cases"]] == ["a", "b"]
    text = format_edema_table(table, per_case=True)
    assert "| Dice |" in text and "| AUC |" in text and "| b |" in text and "n/a" in text


def test_score_table_without_detection_and_with_a_lesion_nowhere():
    gt = make_cube()
    gt[0, 0, 0] = 1
    table = edema_score_table([evaluate_cube(gt.copy(), gt)])
    assert table["auc"] is None
    assert math.isnan(table["dice"]["SRF"]) and table["dice"]["mean"] == 1.0
    assert "AUC" not in format_edema_table(table)


def test_evaluate_cube_checks_detection_shape():
    with pytest.raises(ValueError, match="det_probs"):
        evaluate_cube(make_cube(), make_cube(), np.zeros((2, 3)), case="x")
