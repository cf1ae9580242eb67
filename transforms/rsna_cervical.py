"""Stage-1 preprocessing of the RSNA 2022 cervical spine CT studies, cached as memory-mapped ``.npy`` arrays.

The reference solution (selimsef/rsna_cervical_fracture, ``datatools/preprocess.py`` + ``training/dataset_seq.py``)
resizes every DICOM slice to 256 x 256 (bilinear; label maps nearest), stores the cubes once as TIFF, opens them
memory-mapped, keeps every second slice (``[::2]``) and z-scores each volume with its own mean and standard
deviation. :func:`preprocess_study` computes the same arrays from :func:`formats.dicom.read_dicom_series` and
:func:`data.rsna_cervical.read_segmentation` (header-aligned label map, vertebrae > 7 set to 0) and
:func:`load_preprocessed_study` caches them, so that only the first epoch decodes DICOM.

Axes follow :mod:`formats.dicom`: ``(column, row, slice)`` with slices from feet to head (RAS affine). The slices
kept by ``z_step`` are the reference's: it orders slices head first and keeps ``[::step]`` from the top slice, so
here the kept indices are ``n-1, n-1-step, ...``. The image is float32 z-scores, the label map uint8 (0 bg,
1-7 = C1-C7).

Cache layout (one entry per study and preprocessing setting)::

    <cache_dir>/<size[0]>x<size[1]>_z<z_step>/<StudyInstanceUID>/image.npy    float32 (X, Y, Z)
                                                               /label.npy    uint8 (X, Y, Z), if segmented
                                                               /entry.json   key, shapes, affine, mean/std

``cache_dir`` defaults to ``<dataset root>/preprocessed`` (the root being the folder that holds
``train_images/``): the arrays depend on the data and the preprocessing parameters only, never on a run, so all
runs and folds share one cache, as the reference's ``resized_image_cubes/`` beside the data are shared.

Invalidation: the entry's key is a SHA-256 of the series' file names, sizes and modification times, those of the
label map, and the parameters (``spatial_size``, ``z_step``, :data:`CACHE_VERSION`); a key mismatch, a missing
or malformed ``entry.json`` or array rebuilds the entry. Writes are atomic (:mod:`utils.atomic`) and
``entry.json`` is removed first and written last, so an entry whose writer was killed midway is never taken for
a valid one.

Why not MONAI's dataset caches: ``PersistentDataset`` and ``LMDBDataset`` key an item by a hash of its data
dictionary (here: paths), so a changed or replaced DICOM file is not noticed, and they store pickles that
``torch.load`` / LMDB read whole on every access (no memory-mapped partial reads of a 64-slice crop);
``CacheDataset`` keeps every volume in RAM and rebuilds it at every start.

Stage-1 pipelines (listed in ``bundles/cervical_spine_ct_fracture/configs/train.json``): after
:class:`PreprocessStudyd` the volumes are transposed to ``(C, Z, Y=row, X=column)`` (MONAI ``Transposed``), the
slices being the first axis of the networks; keys ``image`` and ``label``. Reference (albumentations
``ReplayCompose``, one draw per sample) -> here:

* random 64-slice window, zero-padded at the end when the volume is shorter -> ``RandSpatialCropd`` (roi
  ``[64, -1, -1]``) + ``SpatialPadd``; padding to a multiple of 16 -> ``DivisiblePadd(k=[16, 1, 1])``. The
  bundle pads symmetrically (``method="symmetric"``), in training and validation alike, because MONAI's
  ``SlidingWindowInferer`` pads a study shorter than its window symmetrically at inference: a study must sit at
  the same place in the window in all three, or a network that has learnt the vertebra levels from their
  distance to the padding labels them one or two levels off (seen in the CPU demo, whose studies are shorter
  than the crop).
  The reference pads raw values (0) before z-scoring; here the pad is 0 after it (the volume's mean).
* ``ShiftScaleRotate(0.1, 0.1, 20, constant border, p 0.5)``, ``HorizontalFlip`` p 0.5 and
  ``OneOf[GridDistortion(distort_limit 0.1), ElasticTransform] p 0.2`` -> 2-D ``RandAffined`` (translate
  0.1 x size px, scale 1 +- 0.1 drawn per axis instead of one isotropic factor, rotate +-20 deg), ``RandFlipd``
  on the in-plane axis of the image columns (the width albumentations flips), and ``OneOf[RandGridDistortiond(num_cells
  5, distort_limit 0.1), Rand2DElasticd]`` each with prob 0.2, all inside :class:`transforms.spatial.InPlaned`
  (``slice_axis=0``, one draw shared by all slices). albumentations 1.x ``ElasticTransform`` defaults (alpha 1,
  sigma 50, alpha_affine 50) make its elastic field sub-pixel and its effect a random affine that jitters three
  points 85 px from the centre (at 256) by +-50 px: matrix entries +-0.59 (triangular, std 0.24);
  ``Rand2DElasticd`` with ``magnitude_range`` 0 and scale/shear ranges 0.42, translation 0.13 x size matches those
  spreads with uniform draws.
* validation: the whole (z-padded) volume through ``SlidingWindowInferer`` with a 256-slice window and overlap
  0.25 (64 slices), as the reference validates (``train_unet_3d.py``).

Writers of the bundle's outputs: :class:`SaveVertebraMapd` (stage-1 label map + per-study metadata),
:class:`SaveFractureRowsd` (submission rows) and :class:`SaveSpineOverlayd` (sagittal / coronal picture).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.config import KeysCollection
from monai.transforms import MapTransform, Resize
from monai.utils import convert_to_numpy, ensure_tuple_rep

from data.rsna_cervical import read_segmentation
from formats.dicom import read_dicom_series
from formats.errors import CaseReadError
from formats.nifti import write_nifti_atomic
from formats.png import save_rgb_png_atomic
from formats.rsna_cervical import write_study_rows
from transforms.vertebra import vertebra_summary
from transforms.writers import CaseWriterd
from utils.atomic import atomic_path, write_text_atomic

__all__ = [
    "CACHE_VERSION",
    "PreprocessStudyd",
    "SaveFractureRowsd",
    "SaveSpineOverlayd",
    "SaveVertebraMapd",
    "cache_entry_dir",
    "default_cache_dir",
    "load_preprocessed_study",
    "preprocess_study",
    "study_cache_key",
]

CACHE_VERSION = 1  # bump when preprocess_study changes what it computes
DICOM_PATTERN = "*.dcm"


def _size_pair(spatial_size: int | Sequence[int]) -> tuple[int, int]:
    size = tuple(int(s) for s in ensure_tuple_rep(spatial_size, 2))
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"spatial_size must be one or two positive ints, got {spatial_size}")
    return size  # type: ignore[return-value]


def default_cache_dir(series_folder: str | os.PathLike) -> Path:
    """``<dataset root>/preprocessed`` for a series folder ``<root>/train_images/<uid>`` (or ``test_images``)."""
    return Path(series_folder).resolve().parent.parent / "preprocessed"


def cache_entry_dir(cache_dir: str | os.PathLike, study: str, spatial_size: int | Sequence[int], z_step: int) -> Path:
    """The folder of one study's entry for one preprocessing setting."""
    height, width = _size_pair(spatial_size)
    return Path(cache_dir) / f"{height}x{width}_z{z_step}" / study


def _fingerprint(path: Path) -> list:
    stat = path.stat()
    return [path.name, stat.st_size, stat.st_mtime_ns]


def study_cache_key(
    series_folder: str | os.PathLike,
    segmentation: str | os.PathLike | None,
    spatial_size: int | Sequence[int],
    z_step: int,
) -> str:
    """SHA-256 of the study's files (names, sizes, mtimes), its label map's, and the preprocessing parameters.

    Raises:
        CaseReadError: the series folder or the label map is missing.
    """
    folder = Path(series_folder)
    if not folder.is_dir():
        raise CaseReadError(f"{folder}: DICOM series folder not found", path=folder)
    files = sorted(_fingerprint(p) for p in folder.glob(DICOM_PATTERN) if p.is_file())
    label = None
    if segmentation is not None:
        seg = Path(segmentation)
        if not seg.is_file():
            raise CaseReadError(f"{seg}: label map not found", path=seg)
        label = _fingerprint(seg)
    description = {
        "version": CACHE_VERSION,
        "spatial_size": list(_size_pair(spatial_size)),
        "z_step": int(z_step),
        "files": files,
        "segmentation": label,
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


def preprocess_study(
    series_folder: str | os.PathLike,
    segmentation: str | os.PathLike | None = None,
    spatial_size: int | Sequence[int] = 256,
    z_step: int = 2,
) -> dict[str, Any]:
    """One study as the reference's stage-1 input: in-plane resized, every ``z_step``-th slice, z-scored.

    Args:
        series_folder: the study's DICOM folder.
        segmentation: its NIfTI label map, or None.
        spatial_size: in-plane size (256 in the reference; smaller for a CPU demo).
        z_step: keep every ``z_step``-th slice, counted from the top slice (2 in the reference).

    Returns:
        ``{"image": float32 (X, Y, Z), "label": uint8 (X, Y, Z) or None, "affine": 4x4 RAS of the new grid,
        "mean": HU mean, "std": HU standard deviation}``; the image is ``(resized HU - mean) / std``.

    Raises:
        CaseReadError: unreadable series or label map (from the readers), or a constant image (no contrast
            to normalise), naming the folder.
    """
    if z_step < 1:
        raise ValueError(f"z_step must be at least 1, got {z_step}")
    size = _size_pair(spatial_size)
    volume, affine, _ = read_dicom_series(series_folder, pattern=DICOM_PATTERN)
    labels = read_segmentation(segmentation, affine, volume.shape) if segmentation is not None else None
    start = (volume.shape[2] - 1) % z_step  # the reference keeps [::step] from the top (last) slice
    volume = volume[:, :, start::z_step]
    image = Resize((*size, -1), mode="trilinear")(torch.as_tensor(volume, dtype=torch.float32)[None])
    image = image.numpy()[0] if not isinstance(image, MetaTensor) else image.as_tensor().numpy()[0]
    mean, std = float(image.mean(dtype=np.float64)), float(image.std(dtype=np.float64))
    if not std > 0:
        raise CaseReadError(
            f"{series_folder}: the image is constant ({mean:g} HU); it cannot be z-scored", path=series_folder
        )
    image = ((image - mean) / std).astype(np.float32)
    resized_labels = None
    if labels is not None:
        labels = torch.as_tensor(labels[:, :, start::z_step].astype(np.float32))[None]
        resized = Resize((*size, -1), mode="nearest")(labels)
        resized = resized.as_tensor() if isinstance(resized, MetaTensor) else resized
        resized_labels = resized.numpy()[0].astype(np.uint8)
    # voxel (i', j', k') of the new grid lies at old voxel (i' * sx + (sx - 1) / 2, ..., start + k' * z_step)
    sx, sy = volume.shape[0] / size[0], volume.shape[1] / size[1]
    to_old = np.diag([sx, sy, float(z_step), 1.0])
    to_old[:3, 3] = [(sx - 1) / 2, (sy - 1) / 2, start]
    return {"image": image, "label": resized_labels, "affine": affine @ to_old, "mean": mean, "std": std}


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, array)


def _open_entry(entry_dir: Path, key: str, with_label: bool) -> dict[str, Any] | None:
    """The cached arrays (memory-mapped) when the entry is complete and its key is ``key``; else None."""
    try:
        entry = json.loads((entry_dir / "entry.json").read_text())
        if entry.get("key") != key:
            return None
        image = np.load(entry_dir / "image.npy", mmap_mode="c")
        label = np.load(entry_dir / "label.npy", mmap_mode="c") if with_label else None
    except (OSError, ValueError):  # missing file, half-written or malformed JSON / npy header
        return None
    if list(image.shape) != entry["shape"] or (label is not None and label.shape != image.shape):
        return None
    affine = np.asarray(entry["affine"])
    return {"image": image, "label": label, "affine": affine, "mean": entry["mean"], "std": entry["std"]}


def load_preprocessed_study(
    series_folder: str | os.PathLike,
    segmentation: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    spatial_size: int | Sequence[int] = 256,
    z_step: int = 2,
) -> dict[str, Any]:
    """:func:`preprocess_study` through the cache (layout and invalidation: module docstring).

    The arrays are opened with ``np.load(mmap_mode="c")``: memory-mapped and read lazily like ``"r"``, but
    copy-on-write, so that a torch tensor sharing the memory can be modified in place without touching the file
    (a write through a read-only mapping would crash the process).

    Args:
        series_folder: the study's DICOM folder; its name is the study's entry name.
        segmentation: its label map, or None.
        cache_dir: the cache root; None for :func:`default_cache_dir`.
        spatial_size: in-plane size.
        z_step: slice step.

    Returns:
        as :func:`preprocess_study`, with ``image`` / ``label`` memory-mapped and ``"cache_hit"`` (bool).
    """
    folder = Path(series_folder)
    root = cache_dir if cache_dir is not None else default_cache_dir(folder)
    entry_dir = cache_entry_dir(root, folder.name, spatial_size, z_step)
    key = study_cache_key(folder, segmentation, spatial_size, z_step)
    cached = _open_entry(entry_dir, key, segmentation is not None)
    if cached is not None:
        return {**cached, "cache_hit": True}
    result = preprocess_study(folder, segmentation, spatial_size, z_step)
    entry_dir.mkdir(parents=True, exist_ok=True)
    (entry_dir / "entry.json").unlink(missing_ok=True)  # invalid from here until the new arrays are complete
    _save_npy(entry_dir / "image.npy", result["image"])
    if result["label"] is not None:
        _save_npy(entry_dir / "label.npy", result["label"])
    else:
        (entry_dir / "label.npy").unlink(missing_ok=True)
    entry = {
        "key": key,
        "study": folder.name,
        "series_folder": str(folder),
        "segmentation": None if segmentation is None else str(segmentation),
        "shape": list(result["image"].shape),
        "affine": result["affine"].tolist(),
        "mean": result["mean"],
        "std": result["std"],
    }
    write_text_atomic(entry_dir / "entry.json", json.dumps(entry, indent=1))
    cached = _open_entry(entry_dir, key, result["label"] is not None)
    if cached is None:
        raise OSError(f"{entry_dir}: cache entry unreadable right after writing it")
    return {**cached, "cache_hit": False}


class PreprocessStudyd(MapTransform):
    """Replace a study's paths by its preprocessed, cached arrays (:func:`load_preprocessed_study`).

    ``data[image_key]`` (a DICOM series folder) becomes a ``MetaTensor`` ``(1, X, Y, Z)`` float32 z-scores with
    the new grid's affine; ``data[segmentation_key]`` (a label map path), when present, becomes ``(1, X, Y, Z)``
    uint8 on the same grid. Both share the memory of the memory-mapped cache files until a transform copies them
    (a random crop reads only the slices it keeps).

    Args:
        image_key: key of the series folder.
        segmentation_key: key of the label map path (optional in an item).
        cache_dir: cache root; None: ``<dataset root>/preprocessed`` (:func:`default_cache_dir`).
        spatial_size: in-plane size (256 in the reference).
        z_step: slice step (2 in the reference).
    """

    def __init__(
        self,
        image_key: str = "image",
        segmentation_key: str = "segmentation",
        cache_dir: str | os.PathLike | None = None,
        spatial_size: int | Sequence[int] = 256,
        z_step: int = 2,
    ) -> None:
        super().__init__([image_key, segmentation_key], allow_missing_keys=True)
        if image_key == segmentation_key:
            raise ValueError("image_key and segmentation_key must differ")
        self.image_key, self.segmentation_key = image_key, segmentation_key
        self.cache_dir = cache_dir
        self.spatial_size = _size_pair(spatial_size)
        self.z_step = int(z_step)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        if self.image_key not in d:
            raise KeyError(f"item has no '{self.image_key}' (the DICOM series folder); keys: {sorted(map(str, d))}")
        folder = str(d[self.image_key])
        segmentation = d.get(self.segmentation_key)
        study = load_preprocessed_study(folder, segmentation, self.cache_dir, self.spatial_size, self.z_step)
        meta = {"filename_or_obj": folder, "space": "RAS", "image_mean": study["mean"], "image_std": study["std"]}
        affine = torch.as_tensor(study["affine"], dtype=torch.float64)
        d[self.image_key] = MetaTensor(torch.from_numpy(study["image"])[None], affine=affine, meta=meta)
        if study["label"] is not None:
            label_meta = {"filename_or_obj": str(segmentation), "space": "RAS"}
            label = torch.from_numpy(study["label"])[None]
            d[self.segmentation_key] = MetaTensor(label, affine=affine, meta=label_meta)
        return d


def _grid_affine(data: Mapping[Hashable, Any], key: str) -> np.ndarray:
    """The RAS affine of ``data[key]``'s (X, Y, Z) grid (:class:`PreprocessStudyd` sets it; MONAI's ``Transposed``
    to (Z, Y, X) leaves it unchanged)."""
    value = data[key]
    if not isinstance(value, MetaTensor):
        raise ValueError(f"{key!r} carries no affine (expected the MetaTensor of PreprocessStudyd)")
    return np.asarray(value.affine, dtype=np.float64)


class SaveVertebraMapd(CaseWriterd):
    """Write a study's vertebra label map and its metadata: stage 1's output, stage 2's input.

    ``data[key]`` (1, Z, Y, X) class indices on the preprocessed grid becomes ``{case}{suffix}.nii.gz`` (uint8, axes
    (X, Y, Z) with the grid's RAS affine taken from ``affine_key``, so that it overlays the DICOM series in any
    viewer) and ``{case}{suffix}.json`` (:func:`transforms.vertebra.vertebra_summary`: voxels and bounding box
    (z1, y1, x1, z2, y2, x2) per vertebra, as the reference's ``compute_meta.py``, plus the grid's shape).
    """

    extension = ".nii.gz"

    def __init__(
        self,
        keys: KeysCollection = "vertebrae",
        output_dir: str | os.PathLike = ".",
        affine_key: str = "image",
        case_key: str = "study",
        suffix: str = "_vertebrae",
        overwrite: bool = False,
    ) -> None:
        super().__init__(keys, output_dir, case_key, suffix, overwrite)
        self.affine_key = affine_key

    def write(self, case: str, data: dict[Hashable, Any]) -> None:
        affine = _grid_affine(data, self.affine_key)
        for key in self.key_iterator(data):
            labels = convert_to_numpy(data[key])
            if labels.ndim != 4 or labels.shape[0] != 1:
                raise ValueError(f"case {case}: {key!r} must be (1, Z, Y, X), got {labels.shape}")
            volume = np.rint(labels[0]).astype(np.uint8)
            summary = {"study": case, "shape_zyx": list(volume.shape), **vertebra_summary(volume)}
            write_nifti_atomic(self.output_path(case), volume.transpose(2, 1, 0), affine, overwrite=self.overwrite)
            metadata = self.output_path(case).with_name(f"{case}{self.suffix}.json")
            write_text_atomic(metadata, json.dumps(summary, indent=1), overwrite=self.overwrite)


class SaveFractureRowsd(CaseWriterd):
    """Write a study's 8 probabilities ``data[key]`` as its submission rows ``{case}{suffix}.csv``
    (:func:`formats.rsna_cervical.write_study_rows`; joined by :func:`formats.rsna_cervical.merge_submission`)."""

    extension = ".csv"

    def __init__(
        self,
        keys: KeysCollection = "fracture",
        output_dir: str | os.PathLike = ".",
        case_key: str = "study",
        suffix: str = "_fracture",
        overwrite: bool = False,
    ) -> None:
        super().__init__(keys, output_dir, case_key, suffix, overwrite)

    def write(self, case: str, data: dict[Hashable, Any]) -> None:
        for key in self.key_iterator(data):
            write_study_rows(self.output_path(case), case, convert_to_numpy(data[key]), overwrite=self.overwrite)


# vertebra colours C1..C7 (RGB), background transparent
VERTEBRA_COLOURS = np.array(
    [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
     [70, 240, 240]],
    dtype=np.float32,
)


def _panel(image: np.ndarray, labels: np.ndarray, scale: int, alpha: float = 0.45) -> np.ndarray:
    """RGB panel of a (rows, cols) slice, head up, labels tinted, enlarged ``scale`` times (nearest)."""
    grey = np.clip((image + 2.0) / 6.0, 0, 1) * 255  # z-scores: soft tissue dark grey, bone bright
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    classes = np.clip(labels, 0, len(VERTEBRA_COLOURS) - 1)
    rgb = np.where((classes > 0)[..., None], (1 - alpha) * rgb + alpha * VERTEBRA_COLOURS[classes], rgb)
    return np.kron(rgb, np.ones((scale, scale, 1))).astype(np.uint8)


class SaveSpineOverlayd(CaseWriterd):
    """Save ``{case}{suffix}.png``: a sagittal and a coronal slice of the study with the vertebra labels tinted
    and each vertebra's name and fracture probability written beside it.

    Args:
        keys: the image (1, Z, Y, X) (z-scored, as the network sees it).
        label_key: the vertebra label map on the same grid.
        probability_key: ``{label: probability}`` per vertebra (:class:`transforms.vertebra.ClassifyVertebraed`).
        overall_key: the study's 8 probabilities (the first, ``patient_overall``, is written in the title).
        scale: enlargement of the pictures (nearest).
    """

    extension = ".png"

    def __init__(
        self,
        keys: KeysCollection = "image",
        output_dir: str | os.PathLike = ".",
        label_key: str = "vertebrae",
        probability_key: str = "vertebra_probabilities",
        overall_key: str = "fracture",
        case_key: str = "study",
        suffix: str = "_overlay",
        scale: int = 2,
        overwrite: bool = False,
    ) -> None:
        super().__init__(keys, output_dir, case_key, suffix, overwrite)
        self.label_key, self.probability_key, self.overall_key = label_key, probability_key, overall_key
        self.scale = scale

    def write(self, case: str, data: dict[Hashable, Any]) -> None:
        from PIL import Image, ImageDraw  # deferred: only the overlay needs PIL's drawing

        image = convert_to_numpy(data[self.keys[0]])[0].astype(np.float32)
        labels = np.rint(convert_to_numpy(data[self.label_key])[0]).astype(np.int64)
        if image.shape != labels.shape:
            raise ValueError(f"case {case}: image {image.shape} and label map {labels.shape} differ")
        spine = np.argwhere(labels > 0)
        _, y_mid, x_mid = spine.mean(axis=0).round().astype(int) if len(spine) else np.array(image.shape) // 2
        # slices run feet to head: flip Z so that the head is up; sagittal (Z, Y), coronal (Z, X)
        views = [(image[::-1, :, x_mid], labels[::-1, :, x_mid]), (image[::-1, y_mid, :], labels[::-1, y_mid, :])]
        panels = [_panel(v, l, self.scale) for v, l in views]
        title = 14
        height = max(p.shape[0] for p in panels) + title
        canvas = np.zeros((height, sum(p.shape[1] for p in panels) + 4 * (len(panels) - 1), 3), dtype=np.uint8)
        left = 0
        for panel in panels:
            canvas[title:title + panel.shape[0], left:left + panel.shape[1]] = panel
            left += panel.shape[1] + 4
        picture = Image.fromarray(canvas)
        draw = ImageDraw.Draw(picture)
        probabilities = data.get(self.probability_key) or {}
        overall = data.get(self.overall_key)
        header = f"{case[-24:]}" + ("" if overall is None else f"  overall {float(convert_to_numpy(overall)[0]):.2f}")
        draw.text((2, 1), header, fill=(255, 255, 255))
        for value, probability in sorted(probabilities.items()):
            where = np.argwhere(labels[::-1] == int(value))
            if not len(where):
                continue
            row = int(where[:, 0].mean()) * self.scale + title
            colour = tuple(int(c) for c in VERTEBRA_COLOURS[int(value)])
            draw.text((2, max(title, row - 5)), f"C{int(value)} {probability:.2f}", fill=colour)
        save_rgb_png_atomic(self.output_path(case), np.asarray(picture), overwrite=self.overwrite)
