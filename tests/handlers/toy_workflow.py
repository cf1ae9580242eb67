"""A MONAI trainer and evaluator of a toy model, with validation scores chosen by the test."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events
from ignite.metrics import Metric
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import CheckpointSaver, ValidationHandler

from handlers.checkpoint import BestModelState, ResumableCheckpoint
from handlers.history import EpochHistory

DATA = [{"image": torch.ones(2, 3), "label": torch.zeros(2, 1)}] * 3


class ScriptedScore(Metric):
    """Returns the given scores one validation after the other."""

    def __init__(self, scores: Sequence[float]) -> None:
        self.scores = list(scores)
        super().__init__()

    def reset(self) -> None:
        pass

    def update(self, output: Any) -> None:
        pass

    def compute(self) -> float:
        return self.scores.pop(0)


def toy_workflow(
    out: Path,
    scores: Sequence[float],
    handlers: Sequence[Any] = (),
    resume: bool = False,
    stop_after: int | None = None,
    keep_best: bool = True,
) -> tuple[SupervisedTrainer, EpochHistory]:
    """Trainer (SGD, halving learning rate per epoch) validated every epoch; best weights in ``out/model.pt``,
    resumable checkpoint (with the history and, with ``keep_best``, the best score) in ``out/latest.pt``. ``handlers`` are factories called with the history and
    the evaluator."""
    network = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    saver = CheckpointSaver(str(out), {"network": network}, save_key_metric=True, key_metric_filename="model.pt")
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=DATA[:1], network=network,
        key_val_metric={"val_score": ScriptedScore(scores)}, val_handlers=[saver],
    )  # fmt: skip
    history = EpochHistory(optimizer=optimizer, evaluator=evaluator)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=4, train_data_loader=DATA, network=network, optimizer=optimizer,
        loss_function=torch.nn.MSELoss(),
        train_handlers=[ValidationHandler(interval=1, validator=evaluator), *[h(history, evaluator) for h in handlers]],
    )  # fmt: skip
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: scheduler.step())
    save_dict = {"trainer": trainer, "network": network, "optimizer": optimizer, "scheduler": scheduler}
    save_dict["history"] = history
    if keep_best:
        save_dict["best_model"] = BestModelState(evaluator, [saver])
    ResumableCheckpoint(out / "latest.pt", save_dict, resume=resume).attach(trainer)
    if stop_after is not None:
        trainer.add_event_handler(Events.EPOCH_COMPLETED(once=stop_after), lambda e: e.terminate())
    return trainer, history
