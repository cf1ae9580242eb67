"""OCT cubes as the AI Challenger 2018 retinal edema challenge ships them, and the retinal bundle's prediction files.

A cube (one eye, Cirrus "MacularCube512x128") is a folder of B-scan images named by their 1-based slice number,
``1.bmp`` ... ``128.bmp`` (1024 rows x 512 columns, 8-bit grey); its label is a folder of the same names whose grey
values are 0 background, 255 REA, 191 SRF, 128 PED (see :mod:`data.ai_challenger_oct` for the folder layout).

* :func:`read_oct_cube` reads such a folder into an ``(S, H, W)`` uint8 array, slices in numeric order (``10.bmp``
  after ``9.bmp``), and rejects a broken cube with a :class:`~formats.errors.CaseReadError` naming the cube folder and
  the slice: gap in the numbering, fewer slices than expected, a slice of another size, an unreadable image, a label
  slice with a grey value that is no label code. :func:`write_oct_cube` writes a cube in that layout.
* A cube's prediction is ``<case>_seg.nii.gz`` (uint8 class indices, axes (column, row, slice)) and
  ``<case>_det.csv`` (per-slice lesion probabilities): :func:`write_oct_prediction` writes them atomically,
  :func:`read_oct_prediction` reads them back for scoring (see bundles/retinal_oct_edema_segmentation/docs/README.md).

The dictionary transforms over these functions are in :mod:`transforms.oct`.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image, UnidentifiedImageError

from formats.codes import check_codes
from formats.errors import CaseReadError
from formats.nifti import write_nifti_atomic
from utils.atomic import atomic_folder, atomic_group, write_text_atomic

__all__ = [
    "LABEL_CODES",
    "LABEL_TO_CLASS",
    "LESIONS",
    "lesion_names",
    "list_cube_slices",
    "prediction_paths",
    "read_grey_bscan",
    "read_oct_cube",
    "read_oct_prediction",
    "write_oct_cube",
    "write_oct_prediction",
]

LABEL_CODES: tuple[int, ...] = (0, 128, 191, 255)
"""Grey values of the challenge's label images: background, PED, SRF, REA."""

LABEL_TO_CLASS: dict[int, int] = {255: 1, 191: 2, 128: 3}
"""Label grey value -> class index (1 REA, 2 SRF, 3 PED), for ``MapLabelValued``."""

LESIONS: tuple[str, ...] = ("REA", "SRF", "PED")
"""Lesion names of classes 1, 2, 3 (retinal edema area, subretinal fluid, pigment epithelial detachment)."""


def lesion_names(num_classes: int) -> tuple[str, ...]:
    """Names of classes 1 .. num_classes - 1: :data:`LESIONS` for the challenge's 4 classes, else ``class_<c>``."""
    if num_classes - 1 == len(LESIONS):
        return LESIONS
    return tuple(f"class_{c}" for c in range(1, num_classes))


logger = logging.getLogger(__name__)

_NUMBERED = re.compile(r"^(\d+)$")
_MODES = ("L", "P", "RGB", "RGBA", "LA", "1")  # PIL modes that convert to 8-bit grey without loss of range


def list_cube_slices(
    folder: str | os.PathLike,
    extensions: Sequence[str] = (".bmp", ".png"),
    first_index: int = 1,
    expected_slices: int | None = None,
) -> list[Path]:
    """The slice images of a cube folder in slice order, after checking the numbering.

    Files named ``<number><extension>`` (one of ``extensions``, any case) are slices; other files (``Thumbs.db``,
    hidden files) are ignored, but a file with a slice extension and a non-numeric stem is an error.

    Raises:
        CaseReadError: the folder does not exist or holds no slice; a stem is not a number; two files give the same
            number; the numbers are not ``first_index, first_index + 1, ...`` without gap; ``expected_slices`` is given
            and the count differs.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CaseReadError(f"OCT cube {folder}: folder not found", path=folder)
    exts = {e.lower() for e in extensions}
    numbered: dict[int, Path] = {}
    for path in folder.iterdir():
        if path.name.startswith(".") or path.suffix.lower() not in exts or not path.is_file():
            continue
        match = _NUMBERED.match(path.stem)
        if match is None:
            raise CaseReadError(
                f"OCT cube {folder}: slice {path.name} is not named by its slice number (1.bmp, 2.bmp, ...)", path=path
            )
        number = int(match.group(1))
        if number in numbered:
            raise CaseReadError(
                f"OCT cube {folder}: slices {numbered[number].name} and {path.name} both give slice number {number}",
                path=path,
            )
        numbered[number] = path
    if not numbered:
        raise CaseReadError(f"OCT cube {folder}: no slice images ({', '.join(sorted(exts))}) found", path=folder)
    numbers = sorted(numbered)
    found = f"(found {len(numbers)} slices numbered {numbers[0]}..{numbers[-1]})"
    ext = numbered[numbers[0]].suffix
    if numbers[0] < first_index:
        raise CaseReadError(
            f"OCT cube {folder}: slices are numbered from {first_index}, found {numbers[0]}{ext} {found}", path=folder
        )
    missing = sorted(set(range(first_index, numbers[-1] + 1)) - set(numbers))
    if missing:
        shown = ", ".join(f"{n}{ext}" for n in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise CaseReadError(f"OCT cube {folder}: missing slice {shown} {found}", path=folder)
    if expected_slices is not None and len(numbers) != expected_slices:
        raise CaseReadError(
            f"OCT cube {folder}: {len(numbers)} slices ({numbers[0]}..{numbers[-1]}), expected {expected_slices}",
            path=folder,
        )
    return [numbered[n] for n in numbers]


_FORMATS = {".bmp": "BMP", ".png": "PNG"}
"""Slice extension -> the format its bytes must have (a JPEG named .bmp is lossy, not the scanner's B-scan)."""


def _read_grey(path: Path, colour_to_grey: bool = True) -> tuple[np.ndarray, int]:
    """One slice as an ``(H, W)`` uint8 array and its number of colour pixels (RGB channels that differ).

    Grey-valued RGB and palette images are converted to grey; RGB whose channels differ is converted to luminance
    (ITU-R 601) unless ``colour_to_grey`` is False.
    """
    try:
        with Image.open(path) as im:
            file_format, frames = im.format, getattr(im, "n_frames", 1)
            im.load()
            mode = im.mode
            rgb = np.asarray(im.convert("RGB")) if mode in _MODES and mode != "L" else None
            grey = np.asarray(im if mode == "L" else im.convert("L"), dtype=np.uint8) if mode in _MODES else None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        message = f"OCT cube {path.parent}: slice {path.name} cannot be read as an image ({e})"
        raise CaseReadError(message, path=path) from e
    expected = _FORMATS.get(path.suffix.lower())
    if expected is not None and file_format != expected:
        raise CaseReadError(
            f"OCT cube {path.parent}: slice {path.name} holds a {file_format} image, not a {expected}", path=path
        )
    if frames > 1:
        raise CaseReadError(f"OCT cube {path.parent}: slice {path.name} is animated ({frames} frames)", path=path)
    if grey is None:
        message = f"OCT cube {path.parent}: slice {path.name} has image mode {mode}, expected 8-bit grey"
        raise CaseReadError(message, path=path)
    colour = 0 if rgb is None else int(np.count_nonzero((rgb[..., 0] != rgb[..., 1]) | (rgb[..., 0] != rgb[..., 2])))
    if colour and not colour_to_grey:
        raise CaseReadError(
            f"OCT cube {path.parent}: slice {path.name} is colour (RGB channels differ at {colour} pixels); expected "
            "grey B-scans (colour_to_grey converts them to luminance instead)",
            path=path,
        )
    return grey, colour


def read_oct_cube(
    folder: str | os.PathLike,
    expected_slices: int | None = None,
    allowed_values: Sequence[int] | None = None,
    extensions: Sequence[str] = (".bmp", ".png"),
    first_index: int = 1,
    allow_fewer_slices: bool = False,
    nearest_code: bool = False,
    colour_to_grey: bool = True,
) -> np.ndarray:
    """Read a cube folder into an ``(S, H, W)`` uint8 array in slice order (see :func:`list_cube_slices`).

    Palette images and RGB with identical channels are grey; colour slices (RGB channels that differ) are
    converted to luminance with one warning per cube naming the folder, or refused when ``colour_to_grey`` is
    False. With ``allowed_values`` (label cubes: :data:`LABEL_CODES`) a slice holding another value is rejected,
    the message naming the slice and the unexpected values (:func:`formats.codes.check_codes`), unless
    ``nearest_code`` maps every value to its nearest code. A slice that is no BMP/PNG as its extension says (JPEG
    bytes) or is animated is rejected.

    Args:
        allow_fewer_slices: accept a cube with fewer slices than ``expected_slices`` (a warning names it); more
            slices are always an error.

    Raises:
        CaseReadError: any problem of :func:`list_cube_slices`, an unreadable slice, a slice whose size differs from
            the first slice's, a value outside ``allowed_values``.
    """
    paths = list_cube_slices(folder, extensions, first_index, None)
    if expected_slices is not None and len(paths) != expected_slices:
        found = f"{len(paths)} slices ({paths[0].name}..{paths[-1].name})"
        if len(paths) > expected_slices or not allow_fewer_slices:
            hint = "" if len(paths) > expected_slices else " (allow_fewer_slices accepts a shorter cube)"
            raise CaseReadError(f"OCT cube {folder}: {found}, expected {expected_slices}{hint}", path=folder)
        logger.warning("OCT cube %s: %s, fewer than the expected %d; accepted", folder, found, expected_slices)
    first, colour = _read_grey(paths[0], colour_to_grey)
    cube = np.empty((len(paths),) + first.shape, dtype=np.uint8)
    colour_slices = int(colour > 0)
    for i, path in enumerate(paths):
        if i:
            img, colour = _read_grey(path, colour_to_grey)
            colour_slices += colour > 0
        else:
            img = first
        if img.shape != first.shape:
            raise CaseReadError(
                f"OCT cube {path.parent}: slice {path.name} is {img.shape[0]}x{img.shape[1]} (HxW) but slice "
                f"{paths[0].name} is {first.shape[0]}x{first.shape[1]}",
                path=path,
            )
        if allowed_values is not None:
            what = f"OCT cube {path.parent}: label slice {path.name} has grey values"
            img = check_codes(img, allowed_values, path, what, nearest_code)
        cube[i] = img
    if colour_slices:
        logger.warning("OCT cube %s: %d colour slice(s) converted to grey luminance (ITU-R 601)", folder, colour_slices)
    return cube


def write_oct_cube(folder: str | os.PathLike, cube: np.ndarray, ext: str = ".bmp", overwrite: bool = False) -> Path:
    """Write an ``(S, H, W)`` uint8 cube as the challenge stores it: ``folder/1<ext> ... S<ext>``, 8-bit grey.

    The slices are written into a temporary folder beside ``folder``, which is then renamed to ``folder``: a reader
    never sees a cube missing its last slices (which would read as a shorter cube), and a failed write leaves none.

    Raises:
        FileExistsError: ``folder`` exists and ``overwrite`` is False.
        ValueError: ``cube`` is not an ``(S, H, W)`` uint8 array.
    """
    folder = Path(folder)
    cube = np.asarray(cube)
    if cube.ndim != 3 or cube.dtype != np.uint8:
        raise ValueError(f"expected an (S, H, W) uint8 cube, got {cube.dtype} {cube.shape}")
    with atomic_folder(folder, overwrite=overwrite) as staging:
        for n, image in enumerate(cube, start=1):
            Image.fromarray(image).save(staging / f"{n}{ext}")
    return folder


def read_grey_bscan(path: str | os.PathLike) -> np.ndarray:
    """A separate B-scan file (PNG, BMP, ...) as ``(H, W)`` uint8 grey; RGB-encoded grey with ITU-R 601 luma.

    A 16-bit or 32-bit image is rescaled by its real range, ``round(255 * (v - min) / (max - min))`` (a constant
    image gives 0), with a warning naming the file: converting it to 8 bits by PIL would clip every value above 255.
    The first frame of a multi-frame file would silently be a part of the data, so such a file is refused.

    Raises:
        CaseReadError: the file cannot be read as an image, or holds several frames.
    """
    try:
        with Image.open(path) as image:
            frames, mode = getattr(image, "n_frames", 1), image.mode
            image.load()
            if mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                values = np.asarray(image, dtype=np.float64)
            else:
                values = None
                grey = np.asarray(image.convert("L"))
    except (UnidentifiedImageError, OSError) as error:
        raise CaseReadError(f"{path}: not a readable image ({error})", path=path) from error
    if frames > 1:
        raise CaseReadError(f"{path}: holds {frames} frames; expected a single B-scan", path=path)
    if values is None:
        return grey
    low, high = float(values.min()), float(values.max())
    logger.warning("%s: B-scan of mode %s (over 8 bits) rescaled from [%g, %g] to 0..255", path, mode, low, high)
    scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return np.round(scaled).astype(np.uint8)


def prediction_paths(folder: str | os.PathLike, case: str) -> tuple[Path, Path]:
    """Where :func:`write_oct_prediction` writes a cube: ``(<case>_seg.nii.gz, <case>_det.csv)`` in ``folder``."""
    folder = Path(folder)
    return folder / f"{case}_seg.nii.gz", folder / f"{case}_det.csv"


def write_oct_prediction(
    folder: str | os.PathLike,
    case: str,
    labels: np.ndarray,
    detection: np.ndarray,
    first_slice: int = 1,
    overwrite: bool = False,
) -> None:
    """Write a cube's prediction to :func:`prediction_paths`: both files, atomically, or neither.

    Args:
        folder: the output folder (created if needed).
        case: the cube's id.
        labels: ``(S, H, W)`` uint8 class indices, written as NIfTI with axes (column, row, slice) = (x, y, z),
            MONAI's order for 2-D images read with ``reverse_indexing``: ``volume[:, :, k].T`` is the B-scan of
            slice file ``k + 1``; the affine is the identity (voxel units).
        detection: ``(S, K)`` lesion probabilities, one CSV row per B-scan: ``slice`` (the file number) and one
            column per lesion (:func:`lesion_names`).
        first_slice: number of the first slice file.
        overwrite: replace existing files; otherwise an existing file raises ``FileExistsError`` (and neither
            file is written: an existing ``_det.csv`` beside a new ``_seg.nii.gz`` would pair two runs).
    """
    seg_path, det_path = prediction_paths(folder, case)
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["slice", *lesion_names(detection.shape[1] + 1)])
    for s, row in enumerate(detection):
        writer.writerow([s + first_slice, *(f"{p:.6f}" for p in row)])
    with atomic_group():  # both files or neither
        write_nifti_atomic(seg_path, np.ascontiguousarray(labels.transpose(2, 1, 0)), overwrite=overwrite)
        write_text_atomic(det_path, table.getvalue(), overwrite=overwrite)


def read_oct_prediction(folder: str | os.PathLike, case: str) -> tuple[np.ndarray, np.ndarray]:
    """Read what :func:`write_oct_prediction` wrote for ``case``: ``(labels (S, H, W) uint8, det (S, K) float32)``.

    Raises:
        CaseReadError: a file is missing or unreadable, or the two disagree on the number of slices.
    """
    seg_path, det_path = prediction_paths(folder, case)
    for path in (seg_path, det_path):
        if not path.is_file():
            raise CaseReadError(f"cube {case}: prediction {path} not found", path=path)
    try:
        volume = np.asarray(nib.load(seg_path).dataobj)
    except Exception as error:  # nibabel raises several types for truncated or foreign files
        raise CaseReadError(f"cube {case}: cannot read {seg_path} ({error})", path=seg_path) from error
    if volume.ndim != 3:
        raise CaseReadError(f"cube {case}: {seg_path} is {volume.ndim}-D, expected (x, y, slice)", path=seg_path)
    labels = np.ascontiguousarray(volume.transpose(2, 1, 0)).astype(np.uint8)
    with open(det_path, newline="") as f:
        rows = list(csv.reader(f))
    try:
        det = np.asarray([[float(v) for v in row[1:]] for row in rows[1:]], dtype=np.float32)
    except (ValueError, IndexError) as error:
        message = f"cube {case}: {det_path} is not a table of probabilities ({error})"
        raise CaseReadError(message, path=det_path) from error
    if det.ndim != 2 or det.shape[0] != labels.shape[0]:
        raise CaseReadError(
            f"cube {case}: {det_path} has {det.shape[0] if det.ndim else 0} slice rows, "
            f"{seg_path} {labels.shape[0]} slices",
            path=det_path,
        )
    return labels, det
