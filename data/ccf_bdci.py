"""Datalists of the CCF BDCI 2021 ULSEG (angioma) layout and its lesion-size-stratified k-fold split.

On-disk layout (the challenge's, as chaineypung/CCF-BDCI-2021-ULSEG-Rank1st expects it)::

    root/
        train_data/img/<ID>.png       RGB PNG, identical channels (215 images)
        train_data/label/<ID>.png     8-bit {0, 255} mask of the same name, sometimes a few px off in size
        train_data/train.csv          ID,CATE,size: file name, a random 0/1, lesion area in px (255-pixels)
        test_data/img/<ID>.png        (107 images, no masks)

Items are ``{"case": <ID without .png>, "image": path, "label": path}`` (no label for the test set), sorted by
case (numerically where the names are numbers). The k folds keep the lesion-size distribution: the cases are
grouped into size tertiles computed from the data (:func:`data.splits.quantile_strata`) and each tertile is dealt
evenly over the folds (:func:`data.splits.stratified_kfold`), as the rank-1 solution does. Its README quotes
thresholds of about 3200 and 7200 px, but the tertiles of its own ``train.csv`` are 12097 and 23493 px; the code
computes them from the data, which is what is done here. Its within-tertile split is scikit-learn's
``StratifiedKFold`` on the random CATE, so the original's exact fold membership is not reproduced (a random
split within tertiles, seeded, is). Folds are numbered from 0.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from data.listing import CaseList, scan_case_folder
from data.splits import case_sort_key, quantile_strata, stratified_kfold, train_val_ids
from formats.errors import CaseReadError
from formats.png import read_mask_png

__all__ = [
    "TEST_IMAGE_DIR",
    "TRAIN_CSV",
    "TRAIN_IMAGE_DIR",
    "TRAIN_LABEL_DIR",
    "fold_datalists",
    "image_folder_datalist",
    "inference_datalist",
    "lesion_sizes",
    "read_train_csv",
    "size_folds",
    "train_datalist",
]

TRAIN_IMAGE_DIR = "train_data/img"
TRAIN_LABEL_DIR = "train_data/label"
TRAIN_CSV = "train_data/train.csv"
TEST_IMAGE_DIR = "test_data/img"


def _pngs(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise CaseReadError(f"CCF BDCI folder not found: {folder}", path=folder)
    return {p.stem: p for p in folder.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith(".")}


def _refuse_orphans(files: dict[str, Path], partners: dict[str, Path], problem: str) -> None:
    orphans = sorted(set(files) - set(partners), key=case_sort_key)
    if orphans:
        listed = ", ".join(str(files[c]) for c in orphans[:5]) + (" ..." if len(orphans) > 5 else "")
        raise CaseReadError(f"{len(orphans)} {problem}: {listed}", path=files[orphans[0]])


def read_train_csv(path: str | os.PathLike) -> dict[str, int | None]:
    """``train.csv`` as case -> lesion size in px (``None`` where the size cell is empty).

    Raises:
        CaseReadError: the file lacks the ``ID`` or ``size`` column, or a size is not a whole number.
    """
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"ID", "size"} <= set(reader.fieldnames):
            raise CaseReadError(f"{path}: expected the columns ID,CATE,size, got {reader.fieldnames}", path=path)
        sizes: dict[str, int | None] = {}
        for line, row in enumerate(reader, start=2):
            case = Path(row["ID"].strip()).stem
            cell = (row["size"] or "").strip()
            try:
                sizes[case] = int(float(cell)) if cell else None
            except ValueError as error:
                raise CaseReadError(f"{path}, line {line}: size {cell!r} is not a number", path=path) from error
    return sizes


def train_datalist(root: str | os.PathLike) -> list[dict[str, str]]:
    """One item ``{"case", "image", "label"}`` per training image of ``root`` (see the module doc).

    Rows of ``train.csv`` whose image is absent are ignored (the CSV lists all 215 challenge cases).

    Raises:
        CaseReadError: a folder is missing, or a mask has no image or an image has no mask (the message names
            the files).
    """
    root = Path(root)
    images, labels = _pngs(root / TRAIN_IMAGE_DIR), _pngs(root / TRAIN_LABEL_DIR)
    _refuse_orphans(labels, images, "masks without a matching image")
    _refuse_orphans(images, labels, "images without a matching mask")
    return [
        {"case": case, "image": str(images[case]), "label": str(labels[case])}
        for case in sorted(images, key=case_sort_key)
    ]


def inference_datalist(root: str | os.PathLike) -> list[dict[str, str]]:
    """One item ``{"case", "image"}`` per image of ``root/test_data/img`` (the challenge's test set, to predict)."""
    return image_folder_datalist(Path(root) / TEST_IMAGE_DIR)


def _png_case_entry(path: Path) -> str | None:
    """None for an image of a folder of new images, else why the entry is no case."""
    if path.is_dir():
        return "a folder, not a .png file" if path.suffix.lower() == ".png" else "a folder"
    if not path.is_file():
        return "not a regular file"
    if path.suffix.lower() != ".png":
        return f"not a .png file (extension {path.suffix or 'none'!r})"
    return None


def image_folder_datalist(folder: str | os.PathLike) -> CaseList:
    """One item ``{"case", "image"}`` per ``*.png`` file of ``folder`` (new images to predict), the case being the
    file name without ``.png``; files are not opened here, so an unreadable one fails (by name) when it is read.
    Every other entry (a folder named ``*.png``, a dangling symbolic link, another extension, a hidden file) is
    listed in the result's ``skipped`` with the reason (:mod:`data.listing`).

    Raises:
        CaseReadError: ``folder`` does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CaseReadError(f"CCF BDCI folder not found: {folder}", path=folder)
    paths, skipped = scan_case_folder(folder, _png_case_entry)
    images = {p.stem: p for p in paths}
    return CaseList(
        ({"case": case, "image": str(images[case])} for case in sorted(images, key=case_sort_key)), skipped
    )


def lesion_sizes(root: str | os.PathLike, items: Sequence[Mapping[str, str]]) -> list[int]:
    """Lesion area (px) of each item: from ``train.csv`` when it has the case's size, else counted in its mask."""
    csv_path = Path(root) / TRAIN_CSV
    known = read_train_csv(csv_path) if csv_path.is_file() else {}
    sizes = []
    for item in items:
        size = known.get(item["case"])
        sizes.append(int(read_mask_png(item["label"]).sum()) if size is None else size)
    return sizes


def size_folds(
    cases: Sequence[str], sizes: Sequence[float], n_folds: int = 5, seed: int = 2020, n_groups: int = 3
) -> list[list[str]]:
    """Validation cases of each fold, every lesion-size group (tertiles by default) spread evenly over the folds."""
    if len(cases) != len(sizes):
        raise ValueError(f"got {len(cases)} cases but {len(sizes)} sizes")
    return stratified_kfold(cases, quantile_strata(sizes, n_groups), n_folds, seed)


def fold_datalists(
    root: str | os.PathLike, fold: int, n_folds: int = 5, seed: int = 2020
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """``(train, val)`` items of fold ``fold`` (0-based) of the size-stratified ``n_folds``-fold split of ``root``."""
    items = train_datalist(root)
    folds = size_folds([i["case"] for i in items], lesion_sizes(root, items), n_folds, seed)
    train_ids, val_ids = train_val_ids(folds, fold)
    by_case = {i["case"]: i for i in items}
    return (
        [by_case[c] for c in sorted(train_ids, key=case_sort_key)],
        [by_case[c] for c in sorted(val_ids, key=case_sort_key)],
    )
