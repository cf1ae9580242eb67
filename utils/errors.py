"""One clear message for a failed command: the root cause of an error, and an excepthook that prints only it.

MONAI wraps the errors it meets in ``RuntimeError``s raised ``from`` the real error: the config runner around every
failing expression or component (``monai.bundle.config_item.ConfigExpression.evaluate``,
``monai.utils.module.instantiate``: "Failed to evaluate ...", "Failed to instantiate ..."), and ``Compose`` around
every failing transform (``monai.transforms.transform.apply_transform``: "applying transform ..."). Python prints each
wrapper's traceback, so a bad input file ends a command in two or three nested tracebacks of hundreds of lines, while
the message that names the file and the problem is the innermost error's.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import TracebackType

__all__ = ["BriefErrors", "error_summary", "install_brief_errors", "mark_logged", "root_cause"]

# A failure inside a DataLoader worker is re-raised with the worker's traceback in the message (torch ExceptionWrapper).
_WORKER_TRACEBACK = "Original Traceback (most recent call last):"

# set on an error whose full traceback is already in the log file (written where it was raised, see ``mark_logged``);
# an attribute of the error itself, not its ``id``, which a later error may reuse once this one is freed
_LOGGED_FLAG = "_podium_traceback_logged"


def root_cause(exc: BaseException) -> BaseException:
    """The error behind MONAI's wrappers: a plain ``RuntimeError`` raised ``from`` another error is a wrapper (an
    error of a more specific type, or without an explicit cause, is the cause)."""
    while type(exc) is RuntimeError and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def error_summary(exc: BaseException) -> str:
    """``"<type>: <message>"`` of the root cause (a DataLoader worker's traceback reduced to its last line)."""
    cause = root_cause(exc)
    message = str(cause)
    if _WORKER_TRACEBACK in message:
        lines = [line for line in message.splitlines() if line.strip()]
        return lines[-1]
    return f"{type(cause).__name__}: {message}" if message else type(cause).__name__


def mark_logged(exc: BaseException) -> None:
    """Note that the full traceback of ``exc`` has been written to the log file already (an engine's handler did it
    where the error was raised), so that :class:`BriefErrors` does not write it twice."""
    setattr(exc, _LOGGED_FLAG, True)


class BriefErrors:
    """``sys.excepthook`` of a command-line run: one message on stderr, the full traceback in ``log_path``.

    For an ``Exception`` ending the process, stderr gets ``ERROR: <error_summary>`` and the path of the log, and the
    log file gets a dated line with the summary and the traceback of every error in the chain (the outer errors
    still say which config item failed). When the root cause's traceback is in the file already
    (:func:`mark_logged`) only the outer error's is added. Other exits (``KeyboardInterrupt``) go to ``fallback``.
    When the file cannot be written, the traceback is printed after all.

    Args:
        log_path: the file that receives the tracebacks (appended to; its folder is created).
        fallback: the hook for what is not an ``Exception`` (Python's own by default).
    """

    def __init__(self, log_path: str | Path, fallback: Callable[..., object] = sys.__excepthook__) -> None:
        self.log_path = Path(log_path)
        self.fallback = fallback

    def __call__(self, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if not isinstance(exc, Exception):
            self.fallback(exc_type, exc, tb)
            return
        summary = error_summary(exc)
        logged_before = any(getattr(e, _LOGGED_FLAG, False) for e in _chain(exc))
        lines = traceback.format_exception(exc_type, exc, tb, chain=not logged_before)
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(f"{datetime.now():%Y-%m-%d %H:%M:%S} - command failed: {summary}\n")
                log.writelines(lines)
            where = f"full traceback in {self.log_path}"
        except OSError as error:
            sys.stderr.writelines(lines)
            where = f"the traceback is above: cannot write {self.log_path}: {error}"
        # on a line of its own: a progress bar interrupted by the error has not ended its line
        print(f"\nERROR: {summary}\n({where})", file=sys.stderr)


def install_brief_errors(log_path: str | Path) -> Callable[..., object]:
    """Make :class:`BriefErrors` writing to ``log_path`` the process's ``sys.excepthook``; return the hook it replaces
    (to restore it). A ``BriefErrors`` hook in place is replaced, not chained."""
    replaced = sys.excepthook
    fallback = replaced.fallback if isinstance(replaced, BriefErrors) else replaced
    sys.excepthook = BriefErrors(log_path, fallback)
    return replaced


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return seen
