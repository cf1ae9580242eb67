from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events

from handlers.freeze import FreezeForEpochs


def test_freezes_only_the_named_module_for_the_first_epochs():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5)
    before = [p.detach().clone() for p in model.parameters()]
    seen = []

    def step(engine: Engine, batch: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        model(batch).sum().backward()
        optimizer.step()

    engine = Engine(step)
    FreezeForEpochs(model[0], epochs=2).attach(engine)
    engine.add_event_handler(
        Events.EPOCH_COMPLETED,
        lambda e: seen.append((e.state.epoch, torch.equal(model[0].weight, before[0]), torch.equal(model[1].weight, before[2]))),
    )
    engine.run([torch.ones(1, 2)], max_epochs=3)
    # epochs 1-2: the first layer is untouched (no gradient, no weight decay); the second trains from the start
    assert seen[0] == (1, True, False) and seen[1] == (2, True, False)
    assert seen[2] == (3, False, False)
    assert all(p.requires_grad for p in model.parameters())


def test_freeze_is_skipped_loudly_without_pretrained_weights(caplog):
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.weight.detach().clone()

    def step(engine: Engine, batch: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        model(batch).sum().backward()
        optimizer.step()

    engine = Engine(step)
    with pytest.warns(UserWarning, match="encoder freeze SKIPPED: 5 frozen epochs .* no pretrained weights"):
        FreezeForEpochs(model, epochs=5, pretrained=False).attach(engine)
    assert "encoder freeze SKIPPED" in caplog.text
    engine.run([torch.ones(1, 2)], max_epochs=1)
    assert not torch.equal(model.weight, before)  # trained in epoch 1


def test_carotid_bundle_freezes_only_with_pretrained_weights():
    from monai.bundle import ConfigParser

    configs = "bundles/carotid_plaque_ultrasound/configs"
    parser = ConfigParser()
    parser.read_config(f"{configs}/train.json")
    handler = next(h for h in parser["train"]["handlers"] if isinstance(h, dict) and h["_target_"].endswith("FreezeForEpochs"))
    assert handler["pretrained"] == "$@pretrained_path is not None"
