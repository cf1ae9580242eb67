"""Listing a folder of new cases so that every entry is accounted for: a case, or skipped with the reason.

A user who drops 200 files into an input folder must learn why 3 of them were not predicted (a dangling symbolic
link, a folder named like a case, a ``.txt`` file, a label file among the images), not find 197 outputs and no
word. :func:`scan_case_folder` sorts the entries of a folder into cases and skipped entries; :class:`CaseList` is
the datalist it gives (a plain list of case dicts) carrying the skipped entries as ``skipped``, which
:class:`engines.inference.CaseInferenceWorkflow` puts into the run's report and summary, so that
``cases + skipped = entries of the folder``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["CaseList", "scan_case_folder"]

logger = logging.getLogger(__name__)


class CaseList(list):
    """A datalist (one dict per case) that also lists the entries of its folder that are no case.

    Args:
        items: the case dicts.
        skipped: ``{"entry": path, "reason": why it is no case}`` per skipped entry of the folder.
    """

    def __init__(self, items: Iterable[dict] = (), skipped: Iterable[dict[str, str]] = ()) -> None:
        super().__init__(items)
        self.skipped: list[dict[str, str]] = list(skipped)


def scan_case_folder(
    folder: str | os.PathLike, classify: Callable[[Path], str | None]
) -> tuple[list[Path], list[dict[str, str]]]:
    """The case entries of ``folder`` (sorted by name) and the skipped ones with their reasons.

    Hidden entries (``.DS_Store``, editors' files) and dangling symbolic links are skipped here; every other entry
    is passed to ``classify``, which returns ``None`` for a case or the reason it is not one. Each skipped entry is
    logged as a warning.
    """
    cases, skipped = [], []
    for path in sorted(Path(folder).iterdir()):
        if path.name.startswith("."):
            reason = "hidden entry"
        elif path.is_symlink() and not path.exists():
            reason = f"dangling symbolic link (its target {os.readlink(path)} does not exist)"
        else:
            reason = classify(path)
        if reason is None:
            cases.append(path)
        else:
            skipped.append({"entry": str(path), "reason": reason})
            logger.warning("skipped %s: %s", path, reason)
    return cases, skipped
