"""OCT cubes as the AI Challenger 2018 retinal edema challenge ships them, and the 2.5D slice stacking.

A cube (one eye, Cirrus "MacularCube512x128") is a folder of B-scan images named by their 1-based slice number,
``1.bmp`` ... ``128.bmp`` (1024 rows x 512 columns, 8-bit grey); its label is a folder of the same names whose grey
values are 0 background, 255 REA, 191 SRF, 128 PED (see :mod:`data.ai_challenger_oct` for the folder layout).

* :class:`LoadOCTCubed` reads such a folder into an ``(S, H, W)`` uint8 array, slices in numeric order (``10.bmp``
  after ``9.bmp``), and rejects a broken cube with a :class:`~formats.errors.CaseReadError` naming the cube folder and
  the slice: gap in the numbering, fewer slices than expected, a slice of another size, an unreadable image, a label
  slice with a grey value that is no label code. The label codes are then mapped to class indices with MONAI's
  ``MapLabelValued`` (``orig_labels=[255, 191, 128]``, ``target_labels=[1, 2, 3]``, ``dtype="uint8"``).
* :class:`SaveOCTPredictiond` writes what a cube's prediction is (the packed probabilities of
  :mod:`networks.unet_plus_plus`): the label volume as NIfTI and the per-slice lesion probabilities as CSV;
  :func:`read_oct_prediction` reads them back for scoring.
* :class:`transforms.utility.StackNeighbourSlicesd` builds the 2.5D input ON THE FLY: for slice i the channels
  are slices i-1, i, i+1 of the cube, edges replicated (the reference writes these stacks to disk as "trans3channel" PNGs beforehand). Given
  a slice index it returns ``(3, H, W)`` (training: one item per (cube, slice), see
  :class:`data.ai_challenger_oct.OCTSliceDataset`); without one it stacks the whole cube to ``(3, S, H, W)``, which
  :class:`monai.inferers.SliceInferer` (``spatial_dim=0``) runs through a 2D network slice by slice.

Keeping the cached cubes in uint8 (70 training cubes: 9.4 GB with labels, 4x that in float32) and converting only
the stacked slice is what makes a ``CacheDataset`` of whole cubes affordable. The rest of the reference pipeline is
MONAI: ``ScaleIntensityRanged`` (0..255 -> 0..1), ``NormalizeIntensityd(subtrahend=0.1437, divisor=0.0979)`` (the
reference's ``info.json``) and, for training only, ``RandFlipd(prob=0.5, spatial_axis=1)`` (horizontal flip).
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_numpy, ensure_tuple
from PIL import Image, UnidentifiedImageError

from formats.errors import CaseReadError
from transforms.writers import write_nifti_atomic
from utils.atomic import write_text_atomic

__all__ = [
    "LABEL_CODES",
    "LABEL_TO_CLASS",
    "LESIONS",
    "LoadOCTCubed",
    "SaveOCTPredictiond",
    "lesion_names",
    "list_cube_slices",
    "prediction_paths",
    "read_oct_cube",
    "read_oct_prediction",
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


def _read_grey(path: Path) -> np.ndarray:
    """One slice as an ``(H, W)`` uint8 array; colour and palette images are converted to grey."""
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            grey = np.asarray(im if mode == "L" else im.convert("L"), dtype=np.uint8) if mode in _MODES else None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        message = f"OCT cube {path.parent}: slice {path.name} cannot be read as an image ({e})"
        raise CaseReadError(message, path=path) from e
    if grey is None:
        message = f"OCT cube {path.parent}: slice {path.name} has image mode {mode}, expected 8-bit grey"
        raise CaseReadError(message, path=path)
    return grey


def read_oct_cube(
    folder: str | os.PathLike,
    expected_slices: int | None = None,
    allowed_values: Sequence[int] | None = None,
    extensions: Sequence[str] = (".bmp", ".png"),
    first_index: int = 1,
) -> np.ndarray:
    """Read a cube folder into an ``(S, H, W)`` uint8 array in slice order (see :func:`list_cube_slices`).

    Colour or palette images are converted to grey. With ``allowed_values`` (label cubes: :data:`LABEL_CODES`) a
    slice holding another value is rejected, the message naming the slice and the unexpected values.

    Raises:
        CaseReadError: any problem of :func:`list_cube_slices`, an unreadable slice, a slice whose size differs from
            the first slice's, a value outside ``allowed_values``.
    """
    paths = list_cube_slices(folder, extensions, first_index, expected_slices)
    allowed = None if allowed_values is None else np.asarray(sorted(allowed_values))
    first = _read_grey(paths[0])
    cube = np.empty((len(paths),) + first.shape, dtype=np.uint8)
    for i, path in enumerate(paths):
        img = first if i == 0 else _read_grey(path)
        if img.shape != first.shape:
            raise CaseReadError(
                f"OCT cube {path.parent}: slice {path.name} is {img.shape[0]}x{img.shape[1]} (HxW) but slice "
                f"{paths[0].name} is {first.shape[0]}x{first.shape[1]}",
                path=path,
            )
        if allowed is not None:
            values = np.unique(img)
            unexpected = values[~np.isin(values, allowed)]
            if unexpected.size:
                shown = ", ".join(str(v) for v in unexpected[:10].tolist())
                raise CaseReadError(
                    f"OCT cube {path.parent}: label slice {path.name} has grey values {shown} that are no label code "
                    f"(allowed {allowed.tolist()})",
                    path=path,
                )
        cube[i] = img
    return cube


class LoadOCTCubed(MapTransform):
    """Replace the cube folder paths in ``data[key]`` by ``(S, H, W)`` uint8 arrays (:func:`read_oct_cube`).

    Args:
        keys: keys holding cube folders (image and label).
        label_keys: those of ``keys`` whose slices must only hold ``label_values``.
        label_values: grey values allowed in label slices (default: the challenge's codes 0, 128, 191, 255).
        expected_slices: if given, every cube must have exactly this many slices (128 for the challenge).
        extensions: file extensions of slice images.
        first_index: number of the first slice (the challenge numbers from 1).
        allow_missing_keys: skip missing keys instead of raising.

    After loading, all loaded keys must have the same shape (an image cube and its label cube slice for slice);
    otherwise a :class:`~formats.errors.CaseReadError` names both folders.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_keys: KeysCollection = (),
        label_values: Sequence[int] = LABEL_CODES,
        expected_slices: int | None = None,
        extensions: Sequence[str] = (".bmp", ".png"),
        first_index: int = 1,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_keys = set(ensure_tuple(label_keys))
        unknown = self.label_keys - set(self.keys)
        if unknown:
            raise ValueError(f"label_keys {sorted(map(str, unknown))} are not among keys {list(self.keys)}")
        self.label_values = tuple(int(v) for v in label_values)
        self.expected_slices = expected_slices
        self.extensions = tuple(extensions)
        self.first_index = first_index

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        loaded: dict[Hashable, str] = {}
        for key in self.key_iterator(d):
            folder = str(d[key])
            d[key] = read_oct_cube(
                folder,
                expected_slices=self.expected_slices,
                allowed_values=self.label_values if key in self.label_keys else None,
                extensions=self.extensions,
                first_index=self.first_index,
            )
            loaded[key] = folder
        shapes = {key: d[key].shape for key in loaded}  # type: ignore[attr-defined]
        if len(set(shapes.values())) > 1:
            detail = "; ".join(f"'{k}' {loaded[k]} is {s[0]} slices of {s[1]}x{s[2]}" for k, s in shapes.items())
            raise CaseReadError(f"OCT cube folders do not match: {detail}", path=next(iter(loaded.values())))
        return d


def prediction_paths(folder: str | os.PathLike, case: str) -> tuple[Path, Path]:
    """Where :class:`SaveOCTPredictiond` writes a cube: ``(<case>_seg.nii.gz, <case>_det.csv)`` in ``folder``."""
    folder = Path(folder)
    return folder / f"{case}_seg.nii.gz", folder / f"{case}_det.csv"


class SaveOCTPredictiond(Transform):
    """Write a cube's prediction: the label volume as NIfTI and per-slice lesion probabilities as CSV.

    ``data[key]`` holds packed probabilities ``(G * (C + K), S, H, W)`` of one cube (``G`` groups of ``C``
    segmentation and ``K`` detection channels, e.g. from :class:`networks.ensemble.ProbabilityEnsemble` with
    :func:`networks.unet_plus_plus.seg_det_probabilities`; with ``return_members`` the fusion and then each member).
    For each group:

    * ``<case>_seg.nii.gz``: uint8 class indices (0 background, 1 REA, 2 SRF, 3 PED), the argmax of the
      segmentation channels. Axes are (column, row, slice) = (x, y, z), MONAI's order for 2-D images read with
      ``reverse_indexing``: ``volume[:, :, k].T`` is the B-scan of slice file ``k + 1``; the affine is the identity
      (voxel units), slices in their file order.
    * ``<case>_det.csv``: one row per B-scan, ``slice`` (the file number, from 1) and the probability of each
      lesion (the detection head's sigmoid).

    Args:
        output_dir: folder of the outputs; with ``variants`` one sub-folder per group.
        num_classes: segmentation channels per group (background included).
        variants: names of the channel groups (e.g. ``["fusion", "unet_plus_plus", "unet"]``); None: one group,
            written straight into ``output_dir``.
        key: data key of the probabilities.
        case_key: data key of the cube's id (names the files).
        first_slice: number of the first slice in the CSV (the challenge numbers its files from 1).
        overwrite: replace existing outputs; otherwise an existing file is an error for that cube.

    Files are written atomically (:mod:`utils.atomic`): a reader never sees half a volume.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        num_classes: int = 4,
        variants: Sequence[str] | None = None,
        key: str = "pred",
        case_key: str = "case",
        first_slice: int = 1,
        overwrite: bool = False,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.num_classes = num_classes
        self.variants = None if variants is None else [str(v) for v in variants]
        self.key = key
        self.case_key = case_key
        self.first_slice = first_slice
        self.overwrite = overwrite

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        probs = convert_to_numpy(d[self.key])
        case = str(d[self.case_key])
        groups = 1 if self.variants is None else len(self.variants)
        if probs.ndim != 4 or probs.shape[0] % groups or probs.shape[0] // groups <= self.num_classes:
            raise ValueError(
                f"cube {case}: expected {groups} group(s) of {self.num_classes} + K probability channels "
                f"(channels, S, H, W), got shape {probs.shape}"
            )
        width = probs.shape[0] // groups
        for g in range(groups):
            group = probs[g * width : (g + 1) * width]
            folder = self.output_dir if self.variants is None else self.output_dir / self.variants[g]
            self._write(folder, case, group)
        return d

    def _write(self, folder: Path, case: str, probs: np.ndarray) -> None:
        labels = np.argmax(probs[: self.num_classes], axis=0).astype(np.uint8)  # (S, H, W)
        detection = probs[self.num_classes :, :, 0, 0].T  # (S, K): constant over H, W
        names = lesion_names(detection.shape[1] + 1)
        seg_path, det_path = prediction_paths(folder, case)
        table = io.StringIO()
        writer = csv.writer(table, lineterminator="\n")
        writer.writerow(["slice", *names])
        for s, row in enumerate(detection):
            writer.writerow([s + self.first_slice, *(f"{p:.6f}" for p in row)])
        write_nifti_atomic(seg_path, np.ascontiguousarray(labels.transpose(2, 1, 0)), overwrite=self.overwrite)
        write_text_atomic(det_path, table.getvalue(), overwrite=self.overwrite)


def read_oct_prediction(folder: str | os.PathLike, case: str) -> tuple[np.ndarray, np.ndarray]:
    """Read what :class:`SaveOCTPredictiond` wrote for ``case``: ``(labels (S, H, W) uint8, det (S, K) float32)``.

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
