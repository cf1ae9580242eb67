"""Resume training from the last completed epoch after the process was killed."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader
from torch.nn import DataParallel
from torch.nn.parallel import DistributedDataParallel

from utils.atomic import atomic_path

__all__ = ["ResumableCheckpoint"]


class ResumableCheckpoint:
    """Keep one "latest" checkpoint of everything a run needs, and resume from it when asked.

    At the end of every ``interval``-th epoch ``save_dict`` (network, teacher, optimizer, scheduler,
    trainer, ...) is written atomically to ``path``, so a run killed at any moment, even while saving,
    leaves the previous complete checkpoint. With ``resume=True`` the checkpoint, if present, is loaded
    at start-up through MONAI's ``CheckpointLoader`` (``torch.load(weights_only=True)``), and ignite
    continues with the epoch after the saved one.

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
        if self.resume:
            engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self.save)

    def load(self, engine: Engine) -> None:
        if not self.path.is_file():
            self.logger.info("resume requested but %s does not exist: starting from scratch", self.path)
            return
        CheckpointLoader(str(self.path), self.save_dict, map_location=self.map_location)(engine)
        self.logger.info("resumed from %s after epoch %d", self.path, engine.state.epoch)

    def save(self, engine: Engine) -> None:
        if not _is_main_process():
            return
        state = {name: _unwrap(obj).state_dict() for name, obj in self.save_dict.items()}
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)


def _unwrap(obj: Any) -> Any:
    """A (Distributed)DataParallel network is saved unwrapped, as MONAI's CheckpointSaver and Loader expect."""
    return obj.module if isinstance(obj, (DataParallel, DistributedDataParallel)) else obj


def _is_main_process() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
