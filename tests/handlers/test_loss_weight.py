from __future__ import annotations

import json
from pathlib import Path

import pytest
from ignite.engine import Engine

from handlers.loss_weight import LossWeightWarmup
from losses.exp_log import EdemaLoss

CONFIGS = Path("bundles/retinal_oct_edema_segmentation/configs")


def _weights_seen(loss: EdemaLoss, epochs: float, epoch_length: int, max_epochs: int) -> list[float]:
    seen = []
    engine = Engine(lambda e, batch: seen.append(loss.nll_weight))
    LossWeightWarmup(loss, "nll_weight", epochs).attach(engine)
    engine.run(range(epoch_length), max_epochs=max_epochs)
    return seen


def test_nll_weight_ramps_from_zero_to_its_value_over_the_warmup_epochs():
    loss = EdemaLoss(nll_weight=2.0)
    seen = _weights_seen(loss, epochs=2, epoch_length=4, max_epochs=3)
    # 8 warm-up iterations: 0 at the first, linear steps of 2/8, the full weight from iteration 9 on
    assert seen[0] == 0.0
    assert seen[:8] == pytest.approx([2.0 * k / 8 for k in range(8)])
    assert seen[8:] == [2.0] * 4


def test_no_warmup_keeps_the_reference_constant_weight():
    loss = EdemaLoss(nll_weight=1.0)
    assert _weights_seen(loss, epochs=0, epoch_length=3, max_epochs=2) == [1.0] * 6


def test_resumed_run_continues_the_ramp_from_the_iteration():
    warmup = LossWeightWarmup(EdemaLoss(nll_weight=1.0), "nll_weight", epochs=1.5)
    assert warmup.weight_at(1, 4) == 0.0
    assert warmup.weight_at(4, 4) == pytest.approx(0.5)
    assert warmup.weight_at(7, 4) == 1.0


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="no numeric attribute 'nll_wieght'"):
        LossWeightWarmup(EdemaLoss(), "nll_wieght", 1)
    with pytest.raises(ValueError, match=">= 0"):
        LossWeightWarmup(EdemaLoss(), "nll_weight", -1)


def test_recipe_has_no_warmup_and_the_demo_warms_up():
    train = json.loads((CONFIGS / "train.json").read_text())
    demo = json.loads((CONFIGS / "demo.json").read_text())
    assert train["nll_warmup_epochs"] == 0 and train["nll_weight"] == 1.0
    assert demo["nll_warmup_epochs"] > 0
    assert any(
        isinstance(h, dict) and h.get("_target_") == "handlers.loss_weight.LossWeightWarmup"
        for h in train["train"]["handlers"]
    )
