from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Engine, Events
from PIL import Image

from handlers.history import EpochHistory
from handlers.progress_plot import ProgressPlot
from tests.handlers.toy_workflow import toy_workflow


def test_png_is_redrawn_every_epoch_from_loss_metrics_lr_and_time(tmp_path):
    drawn = []
    png = tmp_path / "progress.png"

    def plot(history, evaluator):
        handler = ProgressPlot(history, png)
        history.add_listener(lambda h: drawn.append(len(h.rows)))
        return handler

    trainer, history = toy_workflow(tmp_path, scores=[0.2, 0.7, 0.5, 0.4], handlers=[plot])
    trainer.run()
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 500
    assert not list(tmp_path.glob(".*tmp*")), "no half-written files"
    assert [row["epoch"] for row in history.rows] == [1, 2, 3, 4]
    assert [row["lr"] for row in history.rows] == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    assert [row["metrics"]["val_score"] for row in history.rows] == [0.2, 0.7, 0.5, 0.4]
    assert all(row["loss"] > 0 and row["seconds"] > 0 for row in history.rows)
    assert drawn and drawn[-1] == 4


def test_history_continues_after_a_resume(tmp_path):
    def plot(history, evaluator):
        return ProgressPlot(history, tmp_path / "p.png")

    first, history = toy_workflow(tmp_path, scores=[0.2, 0.7], handlers=[plot], stop_after=2)
    first.run()
    before = [dict(row) for row in history.rows]
    resumed, history = toy_workflow(tmp_path, scores=[0.5, 0.6], handlers=[plot], resume=True)
    resumed.run()
    assert [row["epoch"] for row in history.rows] == [1, 2, 3, 4]
    assert history.rows[:2] == before
    assert [row["metrics"]["val_score"] for row in history.rows] == [0.2, 0.7, 0.5, 0.6]
    assert [row["lr"] for row in history.rows] == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    Image.open(tmp_path / "p.png").verify()


def test_validation_run_after_the_epoch_row_still_lands_in_it(tmp_path):
    evaluator = Engine(lambda engine, batch: None)
    history = EpochHistory(evaluator=evaluator, loss_transform=lambda output: output)
    trainer = Engine(lambda engine, batch: 1.0)
    ProgressPlot(history, tmp_path / "p.png", metric_names=["dice"]).attach(trainer)

    evaluator.add_event_handler(
        Events.EPOCH_COMPLETED,
        lambda e: e.state.metrics.update({"dice": 0.5, "auc": float("nan"), "per_class": torch.ones(3)}),
    )

    @trainer.on(Events.EPOCH_COMPLETED)
    def validate(engine):  # attached after the plot, as a ValidationHandler listed after it would be
        # as monai.engines.Evaluator.run(global_epoch): the evaluator runs as the trainer's epoch
        evaluator.state.max_epochs, evaluator.state.epoch = engine.state.epoch, engine.state.epoch - 1
        evaluator.run([0])

    trainer.run([0, 0], max_epochs=2)
    assert [row["metrics"] for row in history.rows] == [{"dice": 0.5, "auc": None}] * 2
    assert history.rows[0]["loss"] == 1.0 and "lr" not in history.rows[0]
    assert not math.isnan(history.rows[1]["seconds"])
    Image.open(tmp_path / "p.png").verify()
