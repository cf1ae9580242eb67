from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events

from handlers.checkpoint import ResumableCheckpoint
from tests.handlers.toy_workflow import toy_workflow


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


@pytest.mark.parametrize("keep_best", [True, pytest.param(False, marks=pytest.mark.xfail(strict=True))])
def test_a_resumed_run_keeps_the_best_model_of_the_killed_run(tmp_path, keep_best):
    """Without the best score in the resumable state (``keep_best=False``, as before), epoch 3 overwrote model.pt."""
    trainer, _ = toy_workflow(tmp_path, scores=[0.9, 0.2], stop_after=2, keep_best=keep_best)
    trainer.run()
    epoch_1 = torch.load(tmp_path / "model.pt", weights_only=True)["weight"]
    (tmp_path / ".latest.abcd1234.tmp.pt").write_bytes(b"half a checkpoint")  # a save killed mid-way

    resumed, history = toy_workflow(tmp_path, scores=[0.5, 0.95], resume=True, keep_best=keep_best)
    after = {}

    def best_weights(engine: Engine) -> None:  # registered after the ValidationHandler: the saver has run
        after[engine.state.epoch] = torch.load(tmp_path / "model.pt", weights_only=True)

    resumed.add_event_handler(Events.EPOCH_COMPLETED, best_weights)
    resumed.run()
    assert not (tmp_path / ".latest.abcd1234.tmp.pt").exists()
    torch.testing.assert_close(after[3]["weight"], epoch_1, msg="epoch 3 (0.5) is worse than epoch 1 (0.9)")
    assert not torch.equal(after[4]["weight"], epoch_1), "epoch 4 (0.95) beats epoch 1"
    best = torch.load(tmp_path / "latest.pt", weights_only=True)["best_model"]
    assert (best["best_metric"], best["best_metric_epoch"]) == (pytest.approx(0.95), 4)
    assert (history.evaluator.state.best_metric, history.evaluator.state.best_metric_epoch) == (0.95, 4)


def test_a_checkpoint_without_the_best_score_still_resumes(tmp_path):
    trainer, _ = toy_workflow(tmp_path, scores=[0.9], stop_after=1, keep_best=False)
    trainer.run()
    resumed, _ = toy_workflow(tmp_path, scores=[0.5, 0.6, 0.7], resume=True)
    started_at = []
    resumed.add_event_handler(Events.EPOCH_STARTED, lambda e: started_at.append(e.state.epoch))
    resumed.run()
    assert started_at == [2, 3, 4]
