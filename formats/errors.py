"""The error of an unusable input file, shared by every reader of the project."""

from __future__ import annotations

import os

__all__ = ["CaseReadError"]


class CaseReadError(ValueError):
    """A case file that cannot be used; the message names the file (and the dataset) and the problem.

    Args:
        message: the full message.
        path: the offending file, kept as ``self.path`` for callers that skip or report bad cases.
        key: the dataset (or data key) concerned, if any, kept as ``self.key``.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.key = key
