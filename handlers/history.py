"""Per-epoch history of a training run, kept in the resumable checkpoint."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from ignite.engine import Engine, Events
from monai.handlers import from_engine
from torch.optim import Optimizer

__all__ = ["EpochHistory"]


class EpochHistory:
    """One row per training epoch: ``epoch``, mean training ``loss``, ``lr``, ``seconds`` and validation ``metrics``.

    The rows feed ``handlers.progress_plot.ProgressPlot`` and ``handlers.validation_summary.ValidationSummary``, which
    attach the history themselves (``attach`` is idempotent) and are called back through ``add_listener`` whenever a
    row is completed or receives its validation metrics, so they see validation results whatever the order of the
    handlers. Put the history in the resumable checkpoint's ``save_dict`` (``state_dict``/``load_state_dict``): a
    resumed run then continues the same rows, which always match the saved epoch.

    ``lr`` is the learning rate of the first parameter group at the start of the epoch (the one the epoch trained
    with); ``seconds`` runs from the start of the epoch to its completion, validation included when it comes after;
    ``metrics`` holds the evaluator's scalar metrics of that epoch (``None`` for a value that is not a finite number),
    empty for an epoch without validation.

    Args:
        optimizer: the trainer's optimizer, for ``lr``; ``None`` leaves ``lr`` out.
        evaluator: the validation engine run by ``ValidationHandler``; ``None`` records no metrics.
        loss_transform: ``engine.state.output`` -> the iteration's loss (MONAI trainers' ``"loss"`` by default).
    """

    def __init__(
        self,
        optimizer: Optimizer | None = None,
        evaluator: Engine | None = None,
        loss_transform: Callable[[Any], Any] = from_engine(["loss"], first=True),
    ) -> None:
        self.optimizer = optimizer
        self.evaluator = evaluator
        self.loss_transform = loss_transform
        self.rows: list[dict[str, Any]] = []
        self._listeners: list[Callable[[EpochHistory], None]] = []
        self._attached = False
        self._epoch_start = 0.0
        self._lr: float | None = None
        self._losses: list[float] = []

    def add_listener(self, listener: Callable[[EpochHistory], None]) -> None:
        """Call ``listener(history)`` after each change of the rows."""
        self._listeners.append(listener)

    def attach(self, engine: Engine) -> None:
        if self._attached:
            return
        self._attached = True
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        if self.evaluator is not None:
            self.evaluator.add_event_handler(Events.COMPLETED, self._validated)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": [dict(row, metrics=dict(row["metrics"])) for row in self.rows]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = [dict(row) for row in state["rows"]]

    def _epoch_started(self, engine: Engine) -> None:
        self._epoch_start = time.perf_counter()
        self._lr = float(self.optimizer.param_groups[0]["lr"]) if self.optimizer is not None else None
        self._losses = []

    def _iteration_completed(self, engine: Engine) -> None:
        self._losses.append(float(self.loss_transform(engine.state.output)))

    def _epoch_completed(self, engine: Engine) -> None:
        loss = sum(self._losses) / len(self._losses) if self._losses else None
        row = {"epoch": engine.state.epoch, "loss": _finite(loss), "seconds": time.perf_counter() - self._epoch_start,
               "metrics": {}}  # fmt: skip
        if self._lr is not None:
            row["lr"] = self._lr
        # ValidationHandler may have run before this handler, within the same EPOCH_COMPLETED
        if self.rows and self.rows[-1]["epoch"] == row["epoch"]:
            row["metrics"] = self.rows.pop()["metrics"]
        self.rows.append(row)
        self._notify()

    def _validated(self, evaluator: Engine) -> None:
        # ValidationHandler runs the evaluator with the trainer's epoch as its own
        epoch = evaluator.state.epoch
        metrics = {name: _finite(value) for name, value in evaluator.state.metrics.items() if _is_scalar(value)}
        if self.rows and self.rows[-1]["epoch"] == epoch:
            self.rows[-1]["metrics"] = metrics
            self.rows[-1]["seconds"] = time.perf_counter() - self._epoch_start
        else:
            self.rows.append({"epoch": epoch, "metrics": metrics})
            return  # the row is completed (and listeners called) by _epoch_completed
        self._notify()

    def _notify(self) -> None:
        for listener in self._listeners:
            listener(self)


def _is_scalar(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError, RuntimeError):  # a tensor or array of several values
        return value is None
    return True


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
