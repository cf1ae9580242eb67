"""Fixed inputs of the pinned training pipelines (``test_bundle_pipelines.py``): a CSV 2026 case and an angioma
image/mask pair, written to disk as the challenges store them, with a texture so that every transform shows."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from PIL import Image

CAROTID_STORED = 48  # side of the stored carotid views
CAROTID_SIZE = 32  # training image_size of the pinned carotid pipelines
ANGIOMA_SIZE = 32  # training image_size of the pinned angioma pipelines


def _texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return rng.integers(0, 60, size=shape).astype(np.float64)


def write_carotid_case(folder: Path) -> dict[str, str]:
    """A labelled CSV 2026 case (``images/0007.h5``, ``labels/0007_label.h5``): a vessel band with a plaque (long
    view) and a vessel disc with a plaque (transverse view) over a noisy background."""
    rng = np.random.default_rng(20260)
    y, x = np.mgrid[0:CAROTID_STORED, 0:CAROTID_STORED]
    long_mask = np.zeros((CAROTID_STORED, CAROTID_STORED), np.uint8)
    long_mask[18:30] = 255
    long_mask[24:30, 6:20] = 128
    disc = np.hypot(y - 24, x - 22) < 11
    trans_mask = np.zeros_like(long_mask)
    trans_mask[disc] = 255
    trans_mask[disc & (x > 27)] = 128
    images = {}
    for view, mask in (("long", long_mask), ("trans", trans_mask)):
        values = _texture(rng, mask.shape) + np.where(mask == 255, 180, np.where(mask == 128, 110, 0))
        values[:3, -6:] = 255  # the white watermark of the challenge's images
        images[f"{view}_img"] = np.clip(values, 0, 255).astype(np.uint8)
    labels = {"long_mask": long_mask, "trans_mask": trans_mask, "cls": np.uint8(1)}
    for path, arrays in (("images/0007.h5", images), ("labels/0007_label.h5", labels)):
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(folder / path, "w") as file:
            for name, array in arrays.items():
                file.create_dataset(name, data=array)
    return {"case": "0007", "image": str(folder / "images/0007.h5"), "label": str(folder / "labels/0007_label.h5")}


def write_angioma_case(folder: Path) -> dict[str, str]:
    """An angioma image (grey RGB PNG, 70 x 90) and its {0, 255} mask, an ellipse with a tail."""
    rng = np.random.default_rng(2021)
    rows, cols = np.mgrid[0:70, 0:90]
    mask = ((rows - 30) ** 2 / 18**2 + (cols - 40) ** 2 / 25**2 < 1) | ((rows > 50) & (cols > 70))
    values = np.clip(_texture(rng, mask.shape) * 2 + 40 + 120 * mask, 0, 255).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.repeat(values[..., None], 3, axis=-1), mode="RGB").save(folder / "img.png")
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(folder / "label.png")
    return {"case": "img", "image": str(folder / "img.png"), "label": str(folder / "label.png")}
