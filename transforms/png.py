"""Dictionary transforms reading and writing the 8-bit grey PNGs of 2D ultrasound challenges (CCF BDCI 2021).

:class:`LoadGreyPNGd` returns one grey channel ``(1, H, W)``; :class:`LoadMaskPNGd` returns {0, 1} and resizes a
slightly-off mask to its image with nearest neighbour, as the challenge's loader does; :class:`SaveGreyPNGd` writes
``{case}{suffix}.png``. The files are read, checked and written by :mod:`formats.png`, whose
:class:`~formats.errors.CaseReadError` names the file of any problem.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import convert_to_numpy

from formats.png import fit_mask_to_image, read_grey_png, read_mask_png, save_png_atomic
from transforms.writers import CaseWriterd

__all__ = ["LoadGreyPNGd", "LoadMaskPNGd", "SaveGreyPNGd"]


def _meta_tensor(array: np.ndarray, path: str | os.PathLike, dtype: DtypeLike, **meta: object) -> MetaTensor:
    meta = {
        "filename_or_obj": str(path),
        "spatial_shape": np.asarray(array.shape),
        "original_channel_dim": "no_channel",
        **meta,
    }
    values = torch.as_tensor(array.astype(dtype, copy=False))[None]
    return MetaTensor(values, affine=torch.eye(3, dtype=torch.float64), meta=meta)


class LoadGreyPNGd(MapTransform):
    """Load the grey PNG whose path is ``data[key]`` as a ``(1, H, W)`` MetaTensor with values 0..255.

    Meta: ``filename_or_obj`` (the path), ``spatial_shape`` (``(H, W)`` on disk, what inference resizes back
    to), ``original_channel_dim = "no_channel"``; the affine is the identity (pixel units).

    Args:
        keys: data keys holding image paths.
        dtype: dtype of the returned values.
        colour_to_grey: an RGB image whose channels differ somewhere is converted to luminance with a warning
            naming the file; False refuses it (:func:`formats.png.grey_from_rgb`).
        allow_missing_keys: skip missing keys instead of raising.

    Raises:
        CaseReadError: see :func:`formats.png.read_grey_png`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        dtype: DtypeLike = np.float32,
        colour_to_grey: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.dtype = dtype
        self.colour_to_grey = colour_to_grey

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            d[key] = _meta_tensor(read_grey_png(path, self.colour_to_grey), path, self.dtype)  # type: ignore[arg-type]
        return d


class LoadMaskPNGd(MapTransform):
    """Load the {0, 255} (or 1-bit) mask PNG whose path is ``data[key]`` as a ``(1, H, W)`` {0, 1} MetaTensor.

    When ``data[reference_key]`` is already loaded (a channel-first image), the mask is resized to its size with
    nearest neighbour if it is within ``max_size_mismatch`` of it (the challenge's masks are sometimes a few
    pixels off); the size on disk is kept in the meta as ``spatial_shape``.

    Args:
        keys: data keys holding mask paths.
        reference_key: key of the image the mask must match; absent from the data = keep the mask's size.
        max_size_mismatch: largest relative size difference per axis that is resized rather than refused.
        nearest_code: map every mask value to the nearest of 0 and 255 (anti-aliased edges) instead of refusing
            values that are no code.
        dtype: dtype of the returned values.
        allow_missing_keys: skip missing keys instead of raising.

    Raises:
        CaseReadError: see :func:`formats.png.read_mask_png` and :func:`formats.png.fit_mask_to_image`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        reference_key: str | None = "image",
        max_size_mismatch: float = 0.1,
        dtype: DtypeLike = np.float32,
        allow_missing_keys: bool = False,
        nearest_code: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.reference_key = reference_key
        self.max_size_mismatch = max_size_mismatch
        self.nearest_code = nearest_code
        self.dtype = dtype

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        reference = d.get(self.reference_key) if self.reference_key is not None else None
        shape = tuple(int(s) for s in reference.shape[-2:]) if isinstance(reference, torch.Tensor) else None
        for key in self.key_iterator(d):
            path = d[key]
            mask = read_mask_png(path, self.nearest_code)  # type: ignore[arg-type]
            disk_shape = np.asarray(mask.shape)
            if shape is not None:
                mask = fit_mask_to_image(mask, shape, path, self.max_size_mismatch)  # type: ignore[arg-type]
            d[key] = _meta_tensor(mask, path, self.dtype, spatial_shape=disk_shape)
        return d


class SaveGreyPNGd(CaseWriterd):
    """Write ``data[key]`` (``(1, H, W)`` or ``(H, W)``) as ``{output_dir}/{case}{suffix}.png``, times ``scale``.

    For the angioma submission a {0, 1} mask is written as {0, 255} under the input image's name.

    Args:
        keys: data keys to write, one file per key and case.
        output_dir: the folder of the PNGs (created if needed).
        case_key: data key holding the case name.
        suffix: appended to the case name; with several keys, one distinct suffix per key (a sequence).
        scale: multiplies the values before rounding to uint8 (255 for {0, 1} masks, 1 for 0..255 images).
        overwrite: replace an existing file; otherwise an existing file is an error for that case.

    Raises:
        ValueError: several keys without one distinct suffix per key (they would all write the same file).
    """

    extension = ".png"

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        case_key: str = "case",
        suffix: str | Sequence[str] = "",
        scale: float = 255.0,
        overwrite: bool = False,
    ) -> None:
        suffixes = [suffix] if isinstance(suffix, str) else [str(s) for s in suffix]
        super().__init__(keys, output_dir, case_key, suffixes[0] if len(suffixes) == 1 else "", overwrite)
        if len(suffixes) == 1:
            suffixes *= len(self.keys)
        if len(suffixes) != len(self.keys) or len(set(suffixes)) != len(suffixes):
            raise ValueError(
                f"SaveGreyPNGd writes one file per key: keys {list(self.keys)} need as many distinct suffixes, "
                f"got {suffix!r}"
            )
        self.suffixes = dict(zip(self.keys, suffixes))
        self.scale = scale

    def output_paths(self, case: str) -> list[Path]:
        return [self.output_path(case, self.suffixes[key]) for key in self.keys]

    def write(self, case: str, data: dict[Hashable, object]) -> None:
        for key in self.key_iterator(data):
            array = convert_to_numpy(data[key]).astype(np.float64)
            array = np.clip(np.round(array * self.scale), 0, 255).astype(np.uint8)
            save_png_atomic(self.output_path(case, self.suffixes[key]), array, self.overwrite)
