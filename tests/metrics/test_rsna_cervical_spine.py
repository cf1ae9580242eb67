"""The RSNA 2022 cervical spine weighted log loss on hand cases, study aggregation, AUC and the Ignite metric."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from metrics.rsna_cervical_spine import (
    CervicalFractureMetric,
    label_aucs,
    study_predictions,
    weighted_log_loss,
)


def test_uniform_prediction_scores_ln2():
    assert weighted_log_loss(np.zeros((3, 8)), np.full((3, 8), 0.5)) == pytest.approx(math.log(2))


def test_one_study_by_hand():
    y = [[1, 1, 0, 0, 0, 0, 0, 0]]
    p = [[0.9, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]]
    # weights 14 (overall +), 2 (C1 +), 1 x 6 (negatives): sum 22
    expected = (14 * -math.log(0.9) + 2 * -math.log(0.6) + 6 * -math.log(0.9)) / 22
    assert weighted_log_loss(y, p) == pytest.approx(expected, rel=1e-12)


def test_studies_are_normalised_each_by_their_own_weights_then_averaged():
    y = np.array([[1, 0, 0, 0, 0, 0, 0, 1], [0] * 8], dtype=float)
    p = np.array([[0.8] * 8, [0.3] * 8])
    positive = (14 * -math.log(0.8) + 6 * -math.log(0.2) + 2 * -math.log(0.8)) / (14 + 6 + 2)
    negative = -math.log(0.7)  # all weights equal within the study
    assert weighted_log_loss(y, p) == pytest.approx((positive + negative) / 2, rel=1e-12)
    # not the single weighted mean over all rows of all studies
    pooled = (22 * positive + 14 * negative) / (22 + 14)
    assert abs(weighted_log_loss(y, p) - pooled) > 1e-3


def test_extreme_predictions_stay_finite_and_bad_input_raises():
    assert math.isfinite(weighted_log_loss([[1] * 8], [[0.0] * 8]))
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        weighted_log_loss(np.zeros((2, 7)), np.zeros((2, 7)))
    with pytest.raises(ValueError, match="0/1"):
        weighted_log_loss(np.full((1, 8), 0.5), np.full((1, 8), 0.5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        weighted_log_loss(np.zeros((1, 8)), np.full((1, 8), 1.5))


def test_study_prediction_is_the_clipped_maximum_over_its_crops():
    probs = np.array([[0.2] * 8, [0.995] + [0.001] * 7, [0.5] * 8])
    targets = np.array([[1] + [0] * 7, [1] + [0] * 7, [0] * 8])
    ids, pred, truth = study_predictions(probs, ["a", "a", "b"], targets)
    assert ids == ["a", "b"]
    np.testing.assert_allclose(pred, [[0.99] + [0.2] * 7, [0.5] * 8])
    np.testing.assert_array_equal(truth, [[1] + [0] * 7, [0] * 8])
    _, raw, _ = study_predictions(probs, ["a", "a", "b"], clip=None)
    assert raw[0, 0] == 0.995
    with pytest.raises(ValueError, match="2 study ids for 3 crops"):
        study_predictions(probs, ["a", "b"])


def test_label_aucs():
    y = np.zeros((4, 8))
    y[2:, 0] = 1
    y[3, 3] = 1
    p = np.tile(np.array([[0.1], [0.2], [0.3], [0.4]]), (1, 8))
    aucs = label_aucs(y, p)
    assert aucs["patient_overall"] == 1.0 and aucs["C3"] == 1.0
    assert math.isnan(aucs["C1"])
    assert aucs["mean"] == 1.0


def test_ignite_metric_reduces_crops_of_a_study_over_batches():
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    batches = [
        {"study": ["s1", "s1"], "pred": torch.tensor([[logit(0.3)] * 8, [logit(0.6)] * 8]), "label": torch.ones(2, 8)},
        {"study": ["s2", "s1"], "pred": torch.tensor([[logit(0.2)] * 8, [logit(0.1)] * 8]),
         "label": torch.tensor([[0.0] * 8, [1.0] * 8])},
    ]
    engine = Engine(lambda e, batch: {"pred": batch["pred"], "label": batch["label"]})
    metric = CervicalFractureMetric(study_key="study")
    metric.attach(engine, "wll")
    state = engine.run(batches, max_epochs=1)
    expected = weighted_log_loss([[1.0] * 8, [0.0] * 8], [[0.6] * 8, [0.2] * 8])
    assert state.metrics["wll"] == pytest.approx(expected, rel=1e-6)
    assert state.metrics["wll/auc_C1"] == 1.0 and state.metrics["wll/auc"] == 1.0
    assert metric.table["num_studies"] == 2


def test_ignite_metric_with_stacked_crops_and_no_study_ids():
    metric = CervicalFractureMetric(study_key=None)
    pred = torch.full((2, 3, 8), -5.0)
    pred[0, 1] = 5.0  # one confident crop of study 0
    metric.update((pred, torch.tensor([[1.0] * 8, [0.0] * 8])))
    assert metric.compute() == pytest.approx(-math.log(0.99), rel=1e-6)
    with pytest.raises(ValueError, match=r"\(B, 8\)"):
        metric.update((torch.zeros(2, 7), torch.zeros(2, 7)))
