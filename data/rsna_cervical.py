"""Datalists of the RSNA 2022 Cervical Spine Fracture Detection layout.

Layout (Kaggle competition data)::

    root/train.csv                              StudyInstanceUID,patient_overall,C1,...,C7 (0/1)
    root/train_images/<StudyInstanceUID>/<n>.dcm one axial CT series per study
    root/segmentations/<StudyInstanceUID>.nii    vertebra label maps for part of the studies
    root/test_images/<StudyInstanceUID>/<n>.dcm  studies to predict

Training items are ``{"study": uid, "image": series folder, "label": [patient_overall, C1, ..., C7]}`` plus
``"segmentation": path`` when the study has a label map. Entries that cannot be used (a label row without its
series, a series without a label row, an empty folder, a malformed or inconsistent row, a label map without a
study) are left out and returned as ``{"entry": ..., "reason": ...}`` so that a run says what it skipped.
:func:`read_segmentation` reads a label map onto its study's grid with the competition's classes.

Cross-validation as in the reference solution (selimsef/rsna_cervical_fracture, ``create_seg_folds.py`` and
``create_cls_folds.py``): :func:`segmentation_folds` (stage 1, segmentation) is scikit-learn's shuffled 8-fold
``KFold`` (seed 777) over the segmented studies in the sorted order of their label-map file names, which
reproduces the reference's ``seg_folds.csv`` exactly; :func:`classification_folds` (stage 2) is
``StratifiedKFold`` (8 folds, seed 777) on ``patient_overall`` over the studies in ``train.csv`` row order, as the
reference made ``folds.csv`` (its published file lists 2,008 of the 2,019 studies, dropped after splitting).
:func:`fold_items` picks the training and validation items of any fold.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data.splits import sklearn_kfold, sklearn_stratified_kfold, train_val_ids
from formats.dicom import read_label_map

__all__ = [
    "LABEL_COLUMNS",
    "SEGMENTATION_DIR",
    "TEST_IMAGE_DIR",
    "TRAIN_CSV",
    "TRAIN_IMAGE_DIR",
    "VERTEBRAE",
    "classification_folds",
    "fold_items",
    "label_prevalence",
    "list_studies",
    "with_vertebra_maps",
    "load_rsna_cervical_datalist",
    "load_rsna_cervical_test_datalist",
    "read_segmentation",
    "read_train_csv",
    "segmentation_folds",
]

logger = logging.getLogger(__name__)

TRAIN_CSV, TRAIN_IMAGE_DIR, TEST_IMAGE_DIR, SEGMENTATION_DIR = "train.csv", "train_images", "test_images", "segmentations"
VERTEBRAE = tuple(f"C{i}" for i in range(1, 8))
LABEL_COLUMNS = ("patient_overall", *VERTEBRAE)
NUM_CERVICAL = len(VERTEBRAE)
NUM_FOLDS, FOLD_SEED = 8, 777


def _skip(skipped: list[dict], entry: str, reason: str) -> None:
    skipped.append({"entry": entry, "reason": reason})
    logger.warning("skipped %s: %s", entry, reason)


def read_train_csv(path: str | os.PathLike) -> tuple[dict[str, list[int]], list[dict]]:
    """Labels per study from ``train.csv``: ``{uid: [patient_overall, C1..C7]}`` and the skipped rows.

    A row is skipped when a value is not 0/1, when ``patient_overall`` is not the maximum of C1-C7 (the
    competition defines it as "any vertebra fractured"), or when the study was already listed.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: a required column is missing (the message lists the file's header).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: train.csv not found")
    labels: dict[str, list[int]] = {}
    skipped: list[dict] = []
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        missing = [c for c in ("StudyInstanceUID", *LABEL_COLUMNS) if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: columns {missing} missing; header is {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            uid = (row["StudyInstanceUID"] or "").strip()
            entry = f"{path.name} line {line} ({uid or 'no StudyInstanceUID'})"
            values = [(row[c] or "").strip() for c in LABEL_COLUMNS]
            if not uid:
                _skip(skipped, entry, "empty StudyInstanceUID")
            elif any(v not in ("0", "1") for v in values):
                _skip(skipped, entry, f"labels must be 0 or 1, got {dict(zip(LABEL_COLUMNS, values))}")
            elif uid in labels:
                _skip(skipped, entry, "study listed twice (first row kept)")
            else:
                numbers = [int(v) for v in values]
                if numbers[0] != max(numbers[1:]):
                    _skip(skipped, entry, f"patient_overall {numbers[0]} disagrees with C1-C7 {numbers[1:]}")
                else:
                    labels[uid] = numbers
    return labels, skipped


def _series_folders(folder: Path, skipped: list[dict]) -> dict[str, Path]:
    """Study folders of ``folder`` holding at least one ``.dcm`` file."""
    studies = {}
    for study in sorted(p for p in folder.iterdir() if p.is_dir()):
        if any(study.glob("*.dcm")):
            studies[study.name] = study
        else:
            _skip(skipped, str(study), "no .dcm files")
    return studies


def load_rsna_cervical_datalist(root: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """The training items of an RSNA cervical spine folder (sorted by study) and the skipped entries.

    Raises:
        FileNotFoundError: ``root/train_images`` or ``root/train.csv`` is missing.
        ValueError: ``train.csv`` lacks a required column.
    """
    root = Path(root)
    images_dir = root / TRAIN_IMAGE_DIR
    if not images_dir.is_dir():
        raise FileNotFoundError(f"{root}: no '{TRAIN_IMAGE_DIR}/' folder; expected the RSNA cervical spine layout")
    labels, skipped = read_train_csv(root / TRAIN_CSV)
    studies = _series_folders(images_dir, skipped)
    segmentations: dict[str, Path] = {}
    seg_dir = root / SEGMENTATION_DIR
    if seg_dir.is_dir():
        for path in sorted(seg_dir.glob("*.nii*")):
            uid = path.name.split(".nii")[0]
            if uid in studies:
                segmentations[uid] = path
            else:
                _skip(skipped, str(path), "label map without a study in train_images/")
    for uid in sorted(set(labels) - set(studies)):
        _skip(skipped, f"{TRAIN_CSV} {uid}", f"no series folder {images_dir / uid} with .dcm files")
    items = []
    for uid, folder in studies.items():
        if uid not in labels:
            _skip(skipped, str(folder), f"no usable row in {TRAIN_CSV}")
            continue
        item = {"study": uid, "image": str(folder), "label": labels[uid]}
        if uid in segmentations:
            item["segmentation"] = str(segmentations[uid])
        items.append(item)
    return items, skipped


def load_rsna_cervical_test_datalist(root: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """``[{"study", "image"}]`` for every study of ``root/test_images`` and the skipped (empty) folders.

    Raises:
        FileNotFoundError: ``root/test_images`` is missing.
    """
    folder = Path(root) / TEST_IMAGE_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"{root}: no '{TEST_IMAGE_DIR}/' folder")
    skipped: list[dict] = []
    return [{"study": uid, "image": str(p)} for uid, p in _series_folders(folder, skipped).items()], skipped


def list_studies(folder: str | os.PathLike) -> list[dict]:
    """``[{"study": name, "image": path}]`` for every sub-folder of ``folder`` (one DICOM series each), sorted.

    Inference input: an empty or unreadable folder is kept, so that the run reports it by name.

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder of DICOM studies not found")
    return [{"study": p.name, "image": str(p)} for p in sorted(folder.iterdir()) if p.is_dir()]


def read_segmentation(path: str | os.PathLike, image_affine: np.ndarray, image_shape: Sequence[int]) -> np.ndarray:
    """An RSNA label map on its study's grid (:func:`formats.dicom.read_label_map`) with the competition's
    classes: 0 background, 1-7 = C1-C7; thoracic labels (> 7) become background, as in the reference solution."""
    labels = read_label_map(path, image_affine, image_shape)
    labels[labels > NUM_CERVICAL] = 0
    return labels


def segmentation_folds(items: Sequence[dict], n_folds: int = NUM_FOLDS, seed: int = FOLD_SEED) -> list[list[str]]:
    """Stage-1 folds: the studies (sorted) of each validation fold of ``KFold`` over the segmented ``items``.

    The studies enter the split in the sorted order of their label-map FILE names, as the reference lists
    ``segmentations/`` (the order decides which study lands in which fold).
    """
    segmented = sorted((Path(item["segmentation"]).name, item["study"]) for item in items if item.get("segmentation"))
    return sklearn_kfold([study for _, study in segmented], n_folds, seed)


def classification_folds(
    train_csv: str | os.PathLike, n_folds: int = NUM_FOLDS, seed: int = FOLD_SEED
) -> list[list[str]]:
    """Stage-2 folds: the studies (sorted) of each fold of ``StratifiedKFold`` on ``patient_overall``.

    The studies enter in ``train.csv`` row order (rows :func:`read_train_csv` skips are left out, which shifts
    the split: the competition's file has none).
    """
    labels, _ = read_train_csv(train_csv)
    studies = list(labels)
    return sklearn_stratified_kfold(studies, [labels[s][0] for s in studies], n_folds, seed)


def fold_items(items: Sequence[dict], folds: Sequence[Sequence[str]], fold: int) -> tuple[list[dict], list[dict]]:
    """The ``items`` of the training folds and of validation fold ``fold`` (items of no fold are left out)."""
    train, val = train_val_ids(folds, fold)
    train_set, val_set = set(train), set(val)
    return [i for i in items if i["study"] in train_set], [i for i in items if i["study"] in val_set]


def label_prevalence(train_csv: str | os.PathLike) -> list[float]:
    """The fraction of positive studies of each target ``[patient_overall, C1..C7]`` in ``train_csv``: the
    "all-prevalence" prior that an uninformed model would predict (the evaluation's baseline, and the prediction
    for a study in which no vertebra is found)."""
    labels, _ = read_train_csv(train_csv)
    if not labels:
        raise ValueError(f"{train_csv}: no usable row to compute the prevalence from")
    return [float(v) for v in np.mean(np.array(list(labels.values()), dtype=np.float64), axis=0)]


def with_vertebra_maps(
    items: Sequence[dict],
    prediction_dir: str | os.PathLike,
    per_vertebra: bool = False,
    min_voxels: int = 0,
    suffix: str = "_vertebrae",
    key: str = "vertebrae",
) -> list[dict]:
    """Stage-2 items: each study's item with ``key`` = its stage-1 label map ``<dir>/<uid><suffix>.nii.gz``.

    ``per_vertebra=True`` (validation) gives one item per vertebra with more than ``min_voxels`` voxels in the
    map's metadata ``<uid><suffix>.json``, with ``"vertebra"`` = its label value. A study without a prediction
    or without any such vertebra is left out with a warning.

    Raises:
        ValueError: none of the ``items`` has a usable label map (stage 1 missing or found nothing).
    """
    folder = Path(prediction_dir)
    result = []
    for item in items:
        uid = item["study"]
        path, meta = folder / f"{uid}{suffix}.nii.gz", folder / f"{uid}{suffix}.json"
        if not path.is_file() or not meta.is_file():
            logger.warning("skipped %s: no stage-1 prediction %s (and %s)", uid, path, meta.name)
            continue
        voxels = json.loads(meta.read_text())["voxels"]
        found = sorted(int(v) for v, n in voxels.items() if n > min_voxels)
        if not found:
            logger.warning("skipped %s: no vertebra with more than %d voxels in %s", uid, min_voxels, path)
            continue
        base = {**item, key: str(path)}
        result += [{**base, "vertebra": v} for v in found] if per_vertebra else [base]
    if items and not result:
        raise ValueError(f"{folder}: no stage-1 label map with a vertebra of more than {min_voxels} voxels for any of "
                         f"{len(items)} studies; run (or train) stage 1 first")
    return result
