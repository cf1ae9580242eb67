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
    the bar shows, e.g. the loss) must be known beforehand. ignite labels a single number "output"; here it
    is labelled ``output_name``.

    Args:
        output_transform: maps ``engine.state.output`` to a number or a dict of numbers to display.
        desc: label of the bar.
        persist: keep the finished bar of each epoch on screen.
        output_name: label of a single number returned by ``output_transform``.
    """

    def __init__(
        self,
        output_transform: Callable[[Any], Any] | None = None,
        desc: str | None = None,
        persist: bool = False,
        output_name: str = "loss",
    ) -> None:
        self.output_transform = output_transform
        self.output_name = output_name
        self.bar = IgniteProgressBar(persist=persist, desc=desc)

    def attach(self, engine: Engine) -> None:
        self.bar.attach(engine, output_transform=None if self.output_transform is None else self._named_output)

    def _named_output(self, output: Any) -> Any:
        value = self.output_transform(output)
        return value if isinstance(value, dict) else {self.output_name: value}
