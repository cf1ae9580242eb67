"""Hold a loss term's weight at 0 for the first iterations, then ramp it up to its value (a warm-up)."""

from __future__ import annotations

from ignite.engine import Engine, Events
from torch import nn

__all__ = ["LossWeightWarmup"]


class LossWeightWarmup:
    """Set ``loss.<name>`` to 0 for ``delay`` iterations, then raise it linearly to its value over ``ramp`` iterations.

    The weight is set before every iteration from ``engine.state.iteration`` alone, so a resumed run continues where it
    stopped: 0 for iterations 1 to ``delay + 1``, ``k / ramp`` of the final weight at iteration ``delay + 1 + k``, the
    final weight from iteration ``delay + ramp + 1`` on. The final weight is the attribute's value when the handler is
    built. Counted in iterations (optimiser steps), not epochs, because what the warm-up guards against happens within
    a number of steps, however many B-scans an epoch holds.

    Why: at the retinal bundle's demo widths and a few dozen steps on real B-scans, the class-weighted NLL empties the
    lesion prediction before the network has localised the fluid (bundle docs, "Small budgets"); the Dice terms alone
    localise it first, the NLL refines afterwards. ``delay`` and ``ramp`` 0 leave the weight untouched (the
    reference's constant weight).

    Args:
        loss: the loss module holding the weight, e.g. ``@loss``.
        name: the attribute to warm up, e.g. ``"nll_weight"``.
        delay: iterations with the weight at 0 (>= 0).
        ramp: iterations of the linear ramp after the delay (>= 0).
    """

    def __init__(self, loss: nn.Module, name: str, delay: int = 0, ramp: int = 0) -> None:
        if delay < 0 or ramp < 0:
            raise ValueError(f"warm-up delay and ramp must be >= 0 iterations, got delay={delay}, ramp={ramp}")
        if not isinstance(getattr(loss, name, None), (int, float)):
            raise ValueError(f"{type(loss).__name__} has no numeric attribute {name!r} to warm up")
        self.loss = loss
        self.name = name
        self.delay = int(delay)
        self.ramp = int(ramp)
        self.final_weight = float(getattr(loss, name))

    def weight_at(self, iteration: int) -> float:
        """The weight for the 1-based ``iteration``."""
        done = iteration - 1 - self.delay  # ramp iterations completed before this one
        if done >= self.ramp:
            return self.final_weight
        return self.final_weight * max(done, 0) / self.ramp

    def attach(self, engine: Engine) -> None:
        if self.delay > 0 or self.ramp > 0:
            engine.add_event_handler(Events.ITERATION_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        # ignite iterations are 1-based and already incremented at ITERATION_STARTED
        setattr(self.loss, self.name, self.weight_at(engine.state.iteration))
