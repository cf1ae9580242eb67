"""The epoch cap of the best-model saver (the CCF BDCI rank-1 selection: lowest validation loss, last epoch
excluded)."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events

from handlers.model_selection import EpochCappedCheckpointSaver


def _select(tmp_path, losses: list[float], **saver_kwargs) -> float:
    """Run an evaluator whose epoch ``e`` (1-based) scores ``losses[e - 1]`` with the model's weight set to ``e``;
    return the weight kept in ``model.pt``."""
    model = torch.nn.Linear(1, 1, bias=False)
    evaluator = Engine(lambda engine, batch: None)

    @evaluator.on(Events.EPOCH_COMPLETED)
    def score(engine: Engine) -> None:
        with torch.no_grad():
            model.weight.fill_(engine.state.epoch)
        engine.state.metrics["val_loss"] = losses[engine.state.epoch - 1]

    saver = EpochCappedCheckpointSaver(
        save_dir=str(tmp_path),
        save_dict={"network": model},
        save_key_metric=True,
        key_metric_name="val_loss",
        key_metric_negative_sign=True,
        key_metric_filename="model.pt",
        **saver_kwargs,
    )
    saver.attach(evaluator)
    evaluator.run([0], max_epochs=len(losses))
    return torch.load(tmp_path / "model.pt", weights_only=True)["weight"].item()


def test_the_lowest_loss_within_the_cap_is_kept_and_later_epochs_are_ignored(tmp_path):
    losses = [0.5, 0.3, 0.4, 0.1]  # the lowest is the last epoch, beyond the cap
    assert _select(tmp_path / "capped", losses, key_metric_max_epoch=3) == 2
    assert _select(tmp_path / "uncapped", losses) == 4


def test_a_tie_selects_the_later_epoch_as_the_seeds_less_or_equal(tmp_path):
    losses = [0.5, 0.3, 0.3, 0.4]
    assert _select(tmp_path, losses, key_metric_max_epoch=3, key_metric_greater_or_equal=True) == 3


def test_cap_must_be_an_epoch():
    with pytest.raises(ValueError, match="key_metric_max_epoch"):
        EpochCappedCheckpointSaver(save_dir="x", save_dict={"n": torch.nn.Linear(1, 1)}, key_metric_max_epoch=0)


def test_epochs_after_the_cap_are_logged_as_not_considered(tmp_path, caplog):
    with caplog.at_level("INFO"):
        _select(tmp_path, [0.5, 0.1], key_metric_max_epoch=1, name="selection")
    assert "epoch 2 is after key_metric_max_epoch 1: not considered for model.pt" in caplog.text
