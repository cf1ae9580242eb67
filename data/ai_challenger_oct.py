"""Datalists of the AI Challenger 2018 retinal edema (OCT) data and the slice-level training dataset.

On-disk layout (the three challenge archives ``ai_challenger_fl2018_{trainingset,validationset,testset}.zip``
unpacked side by side; folder names as in ShawnBIT/AI-Challenger-Retinal-Edema-Segmentation's README and
``data/data_path/*.txt``, and in another team's loader that maps an image path to its label path)::

    root/
        Edema_trainingset/                      (70 cubes)
            original_images/<cube>.img/1.bmp ... 128.bmp
            label_images/<cube>_labelMark/1.bmp ... 128.bmp
        Edema_validationset/                    (15 cubes; also a ``groundtruth`` folder, not used here)
            original_images/...   label_images/...
        Edema_testset/                          (15 cubes, no labels)
            original_images/<cube>.img/...

with ``<cube>`` e.g. ``P0012_MacularCube512x128_8-7-2014_13-29-39_OS_sn27946_cube_z``; image and label slices share
their file names (slice number, from 1). Each split folder may also sit one level down, inside a folder named after
its archive (``root/ai_challenger_fl2018_trainingset/Edema_trainingset``).

:func:`oct_cube_datalist` lists one item per cube, ``{"case", "image", "label"}`` (folders), for
:class:`transforms.oct.LoadOCTCubed`. :class:`OCTSliceDataset` turns a dataset of loaded cubes (best a MONAI
``CacheDataset`` whose transforms load the cubes once) into one item per (cube, slice) for 2D training.
:func:`list_cubes` lists a folder of new cubes to predict; :func:`pack_bscans_as_cube` writes separate real B-scans
(e.g. the Duke DME samples) as a cube in the challenge layout (:func:`formats.oct.write_oct_cube`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.transforms import apply_transform
from torch.utils.data import Dataset

from data.listing import CaseList, scan_case_folder
from formats.errors import CaseReadError
from formats.oct import read_grey_bscan, write_oct_cube

__all__ = [
    "IMAGE_DIR",
    "IMAGE_SUFFIX",
    "LABEL_DIR",
    "LABEL_SUFFIX",
    "SPLIT_DIRS",
    "OCTSliceDataset",
    "list_cubes",
    "oct_cube_datalist",
    "pack_bscans_as_cube",
    "split_dir",
]

SPLIT_DIRS: dict[str, str] = {
    "training": "Edema_trainingset",
    "validation": "Edema_validationset",
    "test": "Edema_testset",
}
"""Challenge split -> its folder."""

_ARCHIVE_DIRS: dict[str, str] = {
    "training": "ai_challenger_fl2018_trainingset",
    "validation": "ai_challenger_fl2018_validationset",
    "test": "ai_challenger_fl2018_testset",
}
IMAGE_DIR = "original_images"
LABEL_DIR = "label_images"
IMAGE_SUFFIX = ".img"
"""Suffix of an image cube folder: ``<cube>.img``."""
LABEL_SUFFIX = "_labelMark"
"""Suffix of a label cube folder: ``<cube>_labelMark``."""


def split_dir(root: str | os.PathLike, split: str) -> Path:
    """The folder of ``split`` ("training", "validation", "test") under ``root`` (or under its archive folder)."""
    if split not in SPLIT_DIRS:
        raise ValueError(f"split must be one of {list(SPLIT_DIRS)}, got {split!r}")
    root = Path(root)
    candidates = [root / SPLIT_DIRS[split], root / _ARCHIVE_DIRS[split] / SPLIT_DIRS[split]]
    for folder in candidates:
        if (folder / IMAGE_DIR).is_dir():
            return folder
    raise CaseReadError(
        f"AI Challenger OCT {split} set not found: no {IMAGE_DIR}/ in {' or '.join(str(c) for c in candidates)}",
        path=root,
    )


def oct_cube_datalist(
    root: str | os.PathLike, split: str = "training", labels: bool | None = None
) -> list[dict[str, str]]:
    """One item per cube of ``split``: ``{"case": <cube>, "image": <image folder>[, "label": <label folder>]}``.

    Args:
        root: folder holding ``Edema_trainingset`` etc.
        split: "training", "validation" or "test".
        labels: require and list the label folders; default: yes for training and validation, no for test.

    Returns:
        items sorted by case id.

    Raises:
        CaseReadError: the split folder is missing; an image folder lacks the ``.img`` suffix; ``labels`` is set and
            a cube has no label folder, or a label folder has no image cube.
    """
    folder = split_dir(root, split)
    want_labels = split != "test" if labels is None else labels
    items = []
    for cube in sorted(p for p in (folder / IMAGE_DIR).iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not cube.name.endswith(IMAGE_SUFFIX):
            raise CaseReadError(f"{cube}: image cube folders are named <cube>{IMAGE_SUFFIX}", path=cube)
        case = cube.name[: -len(IMAGE_SUFFIX)]
        item = {"case": case, "image": str(cube)}
        if want_labels:
            label = folder / LABEL_DIR / f"{case}{LABEL_SUFFIX}"
            if not label.is_dir():
                raise CaseReadError(f"cube {case}: label folder {label} not found", path=label)
            item["label"] = str(label)
        items.append(item)
    if not items:
        raise CaseReadError(f"{folder / IMAGE_DIR}: no cube folders", path=folder / IMAGE_DIR)
    if want_labels:
        cases = {item["case"] for item in items}
        label_folders = [p.name for p in (folder / LABEL_DIR).iterdir() if p.is_dir()]
        orphans = sorted(name for name in label_folders if name.removesuffix(LABEL_SUFFIX) not in cases)
        if orphans:
            raise CaseReadError(f"{folder / LABEL_DIR}: label folders without image cube: {', '.join(orphans)}")
    return items


def _cube_entry(path: Path) -> str | None:
    """None for a cube folder of a folder of new cubes, else why the entry is no cube."""
    if not path.is_dir():
        return "a file, not a cube folder (one folder of B-scans per eye)"
    if path.name.endswith(LABEL_SUFFIX):
        return f"a label cube folder ({LABEL_SUFFIX}), not an image cube"
    return None


def list_cubes(images_dir: str | os.PathLike) -> CaseList:
    """One item per cube folder of ``images_dir`` (new cubes to predict): ``{"case": <cube>, "image": <folder>}``.

    Every non-hidden sub-folder is a cube, except ``<cube>_labelMark`` label folders; the case id is the folder name
    without a trailing ``.img`` (the challenge's ``original_images/<cube>.img``). A folder that turns out not to be
    a cube is reported when it is read (:class:`transforms.oct.LoadOCTCubed`), so that one bad cube does not stop a
    folder run. Every other entry (a file, a dangling symbolic link, a label folder, a hidden entry) is listed in the
    result's ``skipped`` with the reason (:mod:`data.listing`).

    Raises:
        CaseReadError: ``images_dir`` is not a folder or holds no sub-folder.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise CaseReadError(f"{images_dir}: folder of OCT cubes not found", path=images_dir)
    folders, skipped = scan_case_folder(images_dir, _cube_entry)
    if not folders:
        raise CaseReadError(f"{images_dir}: no cube folders (one folder of B-scans per eye)", path=images_dir)
    return CaseList(({"case": p.name.removesuffix(IMAGE_SUFFIX), "image": str(p)} for p in folders), skipped)


def pack_bscans_as_cube(
    images: Sequence[str | os.PathLike],
    image_folder: str | os.PathLike,
    masks: Sequence[str | os.PathLike] | None = None,
    label_folder: str | os.PathLike | None = None,
    label_code: int = 255,
) -> None:
    """Write separate B-scan files (PNG, ...) as one cube in the challenge layout, in the order given.

    Images are converted to 8-bit grey (RGB-encoded grey with ITU-R 601 luma). With ``masks`` (one per image, any
    value > 0 = lesion, as binary fluid masks with anti-aliased edges are) the label cube is written to
    ``label_folder`` with the lesion as ``label_code`` (255 REA, 191 SRF, 128 PED) and 0 elsewhere.

    Raises:
        CaseReadError: a file cannot be read, or the B-scans (or a mask and its image) differ in size.
        ValueError: masks without ``label_folder``, a mask count different from the image count, or a
            ``label_code`` that is no lesion code.
    """
    grey = [read_grey_bscan(p) for p in images]
    if not grey:
        raise ValueError("no B-scans given")
    shapes = {g.shape for g in grey}
    if len(shapes) > 1:
        raise CaseReadError(f"B-scans of different sizes cannot form a cube: {sorted(shapes)}", path=images[0])
    write_oct_cube(image_folder, np.stack(grey), ext=".png")
    if masks is None:
        return
    if label_folder is None or len(masks) != len(images):
        raise ValueError(f"need label_folder and one mask per image (got {len(masks)} masks for {len(images)} images)")
    if label_code not in (128, 191, 255):
        raise ValueError(f"label_code must be 255 (REA), 191 (SRF) or 128 (PED), got {label_code}")
    labels = []
    for mask_path, image in zip(masks, grey):
        mask = read_grey_bscan(mask_path)
        if mask.shape != image.shape:
            raise CaseReadError(f"{mask_path}: mask is {mask.shape}, its B-scan {image.shape}", path=mask_path)
        labels.append(np.where(mask > 0, label_code, 0).astype(np.uint8))
    write_oct_cube(label_folder, np.stack(labels), ext=".png")


class OCTSliceDataset(Dataset):
    """Every slice of every cube as one item: ``transform({**cube_item, slice_key: i})``.

    ``cubes`` yields loaded cubes (e.g. a ``monai.data.CacheDataset`` over :func:`oct_cube_datalist` with
    ``LoadOCTCubed`` + ``MapLabelValued``, all deterministic, so the cube arrays come straight from the cache without
    a copy); ``transform`` then works on one slice, typically ``StackNeighbourSlicesd`` (which picks slices
    i-1, i, i+1 and copies them) followed by intensity scaling, normalisation and the random flip. The cube item is
    copied shallowly, so the transforms must not modify the cube arrays in place (MONAI's do not).

    Args:
        cubes: a sequence (dataset) of dicts holding ``(S, H, W)`` cubes.
        transform: callable applied to each slice item (a MONAI ``Compose``), or None.
        image_key: key of a cube whose first dimension counts the slices.
        slice_key: key under which the slice index is passed to ``transform``.
        num_slices: slices per cube when all cubes have the same count; skips loading every cube once at
            construction to count them (a cube with fewer slices raises when its missing slices are read).
    """

    def __init__(
        self,
        cubes: Sequence[Mapping[str, Any]],
        transform: Callable | None = None,
        image_key: str = "image",
        slice_key: str = "slice",
        num_slices: int | None = None,
    ) -> None:
        self.cubes = cubes
        self.transform = transform
        self.image_key = image_key
        self.slice_key = slice_key
        counts = [num_slices] * len(cubes) if num_slices is not None else [self._count(i) for i in range(len(cubes))]
        self.index = [(c, s) for c, n in enumerate(counts) for s in range(n)]

    def _count(self, cube_index: int) -> int:
        return int(self.cubes[cube_index][self.image_key].shape[0])

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> Any:
        cube_index, slice_index = self.index[index]
        item = dict(self.cubes[cube_index])
        n = int(item[self.image_key].shape[0])
        if slice_index >= n:
            raise CaseReadError(f"cube {item.get('case', cube_index)}: has {n} slices, slice {slice_index} requested")
        item[self.slice_key] = slice_index
        return apply_transform(self.transform, item) if self.transform is not None else item
