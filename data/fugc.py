"""Datalist, validation split and case reader of the FUGC 2025 layout (ISBI 2025 fetal cervix segmentation).

On-disk layout, as the challenge ships it (codabench competition 4781, dataset zenodo 14305302)::

    root/
        images/<name>.png     3-channel transvaginal ultrasound, 336 x 544 (H x W) in the challenge
        labels/<name>.png     8-bit class indices of the same size: 0 background, 1 anterior lip, 2 posterior lip

An image with a label file of the same name is *labelled*, an image without one *unlabelled* (the training set
holds 50 labelled and 450 unlabelled images). Entries that are not cases (a label without its image, a non-PNG
file, a sub-folder, a hidden file) are not fatal: they are left out and reported in ``"skipped"`` with the
reason, so that one stray file does not stop a run. Files are not opened when the list is made; an unusable
image or label fails, by name, when :func:`read_fugc_case` reads it.

Validation split: the 7th-place solution (apuomline/FUGC2025_7th_solution) held 10 of the 50 labelled images
out for validation. :func:`fugc_split` draws ``num_validation`` labelled images with a seeded generator, or takes
the split from a JSON file ``{"training": [names], "validation": [names]}`` (names with or without ``.png``).

Items are ``{"case": <name without .png>, "image": path[, "label": path]}``, sorted by case (numerically where
the names are numbers).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from data.splits import case_sort_key
from formats.errors import CaseReadError
from formats.png import read_grey_png, read_rgb_png

__all__ = [
    "IMAGE_DIR",
    "LABEL_DIR",
    "NUM_CLASSES",
    "fugc_datalist",
    "fugc_split",
    "read_fugc_case",
    "read_fugc_image",
    "read_fugc_label",
    "read_split_file",
]

logger = logging.getLogger(__name__)

IMAGE_DIR = "images"
LABEL_DIR = "labels"
#: background, anterior lip, posterior lip
NUM_CLASSES = 3


def read_fugc_image(path: str | os.PathLike) -> np.ndarray:
    """The image ``(3, H, W)`` uint8 (channel first, as the challenge's ``predict(X)`` receives it).

    Grey PNGs are repeated to three channels, an opaque alpha channel is dropped (see
    :func:`formats.png.read_rgb_png`).

    Raises:
        CaseReadError: the file is missing, unreadable, not 8-bit, or has a transparent alpha channel.
    """
    return np.ascontiguousarray(read_rgb_png(path).transpose(2, 0, 1))


def read_fugc_label(path: str | os.PathLike) -> np.ndarray:
    """The class-index map ``(H, W)`` uint8 of a label (or predicted) PNG with values in 0..2.

    Raises:
        CaseReadError: the file is missing or unreadable, is not an 8-bit grey PNG, or holds values outside
            0..2 (e.g. a {0, 255} mask or a colour-coded label).
    """
    label = read_grey_png(path)
    values = np.unique(label)
    if values.size and values[-1] >= NUM_CLASSES:
        bad = values[values >= NUM_CLASSES]
        raise CaseReadError(
            f"{path}: label values {bad[:10].tolist()}{' ...' if bad.size > 10 else ''} are outside 0..2 "
            "(0 background, 1 anterior lip, 2 posterior lip)",
            path=path,
        )
    return label


def read_fugc_case(
    image_path: str | os.PathLike, label_path: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(image (3, H, W) uint8, label (H, W) uint8 or None)`` of one case.

    Raises:
        CaseReadError: see :func:`read_fugc_image` and :func:`read_fugc_label`, or the label's size differs
            from its image's (the challenge's labels match their images exactly, so a mismatch means the wrong
            file, not a resizing to undo).
    """
    image = read_fugc_image(image_path)
    if label_path is None:
        return image, None
    label = read_fugc_label(label_path)
    if label.shape != image.shape[1:]:
        raise CaseReadError(
            f"{label_path}: label size {label.shape} (H, W) differs from its image's {image.shape[1:]} "
            f"({image_path})",
            path=label_path,
        )
    return image, label


def _scan(folder: Path, skipped: dict[str, str]) -> dict[str, Path]:
    """Case name -> PNG path of ``folder``; everything else goes into ``skipped`` with the reason."""
    pngs = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            skipped[str(path)] = "hidden file"
        elif path.is_dir():
            skipped[str(path)] = "a folder, not a PNG file"
        elif path.suffix.lower() != ".png":
            skipped[str(path)] = f"not a PNG file (suffix {path.suffix or 'none'!r})"
        elif path.stem in pngs:
            skipped[str(path)] = f"the same case name as {pngs[path.stem]}"
        else:
            pngs[path.stem] = path
    return pngs


def fugc_datalist(root: str | os.PathLike) -> dict[str, Any]:
    """The cases of a FUGC folder (see the module doc).

    Returns:
        ``{"labelled": [items with "label"], "unlabelled": [items without], "skipped": {path: reason}}``.
        A folder without ``labels/`` (the test set) has only unlabelled items.

    Raises:
        CaseReadError: ``root/images`` does not exist.
    """
    root = Path(root)
    image_dir, label_dir = root / IMAGE_DIR, root / LABEL_DIR
    if not image_dir.is_dir():
        raise CaseReadError(f"FUGC image folder not found: {image_dir}", path=image_dir)
    skipped: dict[str, str] = {}
    images = _scan(image_dir, skipped)
    labels = _scan(label_dir, skipped) if label_dir.is_dir() else {}
    for case in sorted(set(labels) - set(images), key=case_sort_key):
        skipped[str(labels[case])] = f"label without an image (no {image_dir / (case + '.png')})"
    for path, reason in skipped.items():
        logger.warning("skipped %s: %s", path, reason)
    labelled, unlabelled = [], []
    for case in sorted(images, key=case_sort_key):
        item = {"case": case, "image": str(images[case])}
        if case in labels:
            labelled.append({**item, "label": str(labels[case])})
        else:
            unlabelled.append(item)
    return {"labelled": labelled, "unlabelled": unlabelled, "skipped": skipped}


def read_split_file(path: str | os.PathLike) -> dict[str, list[str]]:
    """The case names of a split file ``{"training": [...], "validation": [...]}`` (``.png`` suffixes dropped).

    Raises:
        CaseReadError: the file is not JSON, lacks either list, holds a non-string name, or names a case twice.
    """
    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CaseReadError(f"{path}: not a readable JSON split file ({error})", path=path) from error
    if not isinstance(content, dict) or not {"training", "validation"} <= set(content):
        keys = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise CaseReadError(f"{path}: expected the keys 'training' and 'validation', got {keys}", path=path)
    split = {}
    for key in ("training", "validation"):
        names = content[key]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise CaseReadError(f"{path}: {key!r} must be a list of image names", path=path)
        split[key] = [n[:-4] if n.lower().endswith(".png") else n for n in names]
    repeated = sorted(n for n, count in Counter(split["training"] + split["validation"]).items() if count > 1)
    if repeated:
        raise CaseReadError(f"{path}: cases listed twice: {repeated[:10]}", path=path)
    return split


def fugc_split(
    root: str | os.PathLike, num_validation: int = 10, seed: int = 0, split_file: str | os.PathLike | None = None
) -> dict[str, Any]:
    """Training, validation and unlabelled items of ``root``.

    Args:
        root: the FUGC folder (``images/``, ``labels/``).
        num_validation: labelled images held out for validation (10 in the 7th-place solution), drawn with
            ``seed``; ignored when ``split_file`` is given.
        seed: seed of the draw (same seed and cases, same split).
        split_file: a JSON split file (see :func:`read_split_file`); its names must be labelled cases of
            ``root``. Labelled cases it does not list are left out (logged).

    Returns:
        ``{"training": [...], "validation": [...], "unlabelled": [...], "skipped": {path: reason}}``.

    Raises:
        CaseReadError: the split file names a case that is not a labelled image of ``root``.
        ValueError: ``num_validation`` is negative or leaves no labelled image for training.
    """
    cases = fugc_datalist(root)
    labelled = {item["case"]: item for item in cases["labelled"]}
    if split_file is not None:
        split = read_split_file(split_file)
        unknown = [n for key in ("training", "validation") for n in split[key] if n not in labelled]
        if unknown:
            raise CaseReadError(
                f"{split_file}: {len(unknown)} case(s) are not labelled images of {root}: {unknown[:10]}",
                path=split_file,
            )
        unused = sorted(set(labelled) - set(split["training"]) - set(split["validation"]), key=case_sort_key)
        if unused:
            logger.warning("%d labelled case(s) not in %s are left out: %s", len(unused), split_file, unused[:10])
        training, validation = split["training"], split["validation"]
    else:
        if not 0 <= num_validation < len(labelled):
            raise ValueError(
                f"num_validation must be in 0..{len(labelled) - 1} (there are {len(labelled)} labelled images "
                f"in {root}), got {num_validation}"
            )
        order = np.random.default_rng(seed).permutation(sorted(labelled, key=case_sort_key))
        validation = order[:num_validation].tolist()
        training = order[num_validation:].tolist()
    return {
        "training": [labelled[c] for c in sorted(training, key=case_sort_key)],
        "validation": [labelled[c] for c in sorted(validation, key=case_sort_key)],
        "unlabelled": cases["unlabelled"],
        "skipped": cases["skipped"],
    }
