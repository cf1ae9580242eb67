"""Writers of predictions: atomic, never overwriting unless asked, named after the input case."""

from __future__ import annotations

import gzip
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from PIL import Image

from utils.atomic import atomic_path

__all__ = ["SaveH5d", "SaveOverlayd", "overlay_image", "write_nifti_atomic"]

# background transparent, then one colour per class (plaque/lesion red, vessel green, third class blue)
CLASS_COLOURS = np.array([[0, 0, 0], [230, 50, 50], [50, 200, 80], [60, 120, 255]], dtype=np.float32)


def _numpy(value: torch.Tensor | np.ndarray | float) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


class SaveH5d(MapTransform):
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

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | Path,
        case_key: str = "case",
        suffix: str = "_pred",
        dtype: np.dtype | str = np.uint8,
        dataset_names: Sequence[str] | None = None,
        overwrite: bool = False,
    ) -> None:
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.case_key = case_key
        self.suffix = suffix
        self.dtype = np.dtype(dtype)
        self.dataset_names = list(dataset_names) if dataset_names is not None else [str(k) for k in self.keys]
        if len(self.dataset_names) != len(self.keys):
            raise ValueError(f"got {len(self.keys)} keys but {len(self.dataset_names)} dataset names")
        self.overwrite = overwrite

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        path = self.output_dir / f"{d[self.case_key]}{self.suffix}.h5"
        with atomic_path(path, overwrite=self.overwrite) as tmp:
            with h5py.File(tmp, "w") as f:
                for key, name in zip(self.keys, self.dataset_names):
                    f.create_dataset(name, data=_numpy(d[key]).astype(self.dtype))
        return d


def write_nifti_atomic(
    path: str | Path, array: np.ndarray, affine: np.ndarray | None = None, overwrite: bool = False
) -> None:
    """Write ``array`` as a NIfTI-1 file (gzip-compressed when ``path`` ends in ``.gz``), atomically.

    The array is stored with its own dtype and axis order (NIfTI's first axis is x); ``affine`` defaults to the
    identity (voxel coordinates). The bytes are built in memory and written through :func:`utils.atomic.atomic_path`,
    whose temporary name would otherwise confuse nibabel's choice of format by extension.
    """
    image = nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64))
    data = image.to_bytes()
    if str(path).endswith(".gz"):
        data = gzip.compress(data, compresslevel=6)
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)


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


class SaveOverlayd(MapTransform):
    """Save a PNG picture of predictions over their images, several (image, label) pairs side by side.

    Args:
        keys: the image keys; ``label_keys`` gives the class map drawn over each.
        label_keys: one class-map key per image key (channel dims squeezed); an image of another size is
            resized to its class map.
        output_dir: folder of the pictures.
        case_key: data key holding the case name; the file is ``{case}{suffix}.png``.
        overwrite: replace an existing picture.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_keys: KeysCollection,
        output_dir: str | Path,
        case_key: str = "case",
        suffix: str = "_overlay",
        alpha: float = 0.4,
        overwrite: bool = False,
    ) -> None:
        super().__init__(keys)
        self.label_keys = [label_keys] if isinstance(label_keys, str) else list(label_keys)
        if len(self.label_keys) != len(self.keys):
            raise ValueError(f"got {len(self.keys)} image keys but {len(self.label_keys)} label keys")
        self.output_dir = Path(output_dir)
        self.case_key = case_key
        self.suffix = suffix
        self.alpha = alpha
        self.overwrite = overwrite

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        panels = []
        for image_key, label_key in zip(self.keys, self.label_keys):
            image, label = np.squeeze(_numpy(d[image_key])), np.squeeze(_numpy(d[label_key]))
            if image.ndim != 2 or label.ndim != 2:
                raise ValueError(f"{image_key} {image.shape} and {label_key} {label.shape} must be 2-D pictures")
            if image.shape != label.shape:  # a network-sized image under an original-sized prediction
                image = np.asarray(Image.fromarray(image.astype(np.float32)).resize(label.shape[::-1], Image.BILINEAR))
            panels.append(overlay_image(image, label, self.alpha))
        height = max(p.shape[0] for p in panels)
        padded = [np.pad(p, ((0, height - p.shape[0]), (0, 4), (0, 0))) for p in panels]
        path = self.output_dir / f"{d[self.case_key]}{self.suffix}.png"
        with atomic_path(path, overwrite=self.overwrite) as tmp:
            Image.fromarray(np.concatenate(padded, axis=1)[:, :-4]).save(tmp, format="PNG")
        return d
