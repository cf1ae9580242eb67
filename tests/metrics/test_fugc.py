"""FUGC 2025 metrics on hand-made masks whose Dice and Hausdorff distance are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from PIL import Image

from formats.errors import CaseReadError
from metrics.fugc import (
    CASE_KEYS,
    FUGCMetric,
    case_scores,
    dice_per_class,
    fugc_score_table,
    hausdorff_distance,
    hausdorff_per_map,
    score_folder,
)


def test_dice_per_class_by_hand():
    label = np.zeros((6, 8), np.uint8)
    label[1:3, 1:4] = 1  # 6 px anterior
    label[4, 1:3] = 2  # 2 px posterior
    pred = np.zeros_like(label)
    pred[1:3, 1:3] = 1  # 4 px, all inside the label's 6: Dice 2 * 4 / (4 + 6) = 0.8
    pred[5, 1:3] = 2  # 2 px, none overlapping: Dice 0
    dice = dice_per_class(pred, label)
    assert dice["anterior"] == pytest.approx(0.8, abs=1e-6)
    assert dice["posterior"] == pytest.approx(0.0, abs=1e-6)
    assert case_scores(pred, label)["dice"] == pytest.approx(0.4, abs=1e-6)


def test_dice_of_empty_classes_follows_the_organisers_smoothing():
    empty = np.zeros((4, 4), np.uint8)
    one = empty.copy()
    one[1, 1] = 1
    assert dice_per_class(empty, empty) == {"anterior": 1.0, "posterior": 1.0}  # absent from both: perfect
    assert dice_per_class(empty, one)["anterior"] == pytest.approx(0.0, abs=1e-5)  # missed: 1e-6 / (1 + 1e-6)
    assert math.isnan(dice_per_class(empty, empty, smooth=0.0)["anterior"])


def test_hausdorff_by_hand():
    a, b = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    a[0, 0], b[3, 4] = True, True
    assert hausdorff_distance(a, b) == pytest.approx(5.0)  # a 3-4-5 triangle
    square = np.zeros((12, 14), bool)
    square[2:5, 2:5] = True
    spur = square.copy()
    spur[2, 10] = True  # 6 px right of the square's corner (2, 4); the square lies inside spur: 0 the other way
    assert hausdorff_distance(square, spur) == pytest.approx(6.0)
    assert hausdorff_distance(spur, square) == pytest.approx(6.0)  # symmetric


def test_hausdorff_is_itks_full_distance_not_the_edge_distance():
    rows, cols = np.mgrid[:41, :41]
    radius = np.hypot(rows - 20, cols - 20)
    ring, hole = (radius >= 8) & (radius <= 10), radius < 8
    # the centre of the hole is 8 px from the ring: ITK's value; MONAI's edge-to-edge distance gives 3 here
    assert hausdorff_distance(hole, ring) == pytest.approx(8.0)
    # scattered pixels: the values of ITK 5.4's HausdorffDistanceImageFilter (the filter SimpleITK wraps) on these
    # masks, recorded once (loading the filter in Python takes ~20 s, too slow for a unit test)
    rng = np.random.default_rng(0)
    for itk_value in (8.06225774829855, 6.708203932499369, 9.0):
        a, b = rng.random((30, 40)) > 0.97, rng.random((30, 40)) > 0.95
        assert hausdorff_distance(a, b) == pytest.approx(itk_value, abs=1e-9)


def test_hausdorff_of_empty_masks():
    empty, one = np.zeros((4, 5), bool), np.zeros((4, 5), bool)
    one[2, 2] = True
    assert hausdorff_distance(empty, empty) == 0.0
    assert hausdorff_distance(empty, one) == pytest.approx(5.0)  # the diagonal hypot(3, 4)
    assert hausdorff_distance(one, empty, empty_distance=float("inf")) == float("inf")


def test_hd_is_the_mean_over_the_three_binary_maps():
    label, pred = np.zeros((6, 7), np.uint8), np.zeros((6, 7), np.uint8)
    label[1, 1], label[1, 5] = 1, 2
    pred[1, 1], pred[4, 5] = 1, 2
    # anterior: same pixel, 0; posterior: (4, 5) vs (1, 5), 3; all: {(1,1), (4,5)} vs {(1,1), (1,5)}, 3
    assert hausdorff_per_map(pred, label) == pytest.approx({"all": 3.0, "anterior": 0.0, "posterior": 3.0})
    assert case_scores(pred, label)["hd"] == pytest.approx(2.0)


def test_score_table_averages_over_images():
    table = fugc_score_table([dict.fromkeys(CASE_KEYS, 1.0), dict.fromkeys(CASE_KEYS, 3.0)], time_ms=[10, 30])
    assert table["dice"] == 2.0 and table["hd"] == 2.0 and table["time_ms"] == 20.0 and table["num_cases"] == 2
    with pytest.raises(ValueError, match="no cases"):
        fugc_score_table([])


def _png(path, array):
    Image.fromarray(np.asarray(array, np.uint8), mode="L").save(path)


def test_score_folder(tmp_path):
    (tmp_path / "labels").mkdir()
    (tmp_path / "pred").mkdir()
    label = np.zeros((6, 7), np.uint8)
    label[1, 1], label[1, 5] = 1, 2
    pred = label.copy()
    pred[1, 5], pred[4, 5] = 0, 2
    items = []
    for case in ("a", "b"):
        _png(tmp_path / "labels" / f"{case}.png", label)
        items.append({"case": case, "label": str(tmp_path / "labels" / f"{case}.png")})
    _png(tmp_path / "pred" / "a.png", pred)
    table = score_folder(tmp_path / "pred", items, case_ms={"a": 5.0, "b": 7.0})
    assert table["missing_predictions"] == ["b"]
    # a: Dice (1 + 0) / 2, HD 2; b (all background): Dice 0, HD the diagonal hypot(5, 6) for each map
    assert table["dice"] == pytest.approx(0.25, abs=1e-5)
    assert table["hd"] == pytest.approx((2.0 + math.hypot(5, 6)) / 2)
    assert table["time_ms"] == 6.0
    _png(tmp_path / "pred" / "b.png", np.full((6, 7), 3))
    with pytest.raises(CaseReadError, match=r"b\.png.*outside 0\.\.2"):
        score_folder(tmp_path / "pred", items)
    _png(tmp_path / "pred" / "b.png", np.zeros((6, 8)))
    with pytest.raises(CaseReadError, match=r"b\.png.*differs"):
        score_folder(tmp_path / "pred", items)


def test_ignite_metric_on_logits_and_indices():
    label = torch.zeros(2, 1, 6, 7)
    label[:, 0, 1, 1], label[:, 0, 1, 5] = 1, 2
    logits = torch.nn.functional.one_hot(label[:, 0].long(), 3).permute(0, 3, 1, 2).float()
    batches = [{"pred": logits, "label": label}, {"pred": label.clone(), "label": label}]
    engine = Engine(lambda engine, batch: batch)
    FUGCMetric().attach(engine, "fugc")
    state = engine.run(batches, max_epochs=1)
    assert state.metrics["fugc"] == pytest.approx(1.0)
    assert state.metrics["fugc/hd"] == 0.0 and state.metrics["fugc/num_cases"] == 4
    with pytest.raises(ValueError, match="does not match"):
        FUGCMetric().update((logits, label[:, :, :5]))
