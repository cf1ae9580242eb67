"""Writers of predictions: one file per case named ``{case}{suffix}{extension}``, written atomically, never
overwriting unless asked.

:class:`CaseWriterd` is the base of every bundle's writer (:class:`SaveH5d`, :class:`SaveOverlayd` here,
:class:`transforms.png.SaveGreyPNGd`, :class:`transforms.oct.SaveOCTPredictiond`); the bytes of each format are
written by :mod:`formats`, through :func:`utils.atomic.atomic_path`, so a reader never sees half a file.
Each writer tells, from the case name alone, which files it will write (:meth:`CaseWriterd.output_paths`): the
inference workflow checks them before the network runs, and writes all files of a case or none
(:func:`utils.atomic.atomic_group`).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_numpy
from PIL import Image

from formats.h5 import write_h5_atomic
from formats.png import save_rgb_png_atomic
from utils.atomic import atomic_group

__all__ = ["CaseWriterd", "SaveH5d", "SaveOverlayd", "overlay_image"]

# background transparent, then one colour per class (plaque/lesion red, vessel green, third class blue)
CLASS_COLOURS = np.array([[0, 0, 0], [230, 50, 50], [50, 200, 80], [60, 120, 255]], dtype=np.float32)


class CaseWriterd(MapTransform):
    """Base of the writers of a case's outputs: ``{output_dir}/{case}{suffix}{extension}``.

    ``__call__`` hands the data and the case name (``data[case_key]``) to :meth:`write`, which subclasses implement
    with an atomic writer of :mod:`formats` and ``overwrite=self.overwrite``; the data pass through unchanged. The
    files written by one call appear together when :meth:`write` returns, or none does when it raises
    (:func:`utils.atomic.atomic_group`).
    :meth:`output_paths` lists the files :meth:`write` creates for a case (subclasses writing more than
    :meth:`output_path` override it), so that existing outputs are found before the case is computed.

    Args:
        keys: data keys to write.
        output_dir: folder of the outputs (created if needed).
        case_key: data key holding the case name.
        suffix: appended to the case name.
        overwrite: replace an existing output; otherwise an existing file is an error for that case.
        allow_missing_keys: skip missing keys instead of raising.
    """

    extension: str = ""
    """File extension of the outputs (with its dot), set by each subclass."""

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        case_key: str = "case",
        suffix: str = "",
        overwrite: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = Path(output_dir)
        self.case_key = case_key
        self.suffix = suffix
        self.overwrite = overwrite

    def output_path(self, case: str, suffix: str | None = None, folder: str | os.PathLike | None = None) -> Path:
        """``{folder}/{case}{suffix}{extension}``; ``folder`` and ``suffix`` default to the writer's own."""
        folder = self.output_dir if folder is None else Path(folder)
        return folder / f"{case}{self.suffix if suffix is None else suffix}{self.extension}"

    def output_paths(self, case: str) -> list[Path]:
        """Every file :meth:`write` creates for ``case`` (default: the one :meth:`output_path`)."""
        return [self.output_path(case)]

    def write(self, case: str, data: dict[Hashable, Any]) -> None:
        """Write the outputs of ``case`` from ``data``."""
        raise NotImplementedError(f"{type(self).__name__} must implement write()")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        with atomic_group():  # all files of the case, or none
            self.write(str(d[self.case_key]), d)
        return d


class SaveH5d(CaseWriterd):
    """Write ``data[key]`` for each key as a dataset of one .h5 file per case, ``{case}{suffix}.h5``.

    Args:
        keys: data keys to write; each becomes the dataset of the same name (or of ``dataset_names``).
        output_dir: folder of the outputs (created if needed).
        case_key: data key holding the case name.
        suffix: appended to the case name (``"_pred"`` gives the CSV 2026 submission names).
        dtype: dtype of every dataset.
        dataset_names: dataset name per key, default the keys themselves.
        overwrite: replace an existing output; otherwise an existing file is an error for that case.
    """

    extension = ".h5"

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        case_key: str = "case",
        suffix: str = "_pred",
        dtype: np.dtype | str = np.uint8,
        dataset_names: Sequence[str] | None = None,
        overwrite: bool = False,
    ) -> None:
        super().__init__(keys, output_dir, case_key, suffix, overwrite)
        self.dtype = np.dtype(dtype)
        self.dataset_names = list(dataset_names) if dataset_names is not None else [str(k) for k in self.keys]
        if len(self.dataset_names) != len(self.keys):
            raise ValueError(f"got {len(self.keys)} keys but {len(self.dataset_names)} dataset names")

    def write(self, case: str, data: dict[Hashable, Any]) -> None:
        arrays = {name: convert_to_numpy(data[k]).astype(self.dtype) for k, name in zip(self.keys, self.dataset_names)}
        write_h5_atomic(self.output_path(case), arrays, overwrite=self.overwrite)


def overlay_image(image: np.ndarray, label: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """RGB uint8 picture of a grey ``image`` (H, W) with the class map ``label`` (H, W) tinted on top."""
    grey = image.astype(np.float32)
    span = float(grey.max() - grey.min())
    grey = (grey - grey.min()) / span * 255 if span > 0 else np.zeros_like(grey)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    classes = np.clip(label.astype(np.int64), 0, len(CLASS_COLOURS) - 1)
    tint = CLASS_COLOURS[classes]
    blend = np.where((classes > 0)[..., None], (1 - alpha) * rgb + alpha * tint, rgb)
    return np.clip(blend, 0, 255).astype(np.uint8)


class SaveOverlayd(CaseWriterd):
    """Save a PNG picture of predictions over their images, several (image, label) pairs side by side.

    Args:
        keys: the image keys; ``label_keys`` gives the class map drawn over each.
        label_keys: one class-map key per image key (channel dims squeezed); an image of another size is
            resized to its class map.
        output_dir: folder of the pictures.
        case_key: data key holding the case name; the file is ``{case}{suffix}.png``.
        overwrite: replace an existing picture.
    """

    extension = ".png"

    def __init__(
        self,
        keys: KeysCollection,
        label_keys: KeysCollection,
        output_dir: str | os.PathLike,
        case_key: str = "case",
        suffix: str = "_overlay",
        alpha: float = 0.4,
        overwrite: bool = False,
    ) -> None:
        super().__init__(keys, output_dir, case_key, suffix, overwrite)
        self.label_keys = [label_keys] if isinstance(label_keys, str) else list(label_keys)
        if len(self.label_keys) != len(self.keys):
            raise ValueError(f"got {len(self.keys)} image keys but {len(self.label_keys)} label keys")
        self.alpha = alpha

    def write(self, case: str, data: dict[Hashable, Any]) -> None:
        panels = []
        for image_key, label_key in zip(self.keys, self.label_keys):
            image, label = np.squeeze(convert_to_numpy(data[image_key])), np.squeeze(convert_to_numpy(data[label_key]))
            if image.ndim != 2 or label.ndim != 2:
                raise ValueError(f"{image_key} {image.shape} and {label_key} {label.shape} must be 2-D pictures")
            if image.shape != label.shape:  # a network-sized image under an original-sized prediction
                image = np.asarray(Image.fromarray(image.astype(np.float32)).resize(label.shape[::-1], Image.BILINEAR))
            panels.append(overlay_image(image, label, self.alpha))
        height = max(p.shape[0] for p in panels)
        padded = [np.pad(p, ((0, height - p.shape[0]), (0, 4), (0, 0))) for p in panels]
        save_rgb_png_atomic(self.output_path(case), np.concatenate(padded, axis=1)[:, :-4], overwrite=self.overwrite)
