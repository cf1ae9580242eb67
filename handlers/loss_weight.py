"""Ramp a loss term's weight up from 0 over the first epochs of training (a warm-up)."""

from __future__ import annotations

from ignite.engine import Engine, Events
from torch import nn

__all__ = ["LossWeightWarmup"]


class LossWeightWarmup:
    """Raise ``loss.<name>`` linearly from 0 to its configured value over the first ``epochs`` epochs.

    The weight is set before every iteration from ``engine.state.iteration`` alone, so a resumed run continues the
    ramp where it stopped: 0 at the first iteration, ``k / (epochs * epoch_length)`` of the final weight at
    iteration ``k + 1``, the final weight from iteration ``epochs * epoch_length + 1`` on. ``epochs`` may be a
    fraction. The final weight is the attribute's value when the handler is built.

    Why: at the retinal bundle's demo widths and a few dozen steps on real B-scans, the class-weighted NLL empties the
    lesion prediction before the network has localised the fluid (bundle docs, "Small budgets"); letting the Dice
    terms localise first and bringing the NLL in afterwards keeps both. ``epochs`` 0 leaves the weight untouched
    (the reference's constant weight).

    Args:
        loss: the loss module holding the weight, e.g. ``@loss``.
        name: the attribute to ramp, e.g. ``"nll_weight"``.
        epochs: warm-up length in epochs (>= 0).
    """

    def __init__(self, loss: nn.Module, name: str, epochs: float) -> None:
        if epochs < 0:
            raise ValueError(f"warm-up epochs must be >= 0, got {epochs}")
        if not isinstance(getattr(loss, name, None), (int, float)):
            raise ValueError(f"{type(loss).__name__} has no numeric attribute {name!r} to warm up")
        self.loss = loss
        self.name = name
        self.epochs = epochs
        self.final_weight = float(getattr(loss, name))

    def weight_at(self, iteration: int, epoch_length: int) -> float:
        """The weight for 1-based ``iteration`` of a run with ``epoch_length`` iterations an epoch."""
        warmup_iterations = self.epochs * epoch_length
        if iteration > warmup_iterations:
            return self.final_weight
        return self.final_weight * (iteration - 1) / warmup_iterations

    def attach(self, engine: Engine) -> None:
        if self.epochs > 0:
            engine.add_event_handler(Events.ITERATION_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        # ignite iterations are 1-based and already incremented at ITERATION_STARTED
        setattr(self.loss, self.name, self.weight_at(engine.state.iteration, engine.state.epoch_length))
