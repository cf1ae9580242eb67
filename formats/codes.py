"""Label maps whose values must be codes (mask 0/255, OCT grey codes 0/128/191/255): checking and nearest mapping.

Masks saved by image editors or resized with interpolation carry anti-aliased edges: 253 and 254 beside 255, 1 and 2
beside 0. Such values are refused by default (a value that is no code may also mean a wrong file), with a message
that says when they are almost codes and names the option that maps every value to its nearest code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from formats.errors import CaseReadError

__all__ = ["NEAR_CODE_DISTANCE", "check_codes"]

NEAR_CODE_DISTANCE = 8
"""Largest distance to a code at which a value is called "almost a code" in the error message."""


def check_codes(
    array: np.ndarray, codes: Sequence[int], path: str | os.PathLike, what: str, nearest_code: bool = False
) -> np.ndarray:
    """``array`` if all its values are ``codes``; with ``nearest_code``, every value mapped to its nearest code.

    Args:
        array: the label values.
        codes: the allowed values.
        path: the file, named by the error.
        what: how the error names the file and values, e.g. ``"{path}: mask has values"``.
        nearest_code: map each value to the nearest code (ties to the lower one) instead of refusing.

    Raises:
        CaseReadError: a value is no code and ``nearest_code`` is False; the message lists the values, says
            whether they are all within :data:`NEAR_CODE_DISTANCE` of a code, and names ``nearest_code``.
    """
    allowed = np.asarray(sorted(int(c) for c in codes))
    values = np.unique(array)
    off = values[~np.isin(values, allowed)]
    if not off.size:
        return array
    nearest = allowed[np.abs(off.astype(np.int64)[:, None] - allowed[None, :]).argmin(axis=1)]
    if nearest_code:
        lookup = dict(zip(off.tolist(), nearest.tolist()))
        mapped = array.copy()
        for value, code in lookup.items():
            mapped[array == value] = code
        return mapped
    shown = ", ".join(str(v) for v in off[:10].tolist()) + (" ..." if off.size > 10 else "")
    distance = int(np.abs(off.astype(np.int64) - nearest).max())
    if distance <= NEAR_CODE_DISTANCE:
        hint = (
            f"they are almost codes (at most {distance} away: anti-aliased or resampled edges?); the nearest_code "
            "option (bundle setting nearest_label_code) maps every value to its nearest code"
        )
    else:
        hint = (
            "if they are anti-aliased edges, the nearest_code option (bundle setting nearest_label_code) maps every "
            "value to its nearest code"
        )
    raise CaseReadError(f"{what} {shown} that are no code (allowed {allowed.tolist()}); {hint}", path=path)
