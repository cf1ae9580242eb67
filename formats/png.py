"""8-bit PNGs of 2D ultrasound challenges (CCF BDCI 2021 angioma, FUGC 2025 cervix): checked reading, atomic writing.

The angioma images are RGB PNGs whose three channels are identical, the masks 8-bit ``L`` PNGs with values
{0, 255} that are sometimes a few pixels off the image size (the rank-1 solution's data, see
bundles/angioma_ultrasound_segmentation/docs/README.md). :func:`read_grey_png` returns the grey pixels,
:func:`read_mask_png` a {0, 1} mask and :func:`fit_mask_to_image` resizes a slightly-off mask to its image with
nearest neighbour, as the challenge's loader does; :func:`read_rgb_png` reads the 3-channel images of FUGC 2025.
Real inputs users have are accepted: a 1-bit mask is a binary mask; a grey image whose RGB channels differ at some
pixels (annotation marks, a colour scanner UI) is converted to luminance (ITU-R 601, PIL's ``convert("L")``) with a
warning naming the file, or refused when ``colour_to_grey`` is False; mask values that are almost a code are
refused with a message naming the ``nearest_code`` option that maps them (:func:`formats.codes.check_codes`).
Anything else (a missing or corrupt file, another format named ``.png`` such as JPEG bytes, an animated PNG,
16-bit, alpha, palette, mask values other than 0/255, a mask far from its image's size) raises
:class:`formats.errors.CaseReadError` naming the file, so one bad case among hundreds is found at once.
Unlike MONAI's ``PILReader`` (which returns ``(W, H)`` unless told otherwise), arrays here are ``(H, W)``.
The dictionary transforms over these functions are in :mod:`transforms.png`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from monai.utils import convert_to_numpy
from PIL import Image

from formats.codes import check_codes
from formats.errors import CaseReadError
from utils.atomic import atomic_path

__all__ = [
    "fit_mask_to_image",
    "grey_from_rgb",
    "read_grey_png",
    "read_mask_png",
    "read_rgb_png",
    "save_png_atomic",
    "save_rgb_png_atomic",
]

logger = logging.getLogger(__name__)

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
    """The PIL mode and pixels of the PNG file ``path``.

    Raises:
        CaseReadError: the file is missing or unreadable, holds another format (JPEG bytes named ``.png``), or is an
            animated PNG (its first frame is not the whole image).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise CaseReadError(f"expected the path of a PNG file, got {type(path).__name__}: {path!r}")
    if not Path(path).is_file():
        raise CaseReadError(f"{path}: file not found", path=path)
    try:
        with Image.open(path) as image:
            file_format, frames = image.format, getattr(image, "n_frames", 1)
            image.load()
            mode, array = image.mode, np.asarray(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise CaseReadError(f"{path}: not a readable PNG ({error})", path=path) from error
    if file_format != "PNG":
        raise CaseReadError(
            f"{path}: holds a {file_format} image, not a PNG; convert it to PNG (a lossy format named .png is "
            "not read as one)",
            path=path,
        )
    if frames > 1:
        raise CaseReadError(f"{path}: animated PNG with {frames} frames; expected a single image", path=path)
    return mode, array


def grey_from_rgb(array: np.ndarray, path: str | os.PathLike, colour_to_grey: bool = True) -> np.ndarray:
    """The grey ``(H, W)`` uint8 pixels of an ``(H, W, 3)`` RGB image meant to be grey.

    Identical channels give the channel itself. Channels that differ somewhere (annotation marks, a colour UI in a
    grey ultrasound screenshot) give the ITU-R 601 luminance (PIL's ``convert("L")``) and a warning naming the file
    and the number of colour pixels, or an error when ``colour_to_grey`` is False.

    Raises:
        CaseReadError: the channels differ and ``colour_to_grey`` is False.
    """
    colour = (array[..., 0] != array[..., 1]) | (array[..., 0] != array[..., 2])
    if not colour.any():
        return np.ascontiguousarray(array[..., 0])
    differing = int(np.count_nonzero(colour))
    if not colour_to_grey:
        raise CaseReadError(
            f"{path}: RGB image with differing channels at {differing} pixels; expected grey (identical channels) "
            "ultrasound (colour_to_grey converts it to luminance instead)",
            path=path,
        )
    logger.warning("%s: RGB channels differ at %d pixels; converted to grey luminance (ITU-R 601)", path, differing)
    return np.asarray(Image.fromarray(np.ascontiguousarray(array)).convert("L"))


def read_grey_png(path: str | os.PathLike, colour_to_grey: bool = True) -> np.ndarray:
    """The 8-bit grey pixels ``(H, W)`` uint8 of the PNG ``path`` (mode ``L``, or ``RGB`` meant to be grey).

    RGB with identical channels is the grey image; RGB whose channels differ somewhere is converted to luminance
    with a warning, or refused when ``colour_to_grey`` is False (:func:`grey_from_rgb`).

    Raises:
        CaseReadError: the file is missing or unreadable, is no PNG or an animated one, is not 8-bit grey (16-bit,
            alpha, palette, 1-bit, …), or is colour and ``colour_to_grey`` is False.
    """
    mode, array = _open_png(path)
    return _grey(mode, array, path, colour_to_grey)


def _grey(mode: str, array: np.ndarray, path: str | os.PathLike, colour_to_grey: bool) -> np.ndarray:
    if mode == "L":
        return array
    if mode == "RGB":
        return grey_from_rgb(array, path, colour_to_grey)
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


def read_mask_png(path: str | os.PathLike, nearest_code: bool = False) -> np.ndarray:
    """The {0, 1} uint8 mask ``(H, W)`` of a {0, 255} PNG (or a 1-bit PNG, a binary mask as it is), at its size on disk.

    Args:
        path: the mask file.
        nearest_code: map every value to the nearest of 0 and 255 (anti-aliased edges: 253, 254 beside 255) instead
            of refusing values that are no code.

    Raises:
        CaseReadError: as :func:`read_grey_png` (a colour mask is refused), or values other than 0 and 255 without
            ``nearest_code`` (:func:`formats.codes.check_codes`).
    """
    mode, array = _open_png(path)
    if mode == "1":
        return array.astype(np.uint8)
    grey = _grey(mode, array, path, colour_to_grey=False)
    return (check_codes(grey, (0, 255), path, f"{path}: mask has values", nearest_code) == 255).astype(np.uint8)


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
