"""Reading a CT DICOM series (one folder, one series) and a NIfTI label map into the same voxel grid.

Conventions, shared by :func:`read_dicom_series` and :func:`read_label_map` (and the same as MONAI's
``ITKReader`` / ``LoadImage(reader="ITKReader")`` so that arrays and affines are interchangeable with it):

* The volume is indexed ``volume[i, j, k]``: ``i`` runs along an image row (increasing column number),
  ``j`` down the image (increasing row number), ``k`` along the slice normal (row direction x column
  direction of ImageOrientationPatient) in increasing ImagePositionPatient order, i.e. for an ordinary axial
  CT from feet to head. The order of the files and their names play no part.
* The affine maps voxel indices ``(i, j, k, 1)`` to **RAS** world millimetres (DICOM's LPS with x and y negated,
  MONAI's default ``affine_lps_to_ras=True``).
* Values are Hounsfield units, ``stored * RescaleSlope + RescaleIntercept`` per slice (GDCM applies it while
  decoding). ``int16`` when every slice has an integral slope and intercept, ``float32`` otherwise.
* ``MONOCHROME1`` series (bright = low value) are mirrored over the series' stored range before rescaling so that
  bone is bright as in ``MONOCHROME2`` (:func:`_monochrome1_to_hu`); the reference solution
  (selimsef/rsna_cervical_fracture, ``datatools/converter.py``) inverts such slices too, but per slice, which
  makes the slices of one study inconsistent.

MONAI's ``ITKReader`` already sorts a series and rescales it, but it silently takes the first of several series
in a folder and checks neither gaps, slice sizes nor the photometric interpretation, and an unreadable file
fails without its name. This module therefore uses ITK's GDCM reader directly (every transfer syntax GDCM
decodes, JPEG 2000 included) and raises :class:`~formats.errors.CaseReadError` naming the folder or file for
every unusable input.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, io_orientation, ornt_transform

from formats.errors import CaseReadError

__all__ = ["LPS_TO_RAS", "read_dicom_series", "read_label_map", "reorient_to_grid"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

_SERIES_UID, _STUDY_UID, _INSTANCE = "0020|000e", "0020|000d", "0020|0013"
_POSITION, _ORIENTATION, _PIXEL_SPACING = "0020|0032", "0020|0037", "0028|0030"
_PHOTOMETRIC, _INTERCEPT, _SLOPE = "0028|0004", "0028|1052", "0028|1053"


def _itk():
    import itk  # deferred: importing itk costs seconds, and only the readers need it

    return itk


def _numbers(path: Path, header: dict[str, str], tag: str, count: int, name: str) -> np.ndarray:
    """The ``count`` backslash-separated numbers of ``tag``; CaseReadError naming the file when absent or bad."""
    text = header.get(tag, "").strip()
    try:
        values = np.array([float(v) for v in text.split("\\")], dtype=np.float64)
    except ValueError:
        values = np.array([])
    if values.size != count or not np.isfinite(values).all():
        raise CaseReadError(f"{path}: {name} ({tag}) should hold {count} numbers, got {text!r}", path=path, key=name)
    return values


def _read_header(path: Path) -> dict[str, Any]:
    """The tags of one slice that sorting and checking need."""
    itk = _itk()
    io = itk.GDCMImageIO.New()
    try:
        if not io.CanReadFile(str(path)):
            raise RuntimeError("GDCM does not recognise it as DICOM")
        io.SetFileName(str(path))
        io.ReadImageInformation()
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1]
        raise CaseReadError(f"{path}: not a readable DICOM file ({reason})", path=path) from error
    dictionary = io.GetMetaDataDictionary()
    tags = (_SERIES_UID, _STUDY_UID, _INSTANCE, _POSITION, _ORIENTATION, _PIXEL_SPACING, _PHOTOMETRIC)
    header = {tag: str(dictionary[tag]) for tag in tags if dictionary.HasKey(tag)}
    orientation = _numbers(path, header, _ORIENTATION, 6, "ImageOrientationPatient")
    row_dir, col_dir = orientation[:3], orientation[3:]
    return {
        "path": path,
        "series_uid": header.get(_SERIES_UID, "").strip(" \x00"),
        "study_uid": header.get(_STUDY_UID, "").strip(" \x00"),
        "instance": header.get(_INSTANCE, "").strip(),
        "position": _numbers(path, header, _POSITION, 3, "ImagePositionPatient"),
        "row_dir": row_dir,
        "col_dir": col_dir,
        # PixelSpacing is (spacing between rows, spacing between columns) = (along j, along i)
        "spacing": _numbers(path, header, _PIXEL_SPACING, 2, "PixelSpacing")[::-1],
        "size": (int(io.GetDimensions(0)), int(io.GetDimensions(1))),
        "photometric": header.get(_PHOTOMETRIC, "MONOCHROME2").strip(" \x00").upper(),
        "slope": float(io.GetRescaleSlope()),
        "intercept": float(io.GetRescaleIntercept()),
    }


def _check_one_series(folder: Path, headers: Sequence[dict[str, Any]]) -> None:
    series: dict[str, list[Path]] = {}
    for h in headers:
        series.setdefault(h["series_uid"], []).append(h["path"])
    if len(series) > 1:
        found = ", ".join(f"{uid or '<none>'} ({len(paths)} files, e.g. {paths[0].name})" for uid, paths in series.items())
        raise CaseReadError(f"{folder}: {len(series)} series in one folder: {found}", path=folder, key="SeriesInstanceUID")
    sizes = [h["size"] for h in headers]
    common = max(set(sizes), key=sizes.count)
    for h in headers:
        if h["size"] != common:
            raise CaseReadError(
                f"{h['path']}: slice size {h['size']} (columns, rows) differs from the series' {common}",
                path=h["path"],
                key="Rows/Columns",
            )
    first = headers[0]
    for h in headers[1:]:
        if not (np.allclose(h["row_dir"], first["row_dir"], atol=1e-3) and np.allclose(h["col_dir"], first["col_dir"], atol=1e-3)):
            raise CaseReadError(
                f"{h['path']}: ImageOrientationPatient differs from {first['path'].name}", path=h["path"], key="ImageOrientationPatient"
            )
        if not np.allclose(h["spacing"], first["spacing"], rtol=1e-3):
            raise CaseReadError(f"{h['path']}: PixelSpacing differs from {first['path'].name}", path=h["path"], key="PixelSpacing")
    photometric = {h["photometric"] for h in headers}
    if not photometric <= {"MONOCHROME1", "MONOCHROME2"} or len(photometric) > 1:
        raise CaseReadError(
            f"{folder}: expected one grey PhotometricInterpretation (MONOCHROME1 or MONOCHROME2), got {sorted(photometric)}",
            path=folder,
            key="PhotometricInterpretation",
        )


def _sort_and_check_gaps(folder: Path, headers: list[dict[str, Any]], max_gap: float) -> tuple[list[dict], np.ndarray]:
    """Headers in increasing position along the slice normal, and those positions (mm)."""
    normal = np.cross(headers[0]["row_dir"], headers[0]["col_dir"])
    positions = np.array([h["position"] @ normal for h in headers])
    order = np.argsort(positions, kind="stable")
    headers, positions = [headers[i] for i in order], positions[order]
    if len(headers) < 2:
        return headers, positions
    steps = np.diff(positions)
    for i in np.flatnonzero(steps < 1e-3):
        raise CaseReadError(
            f"{folder}: {headers[i]['path'].name} and {headers[i + 1]['path'].name} lie at the same position "
            f"{positions[i]:.3f} mm (duplicate slice)",
            path=headers[i + 1]["path"],
            key="ImagePositionPatient",
        )
    median = float(np.median(steps))
    for i in np.flatnonzero(steps > max_gap * median):
        raise CaseReadError(
            f"{folder}: missing slice(s) between {headers[i]['path'].name} ({positions[i]:.2f} mm) and "
            f"{headers[i + 1]['path'].name} ({positions[i + 1]:.2f} mm): gap {steps[i]:.2f} mm, median spacing "
            f"{median:.2f} mm",
            path=folder,
            key="ImagePositionPatient",
        )
    return headers, positions


def _read_pixels(header: dict[str, Any], integral: bool) -> np.ndarray:
    """One slice as ``(rows, columns)`` Hounsfield units."""
    itk = _itk()
    path = header["path"]
    try:
        image = itk.imread(str(path), itk.SS if integral else itk.F, imageio=itk.GDCMImageIO.New())
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1]
        raise CaseReadError(f"{path}: pixel data cannot be decoded ({reason})", path=path) from error
    pixels = itk.array_from_image(image)
    columns, rows = header["size"]
    if pixels.size != rows * columns:
        raise CaseReadError(f"{path}: decoded {pixels.shape} pixels, header says {rows} x {columns}", path=path)
    return pixels.reshape(rows, columns)


def _monochrome1_to_hu(volume: np.ndarray, headers: Sequence[dict[str, Any]]) -> np.ndarray:
    """Bone-bright HU of a MONOCHROME1 series as decoded by GDCM (axes (i, j, k)).

    GDCM (ITK 5.4) complements MONOCHROME1 stored values (``-1 - stored``) before rescaling; that is undone per
    slice to get ``stored * slope + intercept``, which is then mirrored over the series' range (the values of an
    inverted series are stored high-for-air).
    """
    slope = np.array([h["slope"] for h in headers])
    intercept = np.array([h["intercept"] for h in headers])
    plain = (2 * intercept - slope) - volume.astype(np.float64)
    mirrored = plain.max() + plain.min() - plain
    return mirrored.astype(volume.dtype)


def read_dicom_series(
    folder: str | os.PathLike, pattern: str = "*.dcm", max_gap: float = 1.5
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read the one DICOM series of ``folder`` as a Hounsfield-unit volume (conventions: module docstring).

    Args:
        folder: the series folder (RSNA: ``train_images/<StudyInstanceUID>/``).
        pattern: glob of the slice files in ``folder`` (the RSNA files are ``<n>.dcm``).
        max_gap: a step between neighbouring slice positions larger than ``max_gap`` times the median step
            is a missing slice.

    Returns:
        ``(volume, affine, metadata)``: ``volume`` ``(columns, rows, slices)`` int16 or float32 HU; ``affine``
        4x4 RAS; ``metadata`` with ``files`` (in volume order), ``study_uid``, ``series_uid``, ``spacing``
        ``(di, dj, dk)`` mm, ``slice_positions`` (mm along the normal), ``photometric``, ``instance_numbers_decrease``
        (True when InstanceNumber decreases along ``k``: file 1 is the top slice, as in most RSNA studies) and ``space`` "RAS".

    Raises:
        CaseReadError: the folder is missing or empty; a file is not readable DICOM or lacks geometry tags;
            the folder holds several series; slices differ in size, orientation or spacing; two slices share a
            position; a slice is missing; the photometric interpretation is not grey. The message names the
            folder or the file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CaseReadError(f"{folder}: DICOM series folder not found", path=folder)
    paths = sorted(p for p in folder.glob(pattern) if p.is_file())
    if not paths:
        raise CaseReadError(f"{folder}: no DICOM files matching '{pattern}'", path=folder)
    headers = [_read_header(p) for p in paths]
    _check_one_series(folder, headers)
    headers, positions = _sort_and_check_gaps(folder, headers, max_gap)
    integral = all(float(h["slope"]).is_integer() and float(h["intercept"]).is_integer() for h in headers)
    volume = np.stack([_read_pixels(h, integral) for h in headers], axis=-1).transpose(1, 0, 2)
    photometric = headers[0]["photometric"]
    if photometric == "MONOCHROME1":
        volume = _monochrome1_to_hu(volume, headers)
    first = headers[0]
    step = float((positions[-1] - positions[0]) / (len(positions) - 1)) if len(positions) > 1 else 1.0
    normal = np.cross(first["row_dir"], first["col_dir"])
    lps = np.eye(4)
    lps[:3, 0] = first["row_dir"] * first["spacing"][0]
    lps[:3, 1] = first["col_dir"] * first["spacing"][1]
    lps[:3, 2] = normal * step
    lps[:3, 3] = first["position"]
    instances = [int(h["instance"]) if h["instance"].lstrip("-").isdigit() else None for h in headers]
    known = [n for n in instances if n is not None]
    metadata = {
        "folder": str(folder),
        "files": [str(h["path"]) for h in headers],
        "study_uid": first["study_uid"],
        "series_uid": first["series_uid"],
        "spacing": (float(first["spacing"][0]), float(first["spacing"][1]), abs(step)),
        "slice_positions": positions,
        "photometric": photometric,
        "rescale_slope": [h["slope"] for h in headers],
        "rescale_intercept": [h["intercept"] for h in headers],
        "instance_numbers_decrease": len(known) > 1 and known[0] > known[-1],
        "space": "RAS",
    }
    return volume, LPS_TO_RAS @ lps, metadata


def reorient_to_grid(
    array: np.ndarray, affine: np.ndarray, target_affine: np.ndarray, target_shape: Sequence[int], path: str | os.PathLike
) -> np.ndarray:
    """``array`` (voxel-to-world ``affine``) permuted and flipped onto the grid of ``target_affine``/``target_shape``.

    Only axis permutations and flips are applied (a label map is never resampled): the two grids must share
    their voxel size and their origin up to half a voxel once reoriented.

    Raises:
        CaseReadError: naming ``path``, when the shape or the grid does not match after reorientation.
    """
    transform = ornt_transform(io_orientation(affine), io_orientation(target_affine))
    moved = apply_orientation(array, transform)
    if tuple(moved.shape) != tuple(target_shape):
        raise CaseReadError(
            f"{path}: shape {tuple(array.shape)} is {tuple(moved.shape)} in the image's orientation, the image is "
            f"{tuple(target_shape)}",
            path=path,
        )
    moved_affine = affine @ nib.orientations.inv_ornt_aff(transform, array.shape)
    voxel = np.linalg.norm(target_affine[:3, :3], axis=0)
    axes_ok = np.allclose(moved_affine[:3, :3], target_affine[:3, :3], atol=0.01 * voxel.min() + 1e-3)
    origin_ok = np.all(np.abs(moved_affine[:3, 3] - target_affine[:3, 3]) <= 0.5 * voxel.min())
    if not (axes_ok and origin_ok):
        raise CaseReadError(
            f"{path}: its grid does not coincide with the image's (voxel axes {np.round(moved_affine[:3, :3], 3).tolist()} "
            f"vs {np.round(target_affine[:3, :3], 3).tolist()}, origin {np.round(moved_affine[:3, 3], 2).tolist()} vs "
            f"{np.round(target_affine[:3, 3], 2).tolist()})",
            path=path,
        )
    return np.ascontiguousarray(moved)


def read_label_map(
    path: str | os.PathLike, image_affine: np.ndarray, image_shape: Sequence[int]
) -> np.ndarray:
    """A NIfTI label map brought onto an image's voxel grid from the two headers (no fixed flips).

    Args:
        path: ``.nii`` / ``.nii.gz`` label map.
        image_affine: the image's RAS affine (as returned by :func:`read_dicom_series`).
        image_shape: the image's spatial shape.

    Returns:
        ``uint8`` labels with ``image_shape``, voxel for voxel aligned with the image.

    Raises:
        CaseReadError: the file is missing or not NIfTI, is not 3-D, holds non-integer or out-of-range labels,
            or does not match the image's shape/grid after reorientation; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CaseReadError(f"{path}: label map not found", path=path)
    try:
        image = nib.load(path)
        labels = np.asanyarray(image.dataobj)
    except Exception as error:  # nibabel raises several types for damaged files
        raise CaseReadError(f"{path}: not a readable NIfTI file ({error})", path=path) from error
    if labels.ndim > 3 and all(n == 1 for n in labels.shape[3:]):
        labels = labels.reshape(labels.shape[:3])
    if labels.ndim != 3:
        raise CaseReadError(f"{path}: expected a 3-D label map, got shape {labels.shape}", path=path)
    if labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):
        raise CaseReadError(f"{path}: label map holds non-integer values", path=path)
    if labels.min() < 0 or labels.max() > 255:
        raise CaseReadError(f"{path}: labels outside 0-255 ({labels.min()}..{labels.max()})", path=path)
    return reorient_to_grid(labels.astype(np.uint8), image.affine, image_affine, image_shape, path)
