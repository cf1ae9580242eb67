"""Gradient-norm clipping for MONAI's ``SupervisedTrainer``, which has no option for it."""

from __future__ import annotations

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents

__all__ = ["GradientClipping"]


class GradientClipping:
    """Clip the gradient norm of ``engine.network`` to ``max_norm`` between ``backward`` and the optimizer step.

    MONAI's ``SupervisedTrainer`` fires ``IterationEvents.BACKWARD_COMPLETED`` after ``loss.backward()`` and before
    ``optimizer.step()``; under AMP the gradients are first unscaled (``GradScaler.unscale_``, after which the
    scaler's ``step`` does not unscale again), as PyTorch's AMP recipe for clipping says.

    Args:
        max_norm: the largest total gradient norm (2-norm over all parameters).
    """

    def __init__(self, max_norm: float) -> None:
        if not max_norm > 0:
            raise ValueError(f"max_norm must be positive, got {max_norm}")
        self.max_norm = float(max_norm)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if getattr(engine, "amp", False) and getattr(engine, "scaler", None) is not None:
            engine.scaler.unscale_(engine.optimizer)
        torch.nn.utils.clip_grad_norm_(engine.network.parameters(), self.max_norm)
