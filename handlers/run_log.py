"""A text log of every training run in its output folder: what the console shows, plus full tracebacks."""

from __future__ import annotations

import logging
import shlex
import sys
from datetime import datetime
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from utils.errors import BriefErrors, error_summary, install_brief_errors, mark_logged

__all__ = ["RunLog"]


class RunLog:
    """Write ``<output_dir>/log.txt`` for a run: every record the console shows, and full tracebacks.

    On ``start`` (or ``attach``) a ``logging.FileHandler`` is added to the root logger, where the
    bundle's ``logging.conf`` puts the console handler, and to the loggers that print on their own without
    propagating to the root (MONAI's ``StatsHandler``), so the file receives what the console shows (the progress bar
    aside). The file is opened for appending and each run starts with a header line, so a resumed run continues the
    same file. It is detached after the other ``COMPLETED`` handlers.

    Errors: at ignite's ``EXCEPTION_RAISED`` the full traceback goes to the file only, the console keeps ignite's
    one-line "Engine run is terminating due to exception" record, and the exception is re-raised (ignite calls only
    the handlers attached for that event, in order, and the first to raise ends the sequence: list this handler
    before ``StatsHandler``, whose own exception handler prints the traceback on the console). With ``brief_errors``
    the process's ``sys.excepthook`` becomes ``utils.errors.BriefErrors`` writing to this file, so that a command
    that fails ends with one message on stderr, the root cause behind MONAI's wrappers, and the path of this log,
    the full traceback going to the file; the replaced hook is restored when the run completes.

    Under DDP every rank writes its own file, rank 0 ``log.txt``, rank r ``log_rank<r>.txt``: one shared file would
    interleave the ranks' lines, and a failure on another rank (a bad case in its shard) must still be written
    somewhere. The multi-GPU configs lower the engine loggers of ranks > 0 to warnings, so their files stay short.

    Args:
        output_dir: the run's output folder.
        filename: name of the log file of rank 0.
        level: lowest level written.
        fmt: ``logging.Formatter`` format of the records, the bundles' ``logging.conf`` format by default.
        brief_errors: replace ``sys.excepthook`` as described above (command-line runs).
    """

    def __init__(
        self,
        output_dir: str | Path,
        filename: str = "log.txt",
        level: int = logging.INFO,
        fmt: str = "%(asctime)s - %(name)s - %(levelname)s - %(message)s",
        brief_errors: bool = True,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.filename = filename
        self.level = level
        self.fmt = fmt
        self.brief_errors = brief_errors
        self.path: Path | None = None
        self.handler: logging.FileHandler | None = None
        self._replaced_hook = sys.excepthook

    def attach(self, engine: Engine) -> None:
        self.start()
        self._add_to_loggers()  # the workflow's handlers, built by now, may have made their own loggers
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.exception_raised)
        # registered when the run starts, so that it runs after every other COMPLETED handler and keeps their records
        engine.add_event_handler(Events.STARTED, lambda e: e.add_event_handler(Events.COMPLETED, self.completed))

    def start(self) -> None:
        """Open the file (and replace the excepthook) now, before ``attach``: a bundle calls it first in
        ``initialize``, so that errors while the workflow is built are caught as well. Later calls do nothing."""
        if self.handler is not None:
            return
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        name = Path(self.filename)
        self.path = self.output_dir / (self.filename if rank == 0 else f"{name.stem}_rank{rank}{name.suffix}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(self.path, mode="a", encoding="utf-8")
        self.handler.setLevel(self.level)
        self.handler.setFormatter(logging.Formatter(self.fmt))
        self.handler.stream.write(f"===== {datetime.now():%Y-%m-%d %H:%M:%S} run started: {shlex.join(sys.argv)}\n")
        self.handler.flush()
        self._add_to_loggers()
        if self.brief_errors:
            self._replaced_hook = install_brief_errors(self.path)

    def exception_raised(self, engine: Engine, e: Exception) -> None:
        """Write the traceback of ``e`` to the file (not the console), detach, and re-raise ``e``."""
        if self.handler is not None:
            exc_info = (type(e), e, e.__traceback__)
            record = logging.LogRecord(engine.logger.name, logging.ERROR, __file__, 0, error_summary(e), None, exc_info)
            self.handler.handle(record)
            mark_logged(e)
        self._detach()
        raise e

    def completed(self, engine: Engine) -> None:
        self._detach()
        if isinstance(sys.excepthook, BriefErrors) and sys.excepthook.log_path == self.path:
            sys.excepthook = self._replaced_hook

    def _add_to_loggers(self) -> None:
        for logger in _console_loggers():
            logger.addHandler(self.handler)

    def _detach(self) -> None:
        if self.handler is not None:
            for logger in _console_loggers():
                logger.removeHandler(self.handler)
            self.handler.close()
            self.handler = None


def _console_loggers() -> list[logging.Logger]:
    """The root logger and the loggers that do not propagate to it (MONAI's ``StatsHandler`` logs through
    ``monai.apps.get_logger``, which gives the logger its own console handler and stops propagation)."""
    others = [
        logger for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and not logger.propagate
    ]  # fmt: skip
    return [logging.getLogger(), *others]
