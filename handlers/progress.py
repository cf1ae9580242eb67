"""A tqdm progress bar for MONAI workflows, configurable from a bundle config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ignite.engine import Engine
from ignite.handlers import ProgressBar as IgniteProgressBar

__all__ = ["ProgressBar"]


class ProgressBar:
    """ignite's ``ProgressBar`` whose ``attach`` arguments are given at construction.

    MONAI workflows attach handlers with ``handler.attach(engine)`` only, so the output transform (what
    the bar shows, e.g. the loss) must be known beforehand.

    Args:
        output_transform: maps ``engine.state.output`` to a number or a dict of numbers to display.
        desc: label of the bar.
        persist: keep the finished bar of each epoch on screen.
    """

    def __init__(
        self, output_transform: Callable[[Any], Any] | None = None, desc: str | None = None, persist: bool = False
    ) -> None:
        self.output_transform = output_transform
        self.bar = IgniteProgressBar(persist=persist, desc=desc)

    def attach(self, engine: Engine) -> None:
        self.bar.attach(engine, output_transform=self.output_transform)
