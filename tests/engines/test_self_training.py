"""The automatic pseudo-label selection rule: scores on hand-made member predictions, the threshold and top
fraction, and kept-versus-dropped quality against a known truth."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engines.self_training import (
    FlipViewProbabilities,
    pseudo_label_scores,
    select_cases,
    selected_datalist,
    selection_quality,
)
from formats.png import save_png_atomic


def _lips(split_posterior: bool = False, posterior: bool = True) -> np.ndarray:
    label = np.zeros((20, 30), np.int64)
    label[5:9, 5:25] = 1
    if posterior:
        label[11:15, 5:25] = 2
        if split_posterior:
            label[11:15, 14:16] = 0
    return label


def _members(labels: list[np.ndarray], confidence: float = 0.9) -> torch.Tensor:
    """(K, 3, H, W) probabilities: ``confidence`` on each member's class, the rest shared by the others."""
    one_hot = torch.nn.functional.one_hot(torch.as_tensor(np.stack(labels)), 3).permute(0, 3, 1, 2).float()
    return one_hot * confidence + (1 - one_hot) * (1 - confidence) / 2


def test_agreeing_confident_plausible_members_score_high():
    pseudo, scores = pseudo_label_scores(_members([_lips()] * 4, confidence=0.9))
    np.testing.assert_array_equal(pseudo, _lips())
    assert scores["agreement"] == pytest.approx(1.0)
    assert scores["plausibility"] == 1.0
    assert scores["confidence"] == pytest.approx(0.9)
    assert scores["score"] == pytest.approx(0.9)


def test_disagreement_a_split_lip_and_a_missing_lip_lower_the_score():
    shifted = np.roll(_lips(), 10, axis=1)
    _, disagree = pseudo_label_scores(_members([_lips(), _lips(), shifted, shifted]))
    assert disagree["agreement"] < 0.9
    _, split = pseudo_label_scores(_members([_lips(split_posterior=True)] * 4))
    assert split["plausibility"] == pytest.approx(0.5)  # two equal halves: the largest holds half the lip
    _, missing = pseudo_label_scores(_members([_lips(posterior=False)] * 4))
    assert missing["plausibility"] == 0.0 and missing["score"] == 0.0


def test_select_cases_applies_the_threshold_then_the_top_fraction():
    scores = {"a": 0.9, "b": 0.2, "c": 0.7, "d": 0.95}
    assert select_cases(scores, min_score=0.5, top_fraction=1.0) == ["d", "a", "c"]
    assert select_cases(scores, min_score=0.5, top_fraction=0.5) == ["d", "a"]
    assert select_cases(scores, min_score=0.99, top_fraction=1.0) == []
    with pytest.raises(ValueError, match="top_fraction"):
        select_cases(scores, 0.5, 1.5)


def test_flip_views_give_each_model_plain_and_flipped_back():
    model = torch.nn.Conv2d(3, 3, 1)
    x = torch.rand(1, 3, 8, 10)
    out = FlipViewProbabilities([model]).eval()(x)
    assert out.shape == (1, 2, 3, 8, 10)
    torch.testing.assert_close(out[:, 0], out[:, 1])  # a 1x1 conv is flip-equivariant


def test_selection_quality_compares_kept_and_dropped_with_the_truth(tmp_path):
    truth = _lips()
    for case, pseudo in {"good": truth, "bad": np.zeros_like(truth)}.items():
        save_png_atomic(tmp_path / "pseudo_labels" / f"{case}.png", pseudo.astype(np.uint8))
        save_png_atomic(tmp_path / "truth" / f"{case}.png", truth.astype(np.uint8))
    selection = {
        "cases": {"good": {"kept": True}, "bad": {"kept": False}},
        "selected": [{"case": "good", "image": "i.png", "label": "l.png"}],
    }
    (tmp_path / "selection.json").write_text(json.dumps(selection))
    quality = selection_quality(tmp_path / "selection.json", tmp_path / "truth")
    assert quality["kept"] == {"num": 1, "dice": pytest.approx(1.0)}
    assert quality["dropped"]["num"] == 1 and quality["dropped"]["dice"] < 1e-3
    assert selected_datalist(tmp_path / "selection.json") == selection["selected"]
