"""NIfTI-1 volumes (the retinal OCT bundle's predicted label cubes): atomic writing."""

from __future__ import annotations

import gzip
import os

import nibabel as nib
import numpy as np

from utils.atomic import atomic_path

__all__ = ["write_nifti_atomic"]


def write_nifti_atomic(
    path: str | os.PathLike, array: np.ndarray, affine: np.ndarray | None = None, overwrite: bool = False
) -> None:
    """Write ``array`` as a NIfTI-1 file (gzip-compressed when ``path`` ends in ``.gz``), atomically.

    The array is stored with its own dtype and axis order (NIfTI's first axis is x); ``affine`` defaults to the
    identity (voxel coordinates). The bytes are built in memory and written through :func:`utils.atomic.atomic_path`,
    whose temporary name would otherwise confuse nibabel's choice of format by extension.
    """
    image = nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64))
    data = image.to_bytes()
    if str(path).endswith(".gz"):
        data = gzip.compress(data, compresslevel=6)
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
