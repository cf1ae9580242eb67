"""Challenge evaluation of the retinal edema task on hand-made cubes with known scores."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from metrics.oct_cube import (
    EdemaCubeMetric,
    cube_dice,
    detection_auc,
    edema_score_table,
    evaluate_cube,
    format_edema_table,
    score_prediction_folder,
    slice_presence,
    write_score_report,
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


def write_label_cube(folder, classes: np.ndarray) -> dict:
    """A label cube folder in the challenge's grey codes from class indices."""
    from formats.oct import write_oct_cube

    codes = np.array([0, 255, 191, 128], np.uint8)[classes]
    write_oct_cube(folder, codes)
    return {"case": folder.name.removesuffix("_labelMark"), "label": str(folder)}


def probabilities_of(classes: np.ndarray, det: np.ndarray) -> np.ndarray:
    """(7, S, H, W) probabilities with argmax ``classes`` and detection probabilities ``det`` (S, 3)."""
    probs = np.eye(4, dtype=np.float32)[classes].transpose(3, 0, 1, 2)
    det_channels = np.broadcast_to(det.T[:, :, None, None], (3,) + classes.shape)
    return np.concatenate([probs, det_channels])


def test_prediction_folder_is_scored_like_the_arrays_and_missing_cubes_count_as_background(tmp_path):
    from transforms.oct import SaveOCTPredictiond

    gt_a, pred_a = make_cube(), make_cube()
    gt_a[0, 0, :2], pred_a[0, 0, :1] = 1, 1  # REA 2/3
    gt_b = make_cube()
    gt_b[1, 1, 1] = 2  # SRF in a cube that gets no prediction
    det_a = np.array([[0.9, 0.1, 0.1], [0.2, 0.3, 0.1], [0.1, 0.2, 0.1]], np.float32)
    datalist = [write_label_cube(tmp_path / "a_labelMark", gt_a), write_label_cube(tmp_path / "b_labelMark", gt_b)]
    pred_dir = tmp_path / "pred"
    SaveOCTPredictiond(pred_dir)({"case": "a", "pred": probabilities_of(pred_a, det_a)})
    table = score_prediction_folder(pred_dir, datalist, case_ms={"a": 1500.0}, peak_memory_mb={"a": 300.0})
    expected = edema_score_table(
        [evaluate_cube(pred_a, gt_a, det_a, "a"), evaluate_cube(make_cube(), gt_b, np.zeros((3, 3)), "b")]
    )
    assert table["dice"] == pytest.approx(expected["dice"], nan_ok=True)
    assert table["auc"] == pytest.approx(expected["auc"], nan_ok=True)
    assert table["dice"]["REA"] == pytest.approx(2 / 3) and table["dice"]["SRF"] == 0.0
    assert table["missing_predictions"] == ["b"]
    assert table["seconds_per_cube"] == {"mean": 1.5, "max": 1.5} and table["peak_memory_mb"]["max"] == 300.0


def test_prediction_of_the_wrong_size_names_the_cube(tmp_path):
    from transforms.oct import SaveOCTPredictiond

    datalist = [write_label_cube(tmp_path / "a_labelMark", make_cube())]
    SaveOCTPredictiond(tmp_path / "pred")({"case": "a", "pred": probabilities_of(make_cube(3, 8), np.zeros((3, 3)))})
    with pytest.raises(ValueError, match=r"cube a: prediction .* is \(3, 8, 8\)"):
        score_prediction_folder(tmp_path / "pred", datalist)


def test_score_report_prints_every_model_and_saves_json(tmp_path, capsys):
    gt = make_cube()
    gt[0, 0, 0] = 1
    table = edema_score_table([evaluate_cube(gt.copy(), gt, np.full((3, 3), 0.5), "a")])
    write_score_report({"fusion": table, "unet": table}, tmp_path / "scores.json")
    out = capsys.readouterr().out
    assert "## fusion" in out and "## unet" in out and "| unet | 1.0000 |" in out
    assert set(json.loads((tmp_path / "scores.json").read_text())) == {"fusion", "unet"}


def test_ignite_metric_gives_the_challenge_score_of_whole_cubes():
    gt_a, pred_a = make_cube(), make_cube()
    gt_a[0, 0, :2], pred_a[0, 0, :1] = 1, 1
    gt_a[2, 1, 1], pred_a[2, 1, 1] = 3, 3
    gt_b, pred_b = make_cube(), make_cube()
    gt_b[1, 0, :2], pred_b[1, 0, :2] = 1, 1
    det = np.array([[0.9, 0.1, 0.1], [0.2, 0.3, 0.1], [0.1, 0.2, 0.8]], np.float32)
    logits = torch.stack([torch.as_tensor(probabilities_of(p, det)) for p in (pred_a, pred_b)])  # (2, 7, S, H, W)
    labels = torch.as_tensor(np.stack([gt_a, gt_b]))[:, None]
    metric = EdemaCubeMetric()
    metric.update((logits[:1], labels[:1]))
    metric.update((logits[1:], labels[1:]))
    expected = edema_score_table([evaluate_cube(pred_a, gt_a, det), evaluate_cube(pred_b, gt_b, det)])
    assert metric.compute() == pytest.approx(expected["dice"]["mean"])
    assert metric.table["auc"] == pytest.approx(expected["auc"], nan_ok=True)
    with pytest.raises(ValueError, match="cube predictions"):
        metric.update((logits[:, :, 0], labels[:, :, 0]))
