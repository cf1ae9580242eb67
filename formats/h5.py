"""HDF5 case files (CSV 2026 ``NNNN.h5`` / ``NNNN_label.h5``): checked reading, atomic writing.

Every problem with a file (missing, not HDF5, dataset absent, wrong shape, non-finite values) raises
:class:`~formats.errors.CaseReadError`, whose message names the file and the dataset, so that one bad case among a
thousand is found at once. :func:`write_h5_atomic` writes a case file without ever leaving a partial one. The
dictionary reader over these functions is :class:`transforms.io.LoadH5d`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np

from formats.errors import CaseReadError
from utils.atomic import atomic_path

__all__ = ["read_h5", "read_h5_dataset", "write_h5_atomic"]


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


def read_h5(
    path: str | os.PathLike, datasets: Sequence[str], expected_ndim: Sequence[int | None]
) -> dict[str, np.ndarray]:
    """The checked datasets (:func:`read_h5_dataset`) of the HDF5 file ``path``, keyed by dataset name.

    Args:
        path: the file.
        datasets: names of the datasets to read.
        expected_ndim: one required number of dimensions per dataset (``0`` = scalar, ``None`` = any).

    Raises:
        CaseReadError: ``path`` is not a path, the file is missing or not readable as HDF5, or a dataset fails
            :func:`read_h5_dataset`'s checks or cannot be read (a truncated file); the message names the file
            and the dataset.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise CaseReadError(f"expected the path of an .h5 file, got {type(path).__name__}: {path!r}")
    if not Path(path).is_file():
        raise CaseReadError(f"{path}: file not found", path=path)
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise CaseReadError(f"{path}: not a readable HDF5 file ({error})", path=path) from error
    arrays = {}
    with file:
        for name, ndim in zip(datasets, expected_ndim):
            try:
                arrays[name] = read_h5_dataset(file, path, name, ndim)
            except OSError as error:  # a truncated file opens but fails on reading a dataset
                raise CaseReadError(f"{path}: dataset '{name}' is unreadable ({error})", path, name) from error
    return arrays


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
