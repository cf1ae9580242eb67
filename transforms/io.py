"""Reading and writing the HDF5 case files of the challenges (CSV 2026 ``NNNN.h5`` / ``NNNN_label.h5``).

:class:`LoadH5d` is the dictionary reader: ``data[key]`` is the path of one ``.h5`` file, each named dataset
becomes a channel-first ``MetaTensor`` (or a ``(1,)`` tensor for a scalar such as ``cls``) under its own key.
Every problem with a file (missing, not HDF5, dataset absent, wrong shape, non-finite values) raises
:class:`CaseReadError`, whose message names the file and the dataset, so that one bad case among a
thousand is found at once. :func:`write_h5_atomic` writes a case file without ever leaving a partial one.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import ensure_tuple, ensure_tuple_rep

from formats.errors import CaseReadError
from utils.atomic import atomic_path

__all__ = ["LoadH5d", "read_h5_dataset", "write_h5_atomic"]


def read_h5_dataset(
    file: h5py.File, path: str | os.PathLike, name: str, expected_ndim: int | None = 2
) -> np.ndarray:
    """Read dataset ``name`` of the open ``file`` and check it; ``path`` is only used in error messages.

    Args:
        file: an open HDF5 file.
        path: the file's path, named by every error.
        name: dataset name.
        expected_ndim: required number of dimensions; ``0`` reads a scalar stored with shape ``()`` or
            ``(1,)`` and returns shape ``(1,)``; ``None`` accepts any shape.

    Raises:
        CaseReadError: the dataset is missing (the message lists the datasets the file has), is not a
            numeric array, has the wrong number of dimensions or an empty axis, or holds NaN/inf.
    """
    if name not in file:
        available = sorted(file.keys())
        raise CaseReadError(f"{path}: dataset '{name}' not found; the file has {available}", path=path, key=name)
    node = file[name]
    if not isinstance(node, h5py.Dataset):
        raise CaseReadError(f"{path}: '{name}' is a {type(node).__name__}, not a dataset", path=path, key=name)
    array = np.asarray(node[()])
    if array.dtype.kind not in "biuf":
        raise CaseReadError(f"{path}: dataset '{name}' has non-numeric dtype {array.dtype}", path=path, key=name)
    if expected_ndim == 0:
        if array.size != 1 or array.ndim > 1:
            raise CaseReadError(
                f"{path}: dataset '{name}' should be a scalar (shape () or (1,)), got shape {array.shape}",
                path=path,
                key=name,
            )
        array = array.reshape(1)
    elif expected_ndim is not None and array.ndim != expected_ndim:
        raise CaseReadError(
            f"{path}: dataset '{name}' should have {expected_ndim} dimensions, got shape {array.shape}",
            path=path,
            key=name,
        )
    if array.size == 0:
        raise CaseReadError(f"{path}: dataset '{name}' is empty (shape {array.shape})", path=path, key=name)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise CaseReadError(f"{path}: dataset '{name}' has {bad} NaN/inf values", path=path, key=name)
    return array


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
            :func:`read_h5_dataset`'s checks; the message names the file and the dataset.
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
        if not isinstance(path, (str, os.PathLike)):
            raise CaseReadError(f"expected the path of an .h5 file, got {type(path).__name__}: {path!r}")
        if not Path(path).is_file():
            raise CaseReadError(f"{path}: file not found", path=path)
        try:
            file = h5py.File(path, "r")
        except OSError as error:
            raise CaseReadError(f"{path}: not a readable HDF5 file ({error})", path=path) from error
        tensors = {}
        with file:
            for name, out_key, ndim in zip(self.datasets, self.output_keys, self.expected_ndim):
                try:
                    array = read_h5_dataset(file, path, name, ndim)
                except OSError as error:  # a truncated file opens but fails on reading a dataset
                    raise CaseReadError(f"{path}: dataset '{name}' is unreadable ({error})", path, name) from error
                tensors[out_key] = self._to_tensor(path, name, array, ndim)
        return tensors

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


def write_h5_atomic(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], overwrite: bool = True) -> None:
    """Write ``arrays`` as the datasets of the HDF5 file ``path``, atomically (temporary file + rename).

    A reader sees either no file, the previous file or the complete new one, never a partial write.
    Arrays keep their dtype; a 0-d array (``np.uint8(1)``) becomes a scalar dataset. Missing parent
    folders are created.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    with atomic_path(path, overwrite=overwrite) as tmp, h5py.File(tmp, "w") as file:
        for name, array in arrays.items():
            file.create_dataset(name, data=np.asarray(array))
