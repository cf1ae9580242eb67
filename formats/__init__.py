"""Bottom layer: readers and writers of the file formats the bundles consume and produce, and their error."""

from formats.errors import CaseReadError

__all__ = ["CaseReadError"]
