"""Best-model selection restricted to the first epochs of a run.

The CCF BDCI 2021 rank-1 training (chaineypung/CCF-BDCI-2021-ULSEG-Rank1st, ``train.py``) saves the model whenever
the validation loss is at most the lowest so far, but only while the 0-based epoch index ``i <= epochs - 2``: the
last epoch is never selected. :class:`EpochCappedCheckpointSaver` is MONAI's key-metric ``CheckpointSaver`` with
such a cap.
"""

from __future__ import annotations

from typing import Any

from ignite.engine import Engine
from monai.handlers import CheckpointSaver

__all__ = ["EpochCappedCheckpointSaver"]


class EpochCappedCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` whose key-metric checkpoint only considers epochs up to ``key_metric_max_epoch``.

    Attached to a validation engine, ``engine.state.epoch`` is the trainer's epoch (MONAI's ``ValidationHandler``
    runs the evaluator with ``global_epoch``). Epochs after the cap are neither saved nor compared, so the best score
    and the saved file stay those of the capped epochs. The final and interval checkpoints are not capped.

    Args:
        key_metric_max_epoch: last (1-based) epoch whose key metric may select the model; ``None``: no cap.
        kwargs: MONAI ``CheckpointSaver`` arguments.
    """

    def __init__(self, *args: Any, key_metric_max_epoch: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if key_metric_max_epoch is not None and key_metric_max_epoch < 1:
            raise ValueError(f"key_metric_max_epoch must be an epoch >= 1 or None, got {key_metric_max_epoch}")
        self.key_metric_max_epoch = key_metric_max_epoch
        self.key_metric_filename = kwargs.get("key_metric_filename")

    def metrics_completed(self, engine: Engine) -> None:
        if self.key_metric_max_epoch is not None and engine.state.epoch > self.key_metric_max_epoch:
            # the evaluator's own "best value" log line still counts this epoch: say which one selects the model
            self.logger.info(
                "epoch %d is after key_metric_max_epoch %d: not considered for %s",
                engine.state.epoch, self.key_metric_max_epoch, self.key_metric_filename or "the best model",
            )  # fmt: skip
            return
        super().metrics_completed(engine)
