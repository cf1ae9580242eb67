"""Checks of the label codes stored by the challenges (e.g. CSV 2026 masks: 0 background, 128 plaque, 255 vessel).

The mapping of stored codes to class indices is MONAI's ``MapLabelValued``; it silently leaves an unknown
value as it is, so a mask with a stray code (an anti-aliased edge, a mask saved as 0/1) would train on a
wrong class. :class:`CheckLabelValuesd` runs first and rejects such a mask, naming its file.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from formats.errors import CaseReadError

__all__ = ["CheckLabelValuesd"]


class CheckLabelValuesd(MapTransform):
    """Raise :class:`~formats.errors.CaseReadError` when ``data[key]`` holds a value outside ``allowed``.

    The message names the file (the ``filename_or_obj`` meta entry of a ``MetaTensor``), the key, the
    unexpected values (at most ten) and the allowed ones. The data pass through unchanged.

    Args:
        keys: keys of the label maps to check.
        allowed: the label codes a map may contain.
        allow_missing_keys: skip missing keys instead of raising.
    """

    def __init__(self, keys: KeysCollection, allowed: Sequence[float], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.allowed = tuple(allowed)

    def __call__(self, data: Mapping[Hashable, torch.Tensor | np.ndarray]) -> dict[Hashable, torch.Tensor | np.ndarray]:
        d = dict(data)
        for key in self.key_iterator(d):
            values = np.unique(torch.as_tensor(d[key]).detach().cpu().numpy())
            unexpected = values[~np.isin(values, self.allowed)]
            if unexpected.size:
                meta = getattr(d[key], "meta", {})
                path = meta.get("filename_or_obj", "<unknown file>")
                shown = ", ".join(f"{v:g}" for v in unexpected[:10].tolist())
                more = f" and {unexpected.size - 10} more" if unexpected.size > 10 else ""
                raise CaseReadError(
                    f"{path}: '{key}' has label values {shown}{more} outside the allowed {list(self.allowed)}",
                    path=path,
                    key=str(key),
                )
        return d
