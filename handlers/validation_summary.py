"""``validation_summary.json`` at the end of training: the best epoch, its metrics and where its weights are."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from handlers.history import EpochHistory
from utils.atomic import write_text_atomic

__all__ = ["ValidationSummary"]


class ValidationSummary:
    """Write ``path`` atomically when training completes (rank 0 only under DDP).

    The best epoch is found in the ``EpochHistory`` (which the resumable checkpoint restores), so it covers the
    whole run across resumes, not only the epochs since the last start. The file holds ``key_metric``,
    ``best_epoch``, ``best_metrics`` (all validation metrics of that epoch), ``best_weights`` (the path given),
    ``last_epoch``, ``last_metrics``, ``epochs_validated``, ``training_seconds`` (the epochs' time summed over all
    starts), ``finished`` (local time) and, with an ``evaluator``, ``best_weights_epoch``: the epoch whose weights
    MONAI's key-metric ``CheckpointSaver`` last kept, which it tracks like ``evaluator.state.best_metric_epoch`` (same
    strict comparison). The two epochs differ when a resumed run's saver, which restarts with no score, replaced a
    better model; a warning says so.

    Args:
        history: the run's history; attached to the engine with this handler.
        path: the JSON file, e.g. ``{output_dir}/validation_summary.json``.
        best_weights: where the best weights are saved, e.g. ``{ckpt_dir}/model.pt``.
        key_metric: metric that selects the best epoch; the evaluator's key metric when ``None``.
        higher_is_better: direction of ``key_metric``; ties keep the earlier epoch, as MONAI's workflows do.
        evaluator: the validation engine, for its key metric and ``best_metric_epoch``.
        max_epoch: only epochs up to this one can be the best, as the model selection of a run with an epoch cap
            (``handlers.model_selection.EpochCappedCheckpointSaver``) has it.
    """

    def __init__(
        self,
        history: EpochHistory,
        path: str | Path,
        best_weights: str | Path,
        key_metric: str | None = None,
        higher_is_better: bool = True,
        evaluator: Engine | None = None,
        max_epoch: int | None = None,
    ) -> None:
        if key_metric is None and evaluator is None:
            raise ValueError("ValidationSummary needs key_metric or an evaluator with a key metric")
        self.history = history
        self.path = Path(path)
        self.best_weights = Path(best_weights)
        self.key_metric = key_metric
        self.higher_is_better = higher_is_better
        self.evaluator = evaluator
        self.max_epoch = max_epoch
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        self.history.attach(engine)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return
        summary = self.summary()
        write_text_atomic(self.path, json.dumps(summary, indent=2) + "\n")
        self.logger.info("validation summary in %s: best %s %s at epoch %s", self.path, summary["key_metric"],
                         summary["best_metrics"].get(summary["key_metric"]), summary["best_epoch"])  # fmt: skip

    def summary(self) -> dict[str, Any]:
        """The content of the file (without writing it)."""
        key = self.key_metric if self.key_metric is not None else self.evaluator.state.key_metric_name
        validated = [row for row in self.history.rows if row["metrics"].get(key) is not None]
        best = None
        for row in validated:
            if self.max_epoch is not None and row["epoch"] > self.max_epoch:
                continue
            score, best_score = row["metrics"][key], None if best is None else best["metrics"][key]
            if best is None or (score > best_score if self.higher_is_better else score < best_score):
                best = row
        last = self.history.rows[-1] if self.history.rows else None
        summary: dict[str, Any] = {
            "key_metric": key,
            "best_epoch": None if best is None else best["epoch"],
            "best_metrics": {} if best is None else best["metrics"],
            "best_weights": str(self.best_weights),
            "last_epoch": None if last is None else last["epoch"],
            "last_metrics": {} if last is None else last["metrics"],
            "epochs_validated": len(validated),
            "training_seconds": round(sum(row.get("seconds", 0.0) for row in self.history.rows), 3),
            "finished": f"{datetime.now():%Y-%m-%d %H:%M:%S}",
        }
        if self.evaluator is not None and key == self.evaluator.state.key_metric_name:
            weights_epoch = self.evaluator.state.best_metric_epoch
            summary["best_weights_epoch"] = weights_epoch if weights_epoch > 0 else None
            if best is not None and weights_epoch != best["epoch"]:
                self.logger.warning(
                    "%s holds the weights of epoch %s, not of the best epoch %s: the key-metric checkpoint saver "
                    "restarted without its best score on resume (no handlers.checkpoint.BestModelState in the resumable "
                    "checkpoint)", self.best_weights, weights_epoch, best["epoch"],
                )  # fmt: skip
        if not self.best_weights.is_file():
            self.logger.warning("the best weights %s do not exist", self.best_weights)
        return summary
