"""Datalists of the CSV 2026 challenge layout, its class-balanced folds, and packing of 2-D images as cases.

Layout (organisers' README; ``train.txt`` from MAGNET's README)::

    root/images/NNNN.h5           long_img, trans_img (uint8 512 x 512)
    root/labels/NNNN_label.h5     long_mask, trans_mask (uint8 0/128/255), cls (0 low / 1 high risk)
    root/train.txt                optional: the labelled cases to use, one file name per line

Folds are computed (class-balanced, :func:`csv2026_folds`) unless a fold file is given
(:func:`read_fold_file`): MAGNET's ``split4.json`` (lyyek/CSV2026) or a MONAI datalist with a ``fold`` per item.

Labelled items are ``{"case": "0000", "image": ".../images/0000.h5", "label": ".../labels/0000_label.h5",
"cls": 0}`` (``cls`` read from the label file for stratification; the loader replaces it by the (1,) tensor
of the same value); unlabelled items are ``{"case", "image"}``.
"""

from __future__ import annotations

import json
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
    "read_fold_file",
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
    Mean Teacher pool, lyyek/CSV2026 train.py: all images outside the fold's lists). When ``root/train.txt``
    exists it selects the LABELLED cases (those it does not list are left out entirely, so that held-out cases
    never enter the unlabelled pool); it does not filter the unlabelled images, so a list of only the
    labelled training cases keeps the whole pool.

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
        selected = sorted(set(listed) & set(labels))
    else:
        selected = sorted(set(labels))
    labelled = [
        {"case": c, "image": images[c], "label": str(labels[c]), "cls": _read_cls(labels[c])} for c in selected
    ]
    unlabelled = [{"case": c, "image": images[c]} for c in cases if c not in labels]
    return labelled, unlabelled


def csv2026_folds(labelled: Sequence[dict], n_folds: int = 4, seed: int = 0) -> list[list[str]]:
    """Validation case names of each of ``n_folds`` folds, balanced by risk class (``item["cls"]``)."""
    return stratified_kfold([item["case"] for item in labelled], [item["cls"] for item in labelled], n_folds, seed)


def _case_name(entry: object, path: Path, where: str) -> str:
    """Case name of a fold-file entry: ``"0001"``, ``"0001.h5"`` or ``"images/0001.h5"`` give ``"0001"``."""
    if not isinstance(entry, str) or not entry.strip():
        raise ValueError(f"{path}: {where} must be a case name or an image path, got {entry!r}")
    name = Path(entry.strip()).name
    return name[: -len(".h5")] if name.endswith(".h5") else name


def read_fold_file(path: str | os.PathLike) -> list[tuple[list[str], list[str]]]:
    """The (train, validation) case names of each fold of a fold file, in fold order.

    Two forms are accepted:

    * MAGNET's ``split4.json`` (lyyek/CSV2026): ``{"splits": [{"fold": 0, "train": ["0001", ...],
      "val": [...]}, ...]}`` (other top-level keys such as ``n_folds`` are ignored). Train lists are taken as
      given.
    * a MONAI datalist with folds (as ``monai.apps.auto3dseg`` reads them): ``{"training": [{"image":
      "images/0001.h5", "fold": 0, ...}, ...]}``; fold ``k`` validates on the items of fold ``k`` and trains on
      all others.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not JSON, neither form, a fold used twice or missing, a case in the train and validation
            lists of one fold; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: fold file not found")
    try:
        content = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a JSON fold file ({error})") from error
    if isinstance(content, dict) and isinstance(content.get("splits"), list):
        by_fold: dict[int, tuple[list[str], list[str]]] = {}
        for index, split in enumerate(content["splits"]):
            if not isinstance(split, dict) or not {"train", "val"} <= set(split):
                raise ValueError(f"{path}: splits[{index}] needs 'train' and 'val' lists")
            fold = split.get("fold", index)
            if fold in by_fold:
                raise ValueError(f"{path}: fold {fold} is given twice")
            by_fold[fold] = tuple(  # type: ignore[assignment]
                [_case_name(e, path, f"splits[{index}].{key}") for e in split[key]] for key in ("train", "val")
            )
    elif isinstance(content, dict) and isinstance(content.get("training"), list):
        fold_of: dict[str, int] = {}
        for index, item in enumerate(content["training"]):
            if not isinstance(item, dict) or "fold" not in item or "image" not in item:
                raise ValueError(f"{path}: training[{index}] needs 'image' and 'fold'")
            image = item["image"][0] if isinstance(item["image"], list) and item["image"] else item["image"]
            fold_of[_case_name(image, path, f"training[{index}].image")] = int(item["fold"])
        by_fold = {
            k: ([c for c, f in fold_of.items() if f != k], [c for c, f in fold_of.items() if f == k])
            for k in set(fold_of.values())
        }
    else:
        raise ValueError(
            f"{path}: expected MAGNET's split4.json form {{'splits': [{{'train': [...], 'val': [...]}}]}} or a "
            "MONAI datalist {'training': [{'image': ..., 'fold': k}]}"
        )
    if sorted(by_fold) != list(range(len(by_fold))):
        raise ValueError(f"{path}: folds must be numbered 0..{len(by_fold) - 1}, got {sorted(by_fold)}")
    for fold, (train, val) in by_fold.items():
        both = sorted(set(train) & set(val))
        if both:
            raise ValueError(f"{path}: fold {fold} has cases in both its train and val lists: {both[:10]}")
    return [by_fold[k] for k in range(len(by_fold))]


def csv2026_fold_datalists(
    labelled: Sequence[dict],
    fold: int,
    n_folds: int = 4,
    seed: int = 0,
    fold_file: str | os.PathLike | None = None,
) -> tuple[list[dict], list[dict]]:
    """The (train, validation) labelled items of ``fold``: of :func:`csv2026_folds` (``n_folds``, ``seed``), or
    of ``fold_file`` when given (:func:`read_fold_file`; ``n_folds`` and ``seed`` are then unused).

    Raises:
        ValueError: ``fold`` is not a fold of the fold file, or the file names cases that are not labelled.
    """
    if fold_file is None:
        train_ids, val_ids = train_val_ids(csv2026_folds(labelled, n_folds, seed), fold)
    else:
        folds = read_fold_file(fold_file)
        if not 0 <= fold < len(folds):
            raise ValueError(f"{fold_file}: has folds 0..{len(folds) - 1}, fold {fold} was asked for")
        train_ids, val_ids = folds[fold]
        unknown = sorted((set(train_ids) | set(val_ids)) - {i["case"] for i in labelled})
        if unknown:
            raise ValueError(f"{fold_file}: fold {fold} lists cases that are not labelled cases: {unknown[:10]}")
    train_set, val_set = set(train_ids), set(val_ids)
    return [i for i in labelled if i["case"] in train_set], [i for i in labelled if i["case"] in val_set]


def labelled_cases(
    root: str | os.PathLike,
    fold: int | None = None,
    n_folds: int = 4,
    seed: int = 0,
    fold_file: str | os.PathLike | None = None,
) -> list[dict]:
    """The labelled items of ``root`` to evaluate on: the validation cases of ``fold`` (computed, or from
    ``fold_file``), or all when ``fold`` is ``None`` (a held-out test folder)."""
    labelled, _ = load_csv2026_datalist(root)
    if fold is None:
        return labelled
    return csv2026_fold_datalists(labelled, fold, n_folds, seed, fold_file)[1]


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
