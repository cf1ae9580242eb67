"""Synthetic RSNA 2022 cervical spine CT studies: real DICOM series, vertebra label maps and fracture labels.

Writes the competition's layout (:mod:`data.rsna_cervical`)::

    out_dir/train_images/<StudyInstanceUID>/<n>.dcm   one axial CT series per study, n = 1..slices
    out_dir/segmentations/<StudyInstanceUID>.nii      label maps for part of the studies (0 bg, 1-7 C1-C7, 8 T1)
    out_dir/train.csv                                 StudyInstanceUID,patient_overall,C1,...,C7
    out_dir/test_images/<StudyInstanceUID>/<n>.dcm    studies without labels
    out_dir/test.csv                                  row_id,StudyInstanceUID,prediction_type

Each study is a neck in air: skin, subcutaneous fat, muscle, the airway, and the cervical spine with its
lordosis, a random yaw and shift: C1 a ring (anterior and posterior arch, lateral masses, transverse
processes) around the dens of C2, C2-C7 with a body, pedicles and lamina around the spinal canal (cord and CSF
inside), transverse and spinous processes, bodies widening downwards, C7 with the longest spinous process,
the top of T1 below. Bone has a cortical shell (~1 voxel, ~900-1300 HU) around cancellous bone (~250 HU).
A fractured vertebra has a fracture plane through its body, arch or (C2) dens: a gap of soft tissue breaking the
cortex and a fragment on one side displaced by 1-2 voxels. ``train.csv`` marks exactly the fractured vertebrae,
``patient_overall`` = any. Gaussian blur (partial volume) and noise finish the image.

DICOM: written slice by slice with ITK's GDCM writer, uncompressed, with ImagePositionPatient,
ImageOrientationPatient (axial), PixelSpacing, SliceThickness, RescaleIntercept/Slope, InstanceNumber and
Study/Series/SOP Instance UIDs. File ``1.dcm`` is the most superior slice, except in the "reversed" studies where
it is the most inferior. ITK's writer always records MONOCHROME2, so the MONOCHROME1 studies are written with
mirrored values and their PhotometricInterpretation value is then set to MONOCHROME1 in the file (same length,
so the file stays valid). Label maps use the orientation of the real RSNA segmentations relative to their
DICOM: voxel ``(i, j, k)`` = image column ``i``, image row ``rows - 1 - j``, ``k`` increasing along the patient's
feet-to-head axis whatever the file order (the reference solutions flip these axes by hand), with the affine
that states exactly that (LAS codes for an axial study), so a header-based reader aligns them.

Deterministic: training study ``i`` uses ``default_rng([seed, 0, i])``, test study ``j`` ``default_rng([seed, 1, j])``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import binary_erosion, gaussian_filter

from data.rsna_cervical import LABEL_COLUMNS, SEGMENTATION_DIR, TEST_IMAGE_DIR, TRAIN_CSV, TRAIN_IMAGE_DIR
from formats.dicom import LPS_TO_RAS
from utils.atomic import write_text_atomic
from utils.process_locale import keep_process_locale

__all__ = ["add_arguments", "generate", "synthesize_study", "write_dicom_series"]

FOV_MM = 120.0  # in-plane field of view
# (label, top, bottom) of each vertebra's body, mm below the tip of the dens (C1: its ring; C2: body, dens above)
LEVELS = ((1, 4.0, 14.0), (2, 16.0, 34.0), (3, 38.0, 52.0), (4, 56.0, 70.0), (5, 74.0, 88.0), (6, 92.0, 106.0),
          (7, 110.0, 124.0), (8, 128.0, 144.0))
SPAN_MM = (-8.0, 138.0)  # depth range covered by the slices
AIR, FAT, MUSCLE, SKIN, CSF, CORD = -1000.0, -90.0, 55.0, 30.0, 10.0, 35.0
UID_ROOT = "1.2.826.0.1.3680043"  # the RSNA studies' UID root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of this generator."""
    parser.add_argument("--size", type=int, default=64, help="in-plane pixels (rows = columns; default 64)")
    parser.add_argument("--slices", type=int, default=72, help="slices per study (default 72)")
    parser.add_argument("--test-cases", type=int, default=None, help="test studies (default cases // 4, at least 1)")
    parser.add_argument("--segmented-fraction", type=float, default=0.5, help="studies with a label map (default 0.5)")
    parser.add_argument("--fracture-fraction", type=float, default=0.5, help="studies with a fracture (default 0.5)")
    parser.add_argument("--monochrome1-fraction", type=float, default=0.2, help="MONOCHROME1 studies (default 0.2)")
    parser.add_argument(
        "--reversed-fraction", type=float, default=0.3, help="studies whose 1.dcm is the lowest slice (default 0.3)"
    )


def _every(index: int, fraction: float, phase: int = 0) -> bool:
    """True for about ``fraction`` of consecutive indices, evenly spread (so that a few studies cover every kind)."""
    return int((index + phase + 1) * fraction) > int((index + phase) * fraction)


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0


def _vertebra_slice(label: int, depth: float, top: float, bottom: float, x: np.ndarray, y: np.ndarray, yb: float) -> np.ndarray:
    """In-plane mask of vertebra ``label`` at ``depth`` (mm below the dens tip); ``yb`` = body centre (posterior +)."""
    mask = np.zeros(x.shape, dtype=bool)
    if label == 1:  # atlas: a ring around the dens, thick lateral masses, wide transverse processes
        if top <= depth <= bottom:
            ring = _ellipse(x, y, 0, yb + 6, 21, 17) & ~_ellipse(x, y, 0, yb + 6, 15, 12.5)
            masses = _ellipse(np.abs(x), y, 12, yb + 3, 6, 7)
            transverse = (np.abs(x) >= 17) & (np.abs(x) <= 26) & (np.abs(y - yb - 3) <= 3)
            mask = ring | masses | transverse
        return mask
    scale = label - 2  # bodies and processes grow downwards
    ax, ay = 7.5 + 0.5 * scale, 6.5 + 0.25 * scale
    if top <= depth <= bottom:
        mask |= _ellipse(x, y, 0, yb, ax, ay)
    if label == 2 and top - 16 <= depth < top:  # the dens, rounded at its tip
        radius = 5.0 * np.sqrt(min(1.0, (depth - (top - 16) + 0.5) / 4.0))
        mask |= _ellipse(x, y, 0, yb, radius, radius)
    height = bottom - top
    if top + 0.15 * height <= depth <= bottom - 0.1 * height:  # arch: pedicles + lamina around the canal
        yc = yb + ay + 6.5
        arch = _ellipse(x, y, 0, yc, 14.5, 10) & ~_ellipse(x, y, 0, yc, 11, 6.5) & (y > yb + ay - 3)
        transverse = (np.abs(x) >= ax + 1) & (np.abs(x) <= 17 + 0.8 * scale) & (np.abs(y - yb - ay) <= 2.5)
        mask |= arch | transverse
        if depth >= top + 0.35 * height:  # spinous process, sloping down and back; C7's is the longest
            length = 8 + 1.5 * scale + (6 if label == 7 else 0)
            mask |= (np.abs(x) <= 1.8) & (y >= yc + 9) & (y <= yc + 10 + length)
    return mask


def _fracture(
    rng: np.random.Generator, labels: np.ndarray, bone: np.ndarray, label: int, world: np.ndarray, spacing: np.ndarray
) -> None:
    """Break vertebra ``label`` in place: a soft-tissue gap across it and a displaced fragment on one side."""
    voxels = np.argwhere(labels == label)
    centre_voxel = voxels[rng.integers(len(voxels))]
    centre = world[tuple(centre_voxel)]
    normal = rng.normal(size=3)
    if label == 2 and rng.random() < 0.5:  # a dens (odontoid) fracture: a transverse break
        normal = np.array([0.2 * rng.normal(), 0.2 * rng.normal(), 1.0])
    normal /= np.linalg.norm(normal)
    offset = world - centre
    signed = offset @ normal
    near = np.linalg.norm(offset, axis=-1) <= rng.uniform(8.0, 11.0)
    gap = max(3.0, 1.6 * float(spacing.min())) / 2
    own = labels == label
    fragment = own & near & (signed > gap)
    shift = np.rint(normal * rng.uniform(1.0, 2.0)).astype(int)
    if not shift.any():
        shift[np.argmax(np.abs(normal))] = 1 if normal[np.argmax(np.abs(normal))] > 0 else -1
    source = np.argwhere(fragment)
    values = bone[fragment]
    broken = own & near & ((np.abs(signed) <= gap) | fragment)
    labels[broken] = 0
    bone[broken] = 0
    target = source + shift
    inside = np.all((target >= 0) & (target < np.array(labels.shape)), axis=1)
    target, values = target[inside], values[inside]
    free = labels[tuple(target.T)] == 0  # a fragment does not overwrite another vertebra
    labels[tuple(target[free].T)] = label
    bone[tuple(target[free].T)] = values[free]


def synthesize_study(
    rng: np.random.Generator, size: int = 64, slices: int = 72, fractured: tuple[int, ...] = ()
) -> dict:
    """One study: ``hu`` int16 ``(size, size, slices)`` indexed (column, row, slice with increasing z), ``labels``
    uint8 (0 bg, 1-7 C1-C7, 8 T1) on the same grid, its ``affine`` (RAS), ``origin`` (LPS position of voxel
    (0, 0, 0)) and ``spacing`` (mm along i, j, k). ``fractured`` lists the vertebrae (1-7) to break."""
    stretch = rng.uniform(0.92, 1.08)
    dz = (SPAN_MM[1] - SPAN_MM[0]) * stretch / slices
    dxy = FOV_MM / size
    spacing = np.array([dxy, dxy, dz])
    origin = np.array([-FOV_MM / 2 + rng.uniform(-3, 3), -FOV_MM / 2 + rng.uniform(-3, 3), rng.uniform(-700, -500)])
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    x_lps, y_lps = origin[0] + i * dxy, origin[1] + j * dxy
    yaw, shift = np.deg2rad(rng.uniform(-8, 8)), rng.uniform(-4, 4, size=2)
    x = np.cos(yaw) * (x_lps - shift[0]) + np.sin(yaw) * (y_lps - shift[1])
    y = -np.sin(yaw) * (x_lps - shift[0]) + np.cos(yaw) * (y_lps - shift[1])
    z_world = origin[2] + np.arange(slices) * dz
    dens_tip_z = z_world[-1] + SPAN_MM[0] * stretch + rng.uniform(-3, 3)
    tissue = np.full((size, size, slices), AIR, dtype=np.float32)
    labels = np.zeros((size, size, slices), dtype=np.uint8)
    neck_ax, neck_ay = rng.uniform(44, 50), rng.uniform(38, 44)
    lordosis = rng.uniform(3, 8)
    for k, z in enumerate(z_world):
        depth = (dens_tip_z - z) / stretch
        yb = 2.0 - lordosis * np.sin(np.pi * np.clip(depth, 0, 130) / 130)
        outer = _ellipse(x, y, 0, 4, neck_ax, neck_ay)
        plane = np.where(outer, SKIN, AIR)
        plane = np.where(_ellipse(x, y, 0, 4, neck_ax - 2, neck_ay - 2), FAT, plane)
        plane = np.where(_ellipse(x, y, 0, 4, neck_ax - 7, neck_ay - 7), MUSCLE, plane)
        plane = np.where(_ellipse(x, y, 0, yb - 24, 7, 6), AIR, plane)  # airway
        canal_y = yb + 6.5 + 6.5
        plane = np.where(_ellipse(x, y, 0, canal_y, 10, 6), CSF, plane)
        plane = np.where(_ellipse(x, y, 0, canal_y, 5, 3.5), CORD, plane)
        tissue[:, :, k] = plane
        for label, top, bottom in LEVELS:
            if top - 16 <= depth <= bottom:
                labels[:, :, k][_vertebra_slice(label, depth, top, bottom, x, y, yb) & (labels[:, :, k] == 0)] = label
    bone = np.zeros_like(tissue)
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1, 1, :] = structure[1, :, 1] = structure[:, 1, 1] = True
    for label in range(1, 9):
        own = labels == label
        cortex = own & ~binary_erosion(own, structure)
        bone[own] = rng.uniform(220, 300) + 40 * rng.standard_normal(int(own.sum()))
        bone[cortex] = rng.uniform(900, 1300)
    world = np.stack(np.meshgrid(x_lps[:, 0], y_lps[0], z_world, indexing="ij"), axis=-1)
    for label in fractured:
        _fracture(rng, labels, bone, label, world, spacing)
    hu = np.where(labels > 0, bone, tissue)
    hu = gaussian_filter(hu, sigma=(0.6, 0.6, 0.4)) + rng.normal(0, rng.uniform(8, 20), size=hu.shape)
    lps = np.eye(4)
    lps[:3, :3] = np.diag(spacing)
    lps[:3, 3] = origin
    return {
        "hu": np.clip(np.rint(hu), -1024, 3071).astype(np.int16),
        "labels": labels,
        "affine": LPS_TO_RAS @ lps,
        "origin": origin,
        "spacing": spacing,
    }


def write_dicom_series(
    folder: Path,
    hu: np.ndarray,
    origin: np.ndarray,
    spacing: np.ndarray,
    study_uid: str,
    monochrome1: bool = False,
    reverse_files: bool = False,
    intercept: float = -1024.0,
    slope: float = 1.0,
) -> None:
    """Write ``hu`` (column, row, slice with increasing z; axial, LPS ``origin``) as ``folder/<n>.dcm``.

    ``n`` = 1 is the most superior slice unless ``reverse_files``; InstanceNumber = ``n``. ITK stores
    ``(hu - intercept) / slope`` (rounded), so ``hu`` survives exactly when that is an integer.
    """
    import itk  # deferred: importing itk costs seconds

    folder.mkdir(parents=True, exist_ok=True)
    slices = hu.shape[2]
    series_uid = f"{study_uid}.1"
    values = hu
    if monochrome1:  # stored values mirrored over the study's range; the reader mirrors them back
        values = (hu.max() - hu) + hu.min()
    for k in range(slices):
        number = k + 1 if reverse_files else slices - k
        position = origin + np.array([0.0, 0.0, k * spacing[2]])
        image = itk.image_from_array(np.ascontiguousarray(values[:, :, k].T[None]))
        image.SetOrigin(position.tolist())
        image.SetSpacing([float(s) for s in spacing])
        tags = {
            "0008|0060": "CT",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008|0018": f"{series_uid}.{number}",
            "0020|000d": study_uid,
            "0020|000e": series_uid,
            "0020|0013": str(number),
            "0020|0032": "\\".join(f"{v:.4f}" for v in position),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": f"{spacing[1]:.6f}\\{spacing[0]:.6f}",
            "0018|0050": f"{spacing[2]:.4f}",
            "0028|1052": f"{intercept:g}",
            "0028|1053": f"{slope:g}",
        }
        dictionary = image.GetMetaDataDictionary()
        for tag, value in tags.items():
            dictionary[tag] = value
        io = itk.GDCMImageIO.New()
        io.KeepOriginalUIDOn()
        path = folder / f"{number}.dcm"
        with keep_process_locale():
            itk.imwrite(image, str(path), imageio=io)
        if monochrome1:
            _set_monochrome1(path)


def _set_monochrome1(path: Path) -> None:
    """Replace the PhotometricInterpretation value MONOCHROME2 by MONOCHROME1 (same length, same VR)."""
    data = path.read_bytes()
    old = b"\x28\x00\x04\x00\x0c\x00\x00\x00MONOCHROME2 "  # (0028,0004), implicit VR little endian, 12 bytes
    if data.count(old) != 1:
        raise RuntimeError(f"{path}: PhotometricInterpretation element not found as written by ITK")
    path.write_bytes(data.replace(old, old[:-2] + b"1 "))


def _nifti_like_rsna(labels: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """The label map in the RSNA segmentations' orientation: image rows reversed (``j`` -> ``rows - 1 - j``)."""
    flip = np.eye(4)
    flip[1, 1], flip[1, 3] = -1.0, labels.shape[1] - 1
    image = nib.Nifti1Image(np.ascontiguousarray(labels[:, ::-1, :]), affine @ flip)
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    return image


def _fractured_levels(rng: np.random.Generator) -> tuple[int, ...]:
    """One or two vertebrae, C2 and C6-C7 most often as in the competition data."""
    weights = np.array([0.8, 1.6, 0.6, 0.6, 0.9, 1.3, 1.5])
    count = 1 if rng.random() < 0.7 else 2
    return tuple(sorted(int(v) + 1 for v in rng.choice(7, size=count, replace=False, p=weights / weights.sum())))


def generate(
    out_dir: Path,
    cases: int,
    seed: int,
    size: int = 64,
    slices: int = 72,
    test_cases: int | None = None,
    segmented_fraction: float = 0.5,
    fracture_fraction: float = 0.5,
    monochrome1_fraction: float = 0.2,
    reversed_fraction: float = 0.3,
) -> None:
    """Write ``cases`` training studies and ``test_cases`` test studies in the RSNA layout under ``out_dir``."""
    if cases < 1:
        raise ValueError(f"cases must be at least 1, got {cases}")
    if size < 32 or slices < 32:
        raise ValueError(f"size and slices must be at least 32 to hold the anatomy, got {size} and {slices}")
    out_dir = Path(out_dir)
    test_cases = max(1, cases // 4) if test_cases is None else test_cases
    segmented = max(1, round(segmented_fraction * cases)) if segmented_fraction > 0 else 0
    rows = ["StudyInstanceUID," + ",".join(LABEL_COLUMNS)]
    for index in range(cases):
        rng = np.random.default_rng([seed, 0, index])
        uid = f"{UID_ROOT}.{10000 + index}"
        fractured = _fractured_levels(rng) if _every(index, fracture_fraction) else ()
        study = synthesize_study(rng, size, slices, fractured)
        write_dicom_series(
            out_dir / TRAIN_IMAGE_DIR / uid, study["hu"], study["origin"], study["spacing"], uid,
            monochrome1=_every(index, monochrome1_fraction, phase=2),
            reverse_files=_every(index, reversed_fraction, phase=1),
        )
        if index < segmented:
            seg_dir = out_dir / SEGMENTATION_DIR
            seg_dir.mkdir(parents=True, exist_ok=True)
            nib.save(_nifti_like_rsna(study["labels"], study["affine"]), seg_dir / f"{uid}.nii")
        flags = [int(v in fractured) for v in range(1, 8)]
        rows.append(",".join([uid, str(max(flags)), *map(str, flags)]))
    write_text_atomic(out_dir / TRAIN_CSV, "\n".join(rows) + "\n")
    test_rows = ["row_id,StudyInstanceUID,prediction_type"]
    for index in range(test_cases):
        rng = np.random.default_rng([seed, 1, index])
        uid = f"{UID_ROOT}.{90000 + index}"
        fractured = _fractured_levels(rng) if _every(index, fracture_fraction) else ()
        study = synthesize_study(rng, size, slices, fractured)
        write_dicom_series(out_dir / TEST_IMAGE_DIR / uid, study["hu"], study["origin"], study["spacing"], uid)
        test_rows += [f"{uid}_{column},{uid},{column}" for column in LABEL_COLUMNS]
    write_text_atomic(out_dir / "test.csv", "\n".join(test_rows) + "\n")
