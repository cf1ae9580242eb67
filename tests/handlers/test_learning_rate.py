from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from handlers.learning_rate import LearningRateTensorBoard


def test_the_rate_each_epoch_trained_with_is_logged_at_that_epoch(tmp_path):
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    engine = Engine(lambda engine, batch: None)
    LearningRateTensorBoard(tmp_path, optimizer).attach(engine)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda _: scheduler.step())
    engine.run([0, 0], max_epochs=3)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    scalars = events.Scalars("lr/group_0")
    assert [s.step for s in scalars] == [1, 2, 3]
    assert [s.value for s in scalars] == pytest.approx([0.1, 0.05, 0.025])
