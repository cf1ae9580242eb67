from __future__ import annotations

import torch
from ignite.engine import Engine, Events

from handlers.checkpoint import ResumableCheckpoint


def _training(model: torch.nn.Module, stop_after: int | None = None) -> Engine:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(engine: Engine, batch: torch.Tensor) -> float:
        optimizer.zero_grad()
        loss = (model(batch) ** 2).mean()
        loss.backward()
        optimizer.step()
        return loss.item()

    engine = Engine(step)
    engine.optimizer = optimizer
    if stop_after is not None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(once=stop_after), lambda e: e.terminate())
    return engine


def test_killed_run_resumes_at_the_next_epoch_with_the_same_weights(tmp_path):
    data = [torch.ones(2, 3)] * 4
    path = tmp_path / "latest.pt"

    torch.manual_seed(0)
    reference = torch.nn.Linear(3, 1)
    _training(reference).run(data, max_epochs=4)

    torch.manual_seed(0)
    first = torch.nn.Linear(3, 1)
    engine = _training(first, stop_after=2)
    ResumableCheckpoint(path, {"model": first, "optimizer": engine.optimizer, "trainer": engine}).attach(engine)
    engine.run(data, max_epochs=4)
    assert engine.state.epoch == 2

    resumed = torch.nn.Linear(3, 1)
    engine = _training(resumed)
    started_at = []
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: started_at.append(e.state.epoch))
    ResumableCheckpoint(path, {"model": resumed, "optimizer": engine.optimizer, "trainer": engine},
                        resume=True).attach(engine)
    engine.run(data, max_epochs=4)
    assert started_at == [3, 4]
    torch.testing.assert_close(resumed.weight, reference.weight)
    assert torch.load(path, weights_only=True)["trainer"]["iteration"] == 4 * len(data)


def test_resume_without_a_checkpoint_starts_from_scratch(tmp_path):
    model = torch.nn.Linear(3, 1)
    engine = _training(model)
    ResumableCheckpoint(tmp_path / "none.pt", {"model": model, "trainer": engine}, resume=True).attach(engine)
    engine.run([torch.ones(2, 3)], max_epochs=1)
    assert engine.state.epoch == 1 and (tmp_path / "none.pt").is_file()


def test_a_data_parallel_network_is_saved_unwrapped(tmp_path):
    model = torch.nn.DataParallel(torch.nn.Linear(3, 1))
    engine = _training(model)
    ResumableCheckpoint(tmp_path / "latest.pt", {"network": model}).attach(engine)
    engine.run([torch.ones(2, 3)], max_epochs=1)
    assert set(torch.load(tmp_path / "latest.pt", weights_only=True)["network"]) == {"weight", "bias"}
