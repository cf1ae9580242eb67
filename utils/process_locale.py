"""Keep the process's C locale settings across calls into libraries that change them."""

from __future__ import annotations

import locale
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["keep_process_locale"]


@contextmanager
def keep_process_locale() -> Iterator[None]:
    """Restore the process's locale (all categories) when the block ends.

    ITK's GDCM writer sets the C library locale to ``"C"`` and leaves it there; Python then takes ASCII as the
    preferred encoding, and every later ``open``/``read_text``/``subprocess`` text decoding of the process without an
    explicit encoding fails on non-ASCII text.
    """
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)
