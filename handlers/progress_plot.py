"""nnU-Net-style ``progress.png`` of a training run, redrawn every epoch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from ignite.engine import Engine
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from handlers.history import EpochHistory
from utils.atomic import atomic_path

__all__ = ["ProgressPlot"]


class ProgressPlot:
    """Draw the run's ``EpochHistory`` to ``path`` after every epoch and every validation.

    Three panels over the epochs, as nnU-Net's ``progress.png`` (nnunetv2 ``nnUNetLogger.plot_progress_png``):
    training loss with the validation metrics on a second axis, the epoch time, and the learning rate. The PNG is
    written atomically, so a viewer never opens a half-written file; after a resume the history comes back from the
    checkpoint and the picture continues. Only rank 0 draws under DDP.

    Args:
        history: the run's history; attached to the engine with this handler.
        path: the PNG, e.g. ``{output_dir}/progress.png``.
        metric_names: validation metrics to draw; ``None`` draws all scalar ones.
    """

    def __init__(self, history: EpochHistory, path: str | Path, metric_names: Sequence[str] | None = None) -> None:
        self.history = history
        self.path = Path(path)
        self.metric_names = None if metric_names is None else list(metric_names)

    def attach(self, engine: Engine) -> None:
        self.history.attach(engine)
        self.history.add_listener(self.draw)

    def draw(self, history: EpochHistory) -> None:
        if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return
        rows = [row for row in history.rows if "seconds" in row]  # completed epochs
        epochs = [row["epoch"] for row in rows]
        figure = Figure(figsize=(12, 12), layout="constrained")
        FigureCanvasAgg(figure)
        loss_axis, time_axis, lr_axis = figure.subplots(3, 1, sharex=True)

        loss_axis.plot(epochs, [_nan(row["loss"]) for row in rows], color="tab:blue", marker=".", label="train loss")
        loss_axis.set_ylabel("loss")
        metric_axis = loss_axis.twinx()
        names = self.metric_names
        if names is None:
            names = sorted({name for row in rows for name in row["metrics"]})
        for name in names:
            points = [(row["epoch"], _nan(row["metrics"][name])) for row in rows if name in row["metrics"]]
            if points:
                metric_axis.plot(*zip(*points), marker=".", linestyle="--", label=name)
        metric_axis.set_ylabel("validation metric")
        handles = loss_axis.get_legend_handles_labels()
        more = metric_axis.get_legend_handles_labels()
        loss_axis.legend(handles[0] + more[0], handles[1] + more[1], loc="upper left", fontsize="small")

        time_axis.plot(epochs, [row["seconds"] for row in rows], color="tab:green", marker=".")
        time_axis.set_ylabel("epoch time (s)")
        lr_axis.plot(epochs, [_nan(row.get("lr")) for row in rows], color="tab:red", marker=".")
        lr_axis.set_ylabel("learning rate")
        lr_axis.set_xlabel("epoch")
        lr_axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        with atomic_path(self.path) as tmp:
            figure.savefig(tmp, format="png", dpi=80)


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value
