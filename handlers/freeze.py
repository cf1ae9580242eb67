"""Freeze a sub-module (a pretrained encoder) for the first epochs of training."""

from __future__ import annotations

import logging
import warnings

from ignite.engine import Engine, Events
from torch import nn

__all__ = ["FreezeForEpochs"]

logger = logging.getLogger(__name__)


class FreezeForEpochs:
    """Set ``requires_grad=False`` on every parameter of ``module`` during the first ``epochs`` epochs.

    The optimizer must hold the parameters from the start (frozen ones simply get no gradient, and
    Adam/AdamW skip parameters without one, weight decay included), so unfreezing needs no new
    optimizer. It freezes exactly the module it is given: MAGNET's own rule matched no parameter names
    and froze its extra stem instead (lyyek/CSV2026 train.py); this handler is the intent, not the bug.

    A freeze protects pretrained weights; freezing a randomly initialised encoder only wastes its first
    epochs. With ``pretrained=False`` the freeze is skipped and a warning says so (once, when attached).

    Args:
        module: the sub-module to freeze, e.g. ``@network.encoder``.
        epochs: number of frozen epochs; 0 never freezes.
        pretrained: whether ``module`` holds pretrained weights (e.g. ``"$@pretrained_path is not None"``).
    """

    def __init__(self, module: nn.Module, epochs: int, pretrained: bool = True) -> None:
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        self.module = module
        self.epochs = epochs
        self.pretrained = bool(pretrained)

    def attach(self, engine: Engine) -> None:
        if self.epochs > 0 and not self.pretrained:
            message = (
                f"encoder freeze SKIPPED: {self.epochs} frozen epochs were asked for, but no pretrained weights are "
                "loaded (pretrained_path is null), so the randomly initialised encoder trains from epoch 1"
            )
            logger.warning(message)
            warnings.warn(message, stacklevel=2)
            return
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        # ignite epochs are 1-based and already incremented at EPOCH_STARTED
        trainable = engine.state.epoch > self.epochs
        for param in self.module.parameters():
            param.requires_grad_(trainable)
