from __future__ import annotations

import json
import logging

import pytest

from handlers.history import EpochHistory
from handlers.validation_summary import ValidationSummary
from tests.handlers.toy_workflow import toy_workflow


def _summary(tmp_path, from_evaluator: bool = False, **kwargs):
    def build(history, evaluator):
        path, weights = tmp_path / "validation_summary.json", tmp_path / "model.pt"
        return ValidationSummary(history, path, weights, evaluator=evaluator if from_evaluator else None, **kwargs)

    return build


def test_summary_names_the_best_epoch_its_metrics_and_weights(tmp_path):
    summary = _summary(tmp_path, key_metric="val_score")
    trainer, _ = toy_workflow(tmp_path, scores=[0.2, 0.7, 0.5, 0.7], handlers=[summary])
    trainer.run()
    summary = json.loads((tmp_path / "validation_summary.json").read_text())
    assert summary["key_metric"] == "val_score"
    assert summary["best_epoch"] == 2 and summary["best_metrics"] == {"val_score": 0.7}  # a tie keeps the earlier
    assert summary["best_weights"] == str(tmp_path / "model.pt") and (tmp_path / "model.pt").is_file()
    assert summary["last_epoch"] == 4 and summary["last_metrics"] == {"val_score": 0.7}
    assert summary["epochs_validated"] == 4 and summary["training_seconds"] > 0
    assert "best_weights_epoch" not in summary
    assert not list(tmp_path.glob(".*tmp*")), "no half-written files"


def test_lower_is_better_key_metric(tmp_path):
    summary = _summary(tmp_path, key_metric="val_score", higher_is_better=False)
    trainer, _ = toy_workflow(tmp_path, scores=[0.2, 0.7, 0.1, 0.3], handlers=[summary])
    trainer.run()
    assert json.loads((tmp_path / "validation_summary.json").read_text())["best_epoch"] == 3


def test_an_epoch_cap_keeps_later_epochs_out_of_the_best(tmp_path):
    summary = _summary(tmp_path, key_metric="val_score", higher_is_better=False, max_epoch=3)
    trainer, _ = toy_workflow(tmp_path, scores=[0.4, 0.3, 0.35, 0.1], handlers=[summary])
    trainer.run()
    summary = json.loads((tmp_path / "validation_summary.json").read_text())
    assert summary["best_epoch"] == 2 and summary["last_epoch"] == 4


def test_after_a_resume_the_best_epoch_covers_the_whole_run(tmp_path, caplog):
    summary = _summary(tmp_path, from_evaluator=True)
    first, _ = toy_workflow(tmp_path, scores=[0.2, 0.7], stop_after=2, handlers=[summary])
    first.run()
    resumed, _ = toy_workflow(tmp_path, scores=[0.5, 0.6], resume=True, handlers=[summary])
    with caplog.at_level(logging.WARNING, logger="handlers.validation_summary"):
        resumed.run()
    summary = json.loads((tmp_path / "validation_summary.json").read_text())
    assert summary["key_metric"] == "val_score"  # the evaluator's key metric
    assert summary["best_epoch"] == 2 and summary["best_metrics"] == {"val_score": 0.7}
    assert summary["last_epoch"] == 4 and summary["epochs_validated"] == 4
    # the best score is in the resumable state (handlers.checkpoint.BestModelState): epochs 3, 4 did not replace it
    assert summary["best_weights_epoch"] == 2
    assert "not of the best epoch" not in caplog.text


def test_needs_a_key_metric(tmp_path):
    with pytest.raises(ValueError, match="key_metric"):
        ValidationSummary(EpochHistory(), tmp_path / "s.json", tmp_path / "model.pt")
