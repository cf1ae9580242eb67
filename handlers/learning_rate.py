"""The optimizer's learning rate in TensorBoard."""

from __future__ import annotations

from pathlib import Path

from ignite.engine import Engine, Events
from ignite.handlers.tensorboard_logger import OptimizerParamsHandler, TensorboardLogger
from torch.optim import Optimizer

__all__ = ["LearningRateTensorBoard"]


class LearningRateTensorBoard:
    """Log the learning rate of every parameter group (``lr/group_<i>``) with ignite's ``OptimizerParamsHandler``.

    MONAI's ``TensorBoardStatsHandler`` logs engine outputs and metrics, not optimizer parameters, and
    ``LrScheduleHandler`` prints the rate on the console only. The value is logged when an epoch (or iteration)
    starts, so each point is the rate that step trained with, at the trainer's epoch (or iteration) number. The
    events file sits in ``log_dir`` beside MONAI's; TensorBoard shows them together.

    Args:
        log_dir: TensorBoard folder, the one of the bundle's ``TensorBoardStatsHandler``.
        optimizer: the trainer's optimizer.
        epoch_level: log once per epoch; ``False`` logs every iteration.
    """

    def __init__(self, log_dir: str | Path, optimizer: Optimizer, epoch_level: bool = True) -> None:
        self.log_dir = Path(log_dir)
        self.optimizer = optimizer
        self.epoch_level = epoch_level

    def attach(self, engine: Engine) -> None:
        writer = TensorboardLogger(log_dir=str(self.log_dir))
        event = Events.EPOCH_STARTED if self.epoch_level else Events.ITERATION_STARTED
        writer.attach(engine, log_handler=OptimizerParamsHandler(self.optimizer, param_name="lr"), event_name=event)
        engine.add_event_handler(Events.COMPLETED, lambda _: writer.close())
