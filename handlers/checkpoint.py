"""Resume training from the last completed epoch after the process was killed, best model selection included."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader, CheckpointSaver
from torch.nn import DataParallel
from torch.nn.parallel import DistributedDataParallel

from utils.atomic import atomic_path, remove_stale_temp_files

__all__ = ["BestModelState", "ResumableCheckpoint"]


class BestModelState:
    """The best validation score so far, and its epoch, as resumable state: put it in ``ResumableCheckpoint``'s
    ``save_dict`` so that a resumed run keeps ``models/model.pt`` unless an epoch beats the saved best.

    Two objects remember the best score of a run, and both start from scratch in a new process: MONAI's
    ``CheckpointSaver`` (``save_key_metric=True``) keeps the score of the file it wrote in its ignite ``Checkpoint``
    (whose ``state_dict`` is the (priority, filename) of each file kept) and writes a new file whenever an epoch beats
    it, so after a resume without it the first validated epoch always counts as "new best" and overwrites
    ``model.pt``; the evaluator (a MONAI ``Workflow``) keeps ``state.best_metric`` and ``state.best_metric_epoch``.
    This object's ``state_dict`` holds both and ``load_state_dict`` restores both.

    Args:
        evaluator: the validation engine (``ValidationHandler``'s ``validator``).
        handlers: the evaluator's handlers (its ``val_handlers``); each ``CheckpointSaver`` among them that saves on
            the key metric is restored. Other handlers are ignored, so a config passes its whole list.
    """

    def __init__(self, evaluator: Engine, handlers: Sequence[Any] = ()) -> None:
        self.evaluator = evaluator
        self.savers = [h for h in handlers if isinstance(h, CheckpointSaver) and h._key_metric_checkpoint is not None]

    def state_dict(self) -> dict[str, Any]:
        state = self.evaluator.state
        return {
            "best_metric": float(getattr(state, "best_metric", -1)),
            "best_metric_epoch": int(getattr(state, "best_metric_epoch", -1)),
            # the priorities are metric values (numpy or tensor scalars): plain floats load with weights_only=True
            "savers": [_plain(saver._key_metric_checkpoint.state_dict()) for saver in self.savers],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # a DDP rank > 0 validates without the saver (only rank 0 writes files) and restores only the evaluator's best
        if self.savers and len(state["savers"]) != len(self.savers):
            raise ValueError(
                f"the checkpoint holds the best scores of {len(state['savers'])} CheckpointSaver(s), the workflow "
                f"validates with {len(self.savers)}: it was written by another configuration"
            )
        self.evaluator.state.best_metric = state["best_metric"]
        self.evaluator.state.best_metric_epoch = state["best_metric_epoch"]
        for saver, saved in zip(self.savers, state["savers"]):
            saver.load_state_dict({key: [tuple(item) for item in items] for key, items in saved.items()})


class ResumableCheckpoint:
    """Keep one "latest" checkpoint of everything a run needs, and resume from it when asked.

    At the end of every ``interval``-th epoch ``save_dict`` (network, teacher, optimizer, scheduler,
    trainer, ...) is written atomically to ``path``, so a run killed at any moment, even while saving,
    leaves the previous complete checkpoint; the temporary file of a save that was killed is removed when the next
    run attaches this handler. With ``resume=True`` the checkpoint, if present, is loaded at start-up through MONAI's
    ``CheckpointLoader`` (``torch.load(weights_only=True)``), and ignite continues with the epoch after the saved one.
    Include a :class:`BestModelState` in ``save_dict``, so that the best-model saver keeps its best score. An entry
    of ``save_dict`` that a checkpoint of an older version lacks is logged and starts fresh.

    Args:
        path: the checkpoint file, e.g. ``{output_dir}/checkpoints/latest.pt``.
        save_dict: name -> object with ``state_dict``/``load_state_dict``; include the trainer itself.
        resume: load ``path`` at start-up when it exists.
        interval: save every ``interval`` epochs.
        map_location: passed to ``torch.load`` when resuming.
    """

    def __init__(
        self,
        path: str | Path,
        save_dict: dict[str, Any],
        resume: bool = False,
        interval: int = 1,
        map_location: Any = None,
    ) -> None:
        if not save_dict:
            raise ValueError("save_dict must name at least one object to checkpoint")
        self.path = Path(path)
        self.save_dict = save_dict
        self.resume = resume
        self.interval = interval
        self.map_location = map_location
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        if _is_main_process():
            for stale in remove_stale_temp_files(self.path):
                self.logger.info("removed %s, left by a save that was killed mid-way", stale)
        if self.resume:
            engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self.save)

    def load(self, engine: Engine) -> None:
        if not self.path.is_file():
            self.logger.info("resume requested but %s does not exist: starting from scratch", self.path)
            return
        saved = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True).keys()
        absent = [name for name in self.save_dict if name not in saved]
        if absent:
            self.logger.warning("%s has no %s (written by an older version): they start fresh", self.path, absent)
        load_dict = {name: obj for name, obj in self.save_dict.items() if name in saved}
        CheckpointLoader(str(self.path), load_dict, map_location=self.map_location)(engine)
        self.logger.info("resumed from %s after epoch %d", self.path, engine.state.epoch)

    def save(self, engine: Engine) -> None:
        if not _is_main_process():
            return
        state = {name: _unwrap(obj).state_dict() for name, obj in self.save_dict.items()}
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)


def _plain(state: dict[str, Any]) -> dict[str, list[tuple[float, str]]]:
    """An ignite ``Checkpoint``'s state with its priorities (metric values: numpy or tensor scalars) as floats, which
    ``torch.load(weights_only=True)`` reads."""
    return {key: [(float(priority), str(name)) for priority, name in items] for key, items in state.items()}


def _unwrap(obj: Any) -> Any:
    """A (Distributed)DataParallel network is saved unwrapped, as MONAI's CheckpointSaver and Loader expect."""
    return obj.module if isinstance(obj, (DataParallel, DistributedDataParallel)) else obj


def _is_main_process() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
