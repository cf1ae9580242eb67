from __future__ import annotations

import json
from pathlib import Path

import pytest
from ignite.engine import Engine

from handlers.loss_weight import LossWeightWarmup
from losses.exp_log import EdemaLoss

CONFIGS = Path("bundles/retinal_oct_edema_segmentation/configs")


def _weights_seen(loss: EdemaLoss, delay: int, ramp: int, epoch_length: int, max_epochs: int) -> list[float]:
    seen = []
    engine = Engine(lambda e, batch: seen.append(loss.nll_weight))
    LossWeightWarmup(loss, "nll_weight", delay=delay, ramp=ramp).attach(engine)
    engine.run(range(epoch_length), max_epochs=max_epochs)
    return seen


def test_nll_weight_is_zero_during_the_delay_then_ramps_to_its_value():
    loss = EdemaLoss(nll_weight=2.0)
    seen = _weights_seen(loss, delay=3, ramp=4, epoch_length=4, max_epochs=3)
    # iterations 1-4 at 0 (3 delayed + the ramp's first), then 2 * 1/4, 2/4, 3/4, the full weight from iteration 8 on
    assert seen[0] == 0.0
    assert seen[:7] == pytest.approx([0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 1.5])
    assert seen[7:] == [2.0] * 5


def test_no_warmup_keeps_the_reference_constant_weight():
    loss = EdemaLoss(nll_weight=1.0)
    assert _weights_seen(loss, delay=0, ramp=0, epoch_length=3, max_epochs=2) == [1.0] * 6


def test_resumed_run_continues_from_the_iteration():
    warmup = LossWeightWarmup(EdemaLoss(nll_weight=1.0), "nll_weight", delay=2, ramp=4)
    assert [warmup.weight_at(i) for i in (1, 3, 5, 7, 100)] == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="no numeric attribute 'nll_wieght'"):
        LossWeightWarmup(EdemaLoss(), "nll_wieght", ramp=1)
    with pytest.raises(ValueError, match=">= 0"):
        LossWeightWarmup(EdemaLoss(), "nll_weight", delay=-1)


def test_recipe_has_no_warmup_and_the_demo_warms_up():
    train = json.loads((CONFIGS / "train.json").read_text())
    demo = json.loads((CONFIGS / "demo.json").read_text())
    assert train["nll_delay_iterations"] == train["nll_ramp_iterations"] == 0 and train["nll_weight"] == 1.0
    assert demo["nll_delay_iterations"] > 0
    assert any(
        isinstance(h, dict) and h.get("_target_") == "handlers.loss_weight.LossWeightWarmup"
        for h in train["train"]["handlers"]
    )
