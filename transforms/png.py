"""Reading and writing the 8-bit PNGs of 2D ultrasound challenges (CCF BDCI 2021 angioma, FUGC 2025 cervix).

The angioma images are RGB PNGs whose three channels are identical, the masks 8-bit ``L`` PNGs with values
{0, 255} that are sometimes a few pixels off the image size (as in the challenge data shipped with
chaineypung/CCF-BDCI-2021-ULSEG-Rank1st). :class:`LoadGreyPNGd` returns one grey channel ``(1, H, W)``;
:class:`LoadMaskPNGd` returns {0, 1} and resizes a slightly-off mask to its image with nearest neighbour, as the
challenge's loader does. :func:`read_rgb_png` reads the 3-channel images of FUGC 2025. Anything else (a missing
or corrupt file, 16-bit, alpha, palette, RGB with differing channels where grey is expected, mask values other
than 0/255, a mask far from its image's size) raises :class:`formats.errors.CaseReadError` naming the file, so
one bad case among hundreds is found at once. Unlike MONAI's ``PILReader`` (which returns ``(W, H)`` unless
told otherwise), arrays here are ``(H, W)``.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from PIL import Image

from formats.errors import CaseReadError
from utils.atomic import atomic_path

__all__ = [
    "LoadGreyPNGd",
    "LoadMaskPNGd",
    "SaveGreyPNGd",
    "fit_mask_to_image",
    "read_grey_png",
    "read_mask_png",
    "read_rgb_png",
    "save_png_atomic",
]

_MODE_PROBLEMS = {
    "I;16": "is a 16-bit image",
    "I;16B": "is a 16-bit image",
    "I;16L": "is a 16-bit image",
    "I": "is a 32-bit integer image",
    "F": "is a 32-bit float image",
    "RGBA": "has an alpha channel (RGBA)",
    "LA": "has an alpha channel (LA)",
    "P": "is a palette image",
    "1": "is a 1-bit image",
}


def _open_png(path: str | os.PathLike) -> tuple[str, np.ndarray]:
    """The PIL mode and pixels of the image file ``path``; a missing or unreadable file raises CaseReadError."""
    if not isinstance(path, (str, os.PathLike)):
        raise CaseReadError(f"expected the path of a PNG file, got {type(path).__name__}: {path!r}")
    if not Path(path).is_file():
        raise CaseReadError(f"{path}: file not found", path=path)
    try:
        with Image.open(path) as image:
            image.load()
            return image.mode, np.asarray(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise CaseReadError(f"{path}: not a readable PNG ({error})", path=path) from error


def read_grey_png(path: str | os.PathLike) -> np.ndarray:
    """The 8-bit grey pixels ``(H, W)`` uint8 of the PNG ``path`` (mode ``L``, or ``RGB`` with equal channels).

    Raises:
        CaseReadError: the file is missing or unreadable, is not 8-bit grey (16-bit, alpha, palette, 1-bit, …),
            or is RGB with channels that differ (a colour image is refused rather than silently converted).
    """
    mode, array = _open_png(path)
    if mode == "L":
        return array
    if mode == "RGB":
        if not ((array[..., 0] == array[..., 1]).all() and (array[..., 0] == array[..., 2]).all()):
            differing = int(np.count_nonzero((array[..., 0] != array[..., 1]) | (array[..., 0] != array[..., 2])))
            raise CaseReadError(
                f"{path}: RGB image with differing channels at {differing} pixels; expected grey "
                "(identical channels) ultrasound",
                path=path,
            )
        return np.ascontiguousarray(array[..., 0])
    problem = _MODE_PROBLEMS.get(mode, f"has the unsupported mode {mode!r}")
    raise CaseReadError(f"{path}: {problem}; expected an 8-bit grey (L or grey RGB) PNG", path=path)


def read_rgb_png(path: str | os.PathLike) -> np.ndarray:
    """The 8-bit pixels ``(H, W, 3)`` uint8 of the 3-channel PNG ``path`` (the FUGC 2025 image format).

    ``RGB`` is returned as it is. A grey PNG (``L``) carries the same information as the grey-valued RGB of
    the challenge, so its channel is repeated three times rather than refused. An alpha channel (``RGBA``,
    ``LA``) is dropped when it is fully opaque (255 everywhere, as image editors often save it) and refused
    otherwise, since the pixels under a transparent alpha are not what the image shows.

    Raises:
        CaseReadError: the file is missing or unreadable, has a transparent alpha channel, or is not 8-bit
            (16-bit, palette, 1-bit, float, ...).
    """
    mode, array = _open_png(path)
    if mode in ("RGBA", "LA"):
        alpha = array[..., -1]
        if not (alpha == 255).all():
            raise CaseReadError(
                f"{path}: {mode} image with a transparent alpha channel at {int(np.count_nonzero(alpha != 255))} "
                "pixels; expected an opaque 3-channel PNG",
                path=path,
            )
        array, mode = np.ascontiguousarray(array[..., :-1]), mode[:-1]
        array = array[..., 0] if mode == "L" else array
    if mode == "RGB":
        return array
    if mode == "L":
        return np.repeat(array[..., None], 3, axis=-1)
    problem = _MODE_PROBLEMS.get(mode, f"has the unsupported mode {mode!r}")
    raise CaseReadError(f"{path}: {problem}; expected an 8-bit 3-channel (RGB) or grey PNG", path=path)


def read_mask_png(path: str | os.PathLike) -> np.ndarray:
    """The {0, 1} uint8 mask ``(H, W)`` of a {0, 255} PNG, at its size on disk.

    Raises:
        CaseReadError: as :func:`read_grey_png`, or values other than 0 and 255.
    """
    array = read_grey_png(path)
    values = np.unique(array)
    if not np.isin(values, (0, 255)).all():
        raise CaseReadError(
            f"{path}: mask values {values[:10].tolist()}{' ...' if len(values) > 10 else ''} are not {{0, 255}}",
            path=path,
        )
    return (array == 255).astype(np.uint8)


def fit_mask_to_image(
    mask: np.ndarray, shape: tuple[int, int], path: str | os.PathLike, max_size_mismatch: float = 0.1
) -> np.ndarray:
    """Resize ``mask`` ``(h, w)`` to its image's ``shape`` ``(H, W)`` with nearest neighbour, if it is close.

    The nearest-neighbour rule is OpenCV's ``INTER_NEAREST`` (source index ``floor(i * src / dst)``).

    Args:
        mask: the mask pixels.
        shape: the image's ``(H, W)``.
        path: the mask file, named by the error.
        max_size_mismatch: largest accepted relative difference per axis; a mask further off belongs to another
            image and is refused.

    Raises:
        CaseReadError: the size is more than ``max_size_mismatch`` off.
    """
    shape = (int(shape[0]), int(shape[1]))
    if mask.shape == shape:
        return mask
    mismatch = max(abs(m - s) / s for m, s in zip(mask.shape, shape))
    if mismatch > max_size_mismatch:
        raise CaseReadError(
            f"{path}: mask size {mask.shape} (H, W) is {mismatch:.0%} off its image's {shape}, more than "
            f"the {max_size_mismatch:.0%} allowed",
            path=path,
        )
    rows = np.arange(shape[0]) * mask.shape[0] // shape[0]
    cols = np.arange(shape[1]) * mask.shape[1] // shape[1]
    return mask[rows[:, None], cols[None, :]]


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
        allow_missing_keys: skip missing keys instead of raising.

    Raises:
        CaseReadError: see :func:`read_grey_png`.
    """

    def __init__(self, keys: KeysCollection, dtype: DtypeLike = np.float32, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.dtype = dtype

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            d[key] = _meta_tensor(read_grey_png(path), path, self.dtype)  # type: ignore[arg-type]
        return d


class LoadMaskPNGd(MapTransform):
    """Load the {0, 255} mask PNG whose path is ``data[key]`` as a ``(1, H, W)`` {0, 1} MetaTensor.

    When ``data[reference_key]`` is already loaded (a channel-first image), the mask is resized to its size with
    nearest neighbour if it is within ``max_size_mismatch`` of it (the challenge's masks are sometimes a few
    pixels off); the size on disk is kept in the meta as ``spatial_shape``.

    Args:
        keys: data keys holding mask paths.
        reference_key: key of the image the mask must match; absent from the data = keep the mask's size.
        max_size_mismatch: largest relative size difference per axis that is resized rather than refused.
        dtype: dtype of the returned values.
        allow_missing_keys: skip missing keys instead of raising.

    Raises:
        CaseReadError: see :func:`read_mask_png` and :func:`fit_mask_to_image`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        reference_key: str | None = "image",
        max_size_mismatch: float = 0.1,
        dtype: DtypeLike = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.reference_key = reference_key
        self.max_size_mismatch = max_size_mismatch
        self.dtype = dtype

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        reference = d.get(self.reference_key) if self.reference_key is not None else None
        shape = tuple(int(s) for s in reference.shape[-2:]) if isinstance(reference, torch.Tensor) else None
        for key in self.key_iterator(d):
            path = d[key]
            mask = read_mask_png(path)  # type: ignore[arg-type]
            disk_shape = np.asarray(mask.shape)
            if shape is not None:
                mask = fit_mask_to_image(mask, shape, path, self.max_size_mismatch)  # type: ignore[arg-type]
            d[key] = _meta_tensor(mask, path, self.dtype, spatial_shape=disk_shape)
        return d


def save_png_atomic(path: str | os.PathLike, array: np.ndarray | torch.Tensor, overwrite: bool = True) -> None:
    """Write an 8-bit grey PNG atomically (temporary file beside ``path``, then ``os.replace``).

    Args:
        path: the output file; missing parent folders are created.
        array: ``(H, W)`` or ``(1, H, W)`` integer values in 0..255 (bool is written as 0/255).
        overwrite: replace an existing file; otherwise an existing file raises ``FileExistsError``.

    Raises:
        ValueError: the array is not 2D after dropping a leading channel of 1, or holds values that are not
            integers in 0..255.
    """
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"{path}: expected an (H, W) or (1, H, W) array, got shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255 or not np.array_equal(array, np.round(array))):
            raise ValueError(f"{path}: values must be integers in 0..255, got range [{array.min()}, {array.max()}]")
        array = array.astype(np.uint8)
    with atomic_path(path, overwrite=overwrite) as tmp:
        Image.fromarray(np.ascontiguousarray(array), mode="L").save(tmp, format="PNG")


class SaveGreyPNGd(MapTransform):
    """Write ``data[key]`` (``(1, H, W)`` or ``(H, W)``) as ``{output_dir}/{case}{suffix}.png``, times ``scale``.

    For the angioma submission a {0, 1} mask is written as {0, 255} under the input image's name.

    Args:
        keys: data keys to write (one file per key and case; give distinct ``suffix`` es for several keys).
        output_dir: the folder of the PNGs (created if needed).
        case_key: data key holding the case name.
        suffix: appended to the case name.
        scale: multiplies the values before rounding to uint8 (255 for {0, 1} masks, 1 for 0..255 images).
        overwrite: replace an existing file; otherwise an existing file is an error for that case.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        case_key: str = "case",
        suffix: str = "",
        scale: float = 255.0,
        overwrite: bool = False,
    ) -> None:
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.case_key = case_key
        self.suffix = suffix
        self.scale = scale
        self.overwrite = overwrite

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            array = np.clip(np.round(array.astype(np.float64) * self.scale), 0, 255).astype(np.uint8)
            save_png_atomic(self.output_dir / f"{d[self.case_key]}{self.suffix}.png", array, self.overwrite)
        return d
