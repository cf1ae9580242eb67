"""scripts/average_checkpoints.py: top-k selection, CheckpointSaver folders, explicit file lists."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointSaver

from networks.checkpoint import load_weights
from scripts.average_checkpoints import checkpoint_scores, main, select_top_k


def test_select_top_k_in_both_directions_without_nan():
    scores = {Path("a"): 0.3, Path("b"): float("nan"), Path("c"): 0.1, Path("d"): 0.2}
    assert select_top_k(scores, 2, higher_is_better=True) == [Path("a"), Path("d")]
    assert select_top_k(scores, 2, higher_is_better=False) == [Path("c"), Path("d")]
    assert select_top_k(scores, 10) == [Path("a"), Path("d"), Path("c")]
    with pytest.raises(ValueError, match="k must be"):
        select_top_k(scores, 0)


def test_run_folder_of_checkpoint_saver_keeps_and_averages_the_best_epochs(tmp_path):
    # validation loss per epoch (lower is better); CheckpointSaver keeps the 2 best by -loss
    losses = [0.5, 0.2, 0.4, 0.3]
    net = torch.nn.Linear(2, 1, bias=False)
    evaluator = Engine(lambda e, b: None)

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _set_metric(engine: Engine) -> None:
        epoch = engine.state.epoch
        with torch.no_grad():
            net.weight.fill_(float(epoch))  # the weights of epoch e are all e
        engine.state.metrics["loss"] = losses[epoch - 1]

    CheckpointSaver(str(tmp_path / "top_k"), {"network": net}, save_key_metric=True, key_metric_name="loss",
                    key_metric_n_saved=2, key_metric_negative_sign=True).attach(evaluator)
    evaluator.run([0], max_epochs=len(losses))
    scores = checkpoint_scores(tmp_path / "top_k")
    assert sorted(scores.values()) == [-0.3, -0.2]

    assert main([str(tmp_path / "top_k"), "--top-k", "2", "--output", str(tmp_path / "avg.pt")]) == 0
    averaged = load_weights(torch.nn.Linear(2, 1, bias=False), tmp_path / "avg.pt")
    torch.testing.assert_close(averaged.weight, torch.full((1, 2), (2.0 + 4.0) / 2))
    assert main([str(tmp_path / "top_k"), "--top-k", "1", "--output", str(tmp_path / "best.pt")]) == 0
    assert load_weights(torch.nn.Linear(2, 1, bias=False), tmp_path / "best.pt").weight[0, 0].item() == 2.0


def test_explicit_files_with_values_lower_is_better(tmp_path):
    paths = []
    for value in (1.0, 3.0, 8.0):
        paths.append(tmp_path / f"w{int(value)}.pt")
        torch.save({"model": {"w": torch.tensor([value])}}, paths[-1])
    out = tmp_path / "out" / "avg.pt"
    args = ["--checkpoints", *map(str, paths), "--values", "0.9", "0.1", "0.2", "--mode", "min", "--top-k", "2"]
    assert main([*args, "--output", str(out)]) == 0
    assert math.isclose(torch.load(out, weights_only=True)["w"].item(), (3.0 + 8.0) / 2)


def test_clear_errors(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="absent"):
        checkpoint_scores(tmp_path / "absent")
    (tmp_path / "model.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"key_metric=<score>.pt.*model.pt"):
        checkpoint_scores(tmp_path)
    with pytest.raises(SystemExit):
        main(["--checkpoints", "a.pt", "--values", "1", "2", "--top-k", "1", "--output", "x.pt"])
    assert "one value per checkpoint" in capsys.readouterr().err
