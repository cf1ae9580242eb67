"""The dictionary reader of the HDF5 case files of the challenges (CSV 2026 ``NNNN.h5`` / ``NNNN_label.h5``).

:class:`LoadH5d` wraps :func:`formats.h5.read_h5`: ``data[key]`` is the path of one ``.h5`` file, each named dataset
becomes a channel-first ``MetaTensor`` (or a ``(1,)`` tensor for a scalar such as ``cls``) under its own key.
Every problem with a file (missing, not HDF5, dataset absent, wrong shape, non-finite values) raises
:class:`~formats.errors.CaseReadError`, whose message names the file and the dataset.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import ensure_tuple, ensure_tuple_rep

from formats.h5 import read_h5

__all__ = ["LoadH5d"]


class LoadH5d(MapTransform):
    """Read named datasets of the ``.h5`` file whose path is ``data[key]``.

    Each dataset of ``expected_ndim`` >= 1 (or ``None``) is returned as a channel-first ``MetaTensor``
    ``(1, *shape)`` with meta ``filename_or_obj`` (the path), ``h5_dataset`` (the dataset name),
    ``spatial_shape`` (the shape on disk) and ``original_channel_dim = "no_channel"``. A dataset read with
    ``expected_ndim=0`` is a scalar (shape ``()`` or ``(1,)``) and is returned as a ``(1,)`` tensor, as
    the CSV 2026 ``cls`` is consumed.

    Example (a CSV 2026 label file)::

        LoadH5d("label", datasets=("long_mask", "trans_mask", "cls"), expected_ndim=(2, 2, 0))

    Args:
        keys: the one data key holding the file path (the datasets of one file go to distinct keys).
        datasets: names of the datasets to read.
        output_keys: data keys of the results, one per dataset; default the dataset names.
        dtype: dtype of every returned array.
        expected_ndim: required dimensions on disk, one value for all datasets or one per dataset
            (``0`` = scalar, ``None`` = any).
        allow_missing_keys: skip a missing ``key`` instead of raising.

    Raises:
        CaseReadError: the file is missing or not readable as HDF5, or a dataset fails
            the checks of :func:`formats.h5.read_h5_dataset`; the message names the file and the dataset.
    """

    def __init__(
        self,
        keys: KeysCollection,
        datasets: Sequence[str],
        output_keys: Sequence[str] | None = None,
        dtype: DtypeLike = np.float32,
        expected_ndim: int | None | Sequence[int | None] = 2,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"LoadH5d reads one file per instance, got keys {self.keys}")
        self.datasets = tuple(ensure_tuple(datasets))
        self.output_keys = tuple(ensure_tuple(output_keys)) if output_keys is not None else self.datasets
        if len(self.output_keys) != len(self.datasets):
            raise ValueError(f"got {len(self.datasets)} datasets but {len(self.output_keys)} output keys")
        if expected_ndim is None or isinstance(expected_ndim, int):
            self.expected_ndim = ensure_tuple_rep(expected_ndim, len(self.datasets))
        else:
            self.expected_ndim = tuple(expected_ndim)
        if len(self.expected_ndim) != len(self.datasets):
            raise ValueError(f"got {len(self.datasets)} datasets but {len(self.expected_ndim)} expected_ndim values")
        self.dtype = dtype

    def read(self, path: str | os.PathLike) -> dict[str, torch.Tensor]:
        """The checked datasets of the file ``path`` keyed by output key."""
        arrays = read_h5(path, self.datasets, self.expected_ndim)
        return {
            out_key: self._to_tensor(path, name, arrays[name], ndim)
            for name, out_key, ndim in zip(self.datasets, self.output_keys, self.expected_ndim)
        }

    def _to_tensor(self, path: str | os.PathLike, name: str, array: np.ndarray, ndim: int | None) -> torch.Tensor:
        values = torch.as_tensor(array.astype(self.dtype, copy=False))
        if ndim == 0:
            return values
        meta = {
            "filename_or_obj": str(path),
            "h5_dataset": name,
            "spatial_shape": np.asarray(array.shape),
            "original_channel_dim": "no_channel",
        }
        return MetaTensor(values[None], affine=torch.eye(array.ndim + 1, dtype=torch.float64), meta=meta)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d.update(self.read(d[key]))  # type: ignore[arg-type]
        return d

