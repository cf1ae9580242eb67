from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedTrainer

from handlers.gradient_clipping import GradientClipping


def _step_norm(max_norm: float | None) -> float:
    """The norm of one plain SGD step (lr 1, so the step is the gradient) on a loss with a huge gradient."""
    torch.manual_seed(0)
    network = torch.nn.Linear(4, 1)
    start = [p.detach().clone() for p in network.parameters()]
    optimizer = torch.optim.SGD(network.parameters(), lr=1.0)
    loader = [{"image": torch.full((2, 4), 100.0), "label": torch.zeros(2, 1)}]
    handlers = [GradientClipping(max_norm)] if max_norm is not None else []
    SupervisedTrainer("cpu", 1, loader, network, optimizer, torch.nn.MSELoss(), train_handlers=handlers).run()
    return float(torch.sqrt(sum(((p.detach() - s) ** 2).sum() for p, s in zip(network.parameters(), start))))


def test_gradient_norm_is_clipped_before_the_optimizer_step():
    assert _step_norm(None) > 100
    assert _step_norm(5.0) == pytest.approx(5.0, rel=1e-4)


def test_max_norm_must_be_positive():
    with pytest.raises(ValueError, match="max_norm"):
        GradientClipping(0.0)
