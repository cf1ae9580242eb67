"""Datalists of the CSV 2026 challenge layout, its class-balanced folds, and packing of 2-D images as cases.

Layout (organisers' README; ``train.txt`` from MAGNET's README)::

    root/images/NNNN.h5           long_img, trans_img (uint8 512 x 512)
    root/labels/NNNN_label.h5     long_mask, trans_mask (uint8 0/128/255), cls (0 low / 1 high risk)
    root/train.txt                optional: the training cases, one file name per line

Labelled items are ``{"case": "0000", "image": ".../images/0000.h5", "label": ".../labels/0000_label.h5",
"cls": 0}`` (``cls`` read from the label file for stratification; the loader replaces it by the (1,) tensor
of the same value); unlabelled items are ``{"case", "image"}``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from data.listing import CaseList, scan_case_folder
from data.splits import stratified_kfold, train_val_ids
from formats.errors import CaseReadError
from formats.h5 import read_h5_dataset, write_h5_atomic

__all__ = [
    "labelled_cases",
    "csv2026_fold_datalists",
    "csv2026_folds",
    "letterbox_to_square",
    "list_cases",
    "load_csv2026_datalist",
    "pack_png_as_csv2026_case",
    "read_case_list",
]

LABEL_SUFFIX = "_label"


def _h5_case_entry(path: Path) -> str | None:
    """None for an image case file of an inference folder, else why the entry is no case."""
    if path.is_dir():
        return "a folder, not an .h5 file" if path.suffix.lower() == ".h5" else "a folder"
    if not path.is_file():
        return "not a regular file"
    if path.suffix.lower() != ".h5":
        return f"not an .h5 file (extension {path.suffix or 'none'!r})"
    if path.stem.endswith(LABEL_SUFFIX):
        return f"a label file ({LABEL_SUFFIX}.h5), not an image case"
    return None


def list_cases(images_dir: str | os.PathLike) -> CaseList:
    """``[{"case": stem, "image": path}]`` for every ``*.h5`` file in ``images_dir``, sorted by name (inference).

    Every other entry (a folder named ``*.h5``, a dangling symbolic link, another extension, a ``*_label.h5``
    label file, a hidden file) is listed in the result's ``skipped`` with the reason (:mod:`data.listing`).

    Raises:
        FileNotFoundError: ``images_dir`` is not a folder or holds no ``.h5`` file (the message lists what was
            skipped).
    """
    folder = Path(images_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder of .h5 cases")
    paths, skipped = scan_case_folder(folder, _h5_case_entry)
    if not paths:
        detail = "; ".join(f"{Path(s['entry']).name}: {s['reason']}" for s in skipped[:5])
        raise FileNotFoundError(f"{folder}: no .h5 files found" + (f" (skipped {detail})" if detail else ""))
    return CaseList(({"case": p.stem, "image": str(p)} for p in paths), skipped)


def read_case_list(path: str | os.PathLike) -> list[str]:
    """Case names listed in a text file, one per line (``0000``, ``0000.h5``, ``images/0000.h5`` all give
    ``0000``; a ``_label`` suffix is dropped; blank lines and ``#`` comments are skipped)."""
    names = []
    for line in Path(path).read_text().splitlines():
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        name = Path(entry).name
        name = name[: -len(".h5")] if name.endswith(".h5") else name
        names.append(name[: -len(LABEL_SUFFIX)] if name.endswith(LABEL_SUFFIX) else name)
    return names


def _read_cls(label_path: Path) -> int:
    try:
        with h5py.File(label_path, "r") as file:
            value = read_h5_dataset(file, label_path, "cls", expected_ndim=0)
    except OSError as error:
        raise CaseReadError(f"{label_path}: not a readable HDF5 file ({error})", path=label_path) from error
    cls = float(value[0])
    if cls not in (0.0, 1.0):
        raise CaseReadError(f"{label_path}: 'cls' must be 0 or 1, got {cls:g}", path=label_path, key="cls")
    return int(cls)


def load_csv2026_datalist(root: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """The labelled and unlabelled items of a CSV 2026 training folder, each sorted by case name.

    A case is labelled when ``labels/{case}_label.h5`` exists; every other image is unlabelled (MAGNET's
    Mean Teacher pool). When ``root/train.txt`` exists only the cases it lists are used.

    Raises:
        FileNotFoundError: ``root/images`` or ``root/labels`` is missing, a case listed in ``train.txt`` has
            no image, or a label file has no image.
        CaseReadError: a label file's ``cls`` is unreadable or not 0/1.
    """
    root = Path(root)
    images_dir, labels_dir = root / "images", root / "labels"
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"{root}: no '{folder.name}/' folder; expected the CSV 2026 training layout")
    images = {item["case"]: item["image"] for item in list_cases(images_dir)}
    labels = {p.name[: -len(f"{LABEL_SUFFIX}.h5")]: p for p in labels_dir.glob(f"*{LABEL_SUFFIX}.h5")}
    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise FileNotFoundError(f"{labels_dir}: label files without an image in {images_dir}: {orphans[:10]}")
    cases = sorted(images)
    train_list = root / "train.txt"
    if train_list.is_file():
        listed = read_case_list(train_list)
        missing = sorted(set(listed) - set(images))
        if missing:
            raise FileNotFoundError(f"{train_list}: listed cases without an image in {images_dir}: {missing[:10]}")
        cases = sorted(set(listed))
    labelled = [
        {"case": c, "image": images[c], "label": str(labels[c]), "cls": _read_cls(labels[c])}
        for c in cases
        if c in labels
    ]
    unlabelled = [{"case": c, "image": images[c]} for c in cases if c not in labels]
    return labelled, unlabelled


def csv2026_folds(labelled: Sequence[dict], n_folds: int = 4, seed: int = 0) -> list[list[str]]:
    """Validation case names of each of ``n_folds`` folds, balanced by risk class (``item["cls"]``)."""
    return stratified_kfold([item["case"] for item in labelled], [item["cls"] for item in labelled], n_folds, seed)


def csv2026_fold_datalists(
    labelled: Sequence[dict], fold: int, n_folds: int = 4, seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """The (train, validation) labelled items of ``fold`` of :func:`csv2026_folds`."""
    train_ids, val_ids = train_val_ids(csv2026_folds(labelled, n_folds, seed), fold)
    train_set, val_set = set(train_ids), set(val_ids)
    return [i for i in labelled if i["case"] in train_set], [i for i in labelled if i["case"] in val_set]


def labelled_cases(
    root: str | os.PathLike, fold: int | None = None, n_folds: int = 4, seed: int = 0
) -> list[dict]:
    """The labelled items of ``root`` to evaluate on: the validation cases of ``fold``, or all when ``fold`` is
    ``None`` (a held-out test folder)."""
    labelled, _ = load_csv2026_datalist(root)
    if fold is None:
        return labelled
    return csv2026_fold_datalists(labelled, fold, n_folds, seed)[1]


def letterbox_to_square(image: np.ndarray, size: int = 512, nearest: bool = False) -> np.ndarray:
    """The organisers' preprocessing: resize the longer side to ``size`` keeping the aspect ratio, centre,
    zero-pad symmetrically (the odd pixel after) to ``size`` x ``size``.

    Args:
        image: a 2-D uint8 array.
        size: output side.
        nearest: nearest-neighbour resampling (masks); bilinear otherwise.
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {image.shape}")
    height, width = image.shape
    ratio = size / max(height, width)
    new_h, new_w = max(1, round(height * ratio)), max(1, round(width * ratio))
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), resample=resample))
    out = np.zeros((size, size), dtype=image.dtype)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = resized
    return out


def pack_png_as_csv2026_case(png_path: str | os.PathLike, out_path: str | os.PathLike, size: int = 512) -> None:
    """Write a 2-D image file (PNG, ...) as a CSV 2026 image case: grey uint8 (RGB-encoded grey is converted
    with ITU-R 601 luma), letterboxed to ``size`` (:func:`letterbox_to_square`), stored as both ``long_img``
    and ``trans_img`` of ``out_path``.

    Raises:
        CaseReadError: the file cannot be read as an image.
    """
    try:
        with Image.open(png_path) as image:
            grey = np.asarray(image.convert("L"))
    except OSError as error:
        raise CaseReadError(f"{png_path}: not a readable image ({error})", path=png_path) from error
    packed = letterbox_to_square(grey, size)
    write_h5_atomic(out_path, {"long_img": packed, "trans_img": packed})
