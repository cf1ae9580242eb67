"""8-bit PNGs of 2D ultrasound challenges (CCF BDCI 2021 angioma, FUGC 2025 cervix): checked reading, atomic writing.

The angioma images are RGB PNGs whose three channels are identical, the masks 8-bit ``L`` PNGs with values
{0, 255} that are sometimes a few pixels off the image size (the rank-1 solution's data, see
bundles/angioma_ultrasound_segmentation/docs/README.md). :func:`read_grey_png` returns the grey pixels,
:func:`read_mask_png` a {0, 1} mask and :func:`fit_mask_to_image` resizes a slightly-off mask to its image with
nearest neighbour, as the challenge's loader does; :func:`read_rgb_png` reads the 3-channel images of FUGC 2025.
Anything else (a missing or corrupt file, 16-bit, alpha, palette,
RGB with differing channels, mask values other than 0/255, a mask far from its image's size) raises
:class:`formats.errors.CaseReadError` naming the file, so one bad case among hundreds is found at once.
Unlike MONAI's ``PILReader`` (which returns ``(W, H)`` unless told otherwise), arrays here are ``(H, W)``.
The dictionary transforms over these functions are in :mod:`transforms.png`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from monai.utils import convert_to_numpy
from PIL import Image

from formats.errors import CaseReadError
from utils.atomic import atomic_path

__all__ = [
    "fit_mask_to_image",
    "read_grey_png",
    "read_mask_png",
    "read_rgb_png",
    "save_png_atomic",
    "save_rgb_png_atomic",
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
    array = convert_to_numpy(array)
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


def save_rgb_png_atomic(path: str | os.PathLike, array: np.ndarray, overwrite: bool = True) -> None:
    """Write an ``(H, W, 3)`` uint8 picture as an RGB PNG atomically (see :func:`save_png_atomic`).

    Raises:
        ValueError: the array is not ``(H, W, 3)`` uint8.
    """
    array = np.asarray(array)
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"{path}: expected an (H, W, 3) uint8 picture, got {array.dtype} {array.shape}")
    with atomic_path(path, overwrite=overwrite) as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")
