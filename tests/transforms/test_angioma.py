"""Angioma pipelines: shapes/ranges, image and mask transformed alike, the imgaug operations MONAI lacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Invertd
from PIL import Image

from transforms.angioma import (
    RandDropoutd,
    RandKernelBlurd,
    RandSharpend,
    angioma_inference_transforms,
    angioma_train_transforms,
    angioma_val_transforms,
)
from formats.png import fit_mask_to_image, save_png_atomic

SIZE = 64


@pytest.fixture(scope="module")
def real_items(real_samples):
    root = real_samples / "angioma_ccf_bdci" / "train_data"
    return [{"case": c, "image": root / "img" / f"{c}.png", "label": root / "label" / f"{c}.png"} for c in "145"]


@pytest.fixture
def self_labelled(tmp_path):
    """An item whose image IS its mask (x255), a few px off in size: any geometric mismatch shows."""
    rows, cols = np.mgrid[0:90, 0:140]
    mask = ((rows - 40) ** 2 / 30**2 + (cols - 60) ** 2 / 45**2 < 1) | ((rows > 60) & (cols > 110))
    image = np.repeat((mask * 255).astype(np.uint8)[..., None], 3, axis=-1)
    Image.fromarray(image, mode="RGB").save(tmp_path / "img.png")
    save_png_atomic(tmp_path / "label.png", fit_mask_to_image(mask.astype(np.uint8), (88, 142), "m", 1.0) * 255)
    return {"image": tmp_path / "img.png", "label": tmp_path / "label.png"}


def test_train_pipeline_on_real_images_gives_unit_range_images_and_binary_masks(real_items):
    transform = angioma_train_transforms(SIZE)
    transform.set_random_state(0)
    for _ in range(2):
        for item in real_items:
            out = transform(item)
            assert type(out["image"]) is torch.Tensor and out["image"].shape == (1, SIZE, SIZE)
            assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0
            assert set(torch.unique(out["label"]).tolist()) <= {0.0, 1.0}
    batch = next(iter(DataLoader(Dataset(real_items, transform), batch_size=3)))
    assert batch["image"].shape == (3, 1, SIZE, SIZE) and batch["label"].shape == (3, 1, SIZE, SIZE)


def test_pipeline_is_deterministic_for_a_seed(real_items):
    first, again = angioma_train_transforms(SIZE), angioma_train_transforms(SIZE)
    first.set_random_state(7)
    again.set_random_state(7)
    for item in real_items:
        a, b = first(item), again(item)
        torch.testing.assert_close(a["image"], b["image"])
        torch.testing.assert_close(a["label"], b["label"])


@pytest.mark.parametrize("use_eda", [False, True])
def test_geometric_augmentation_moves_image_and_mask_together(self_labelled, use_eda):
    transform = angioma_train_transforms(SIZE, use_da=True, use_eda=use_eda)
    transform.set_random_state(3)
    ious = []
    for _ in range(12):
        out = transform(self_labelled)
        image, label = out["image"][0] > 0.5, out["label"][0] > 0.5
        union = (image | label).sum().item()
        ious.append((image & label).sum().item() / union if union else 1.0)
    # interpolation (bilinear image vs nearest mask) and intensity ops (blur, dropout, noise) cost a little at edges
    assert np.median(ious) > (0.92 if not use_eda else 0.85) and min(ious) > 0.6


def test_without_augmentation_train_equals_validation(real_items):
    train = angioma_train_transforms(SIZE, use_da=False, use_eda=False)(real_items[0])
    val = angioma_val_transforms(SIZE)(real_items[0])
    torch.testing.assert_close(train["image"], val["image"].as_tensor())
    torch.testing.assert_close(train["label"], val["label"].as_tensor())
    assert 0.99 < float(val["image"].max()) <= 1.0


def test_inference_transforms_keep_what_is_needed_to_resize_back(real_items):
    transform = angioma_inference_transforms(SIZE)
    data = transform({"image": real_items[1]["image"]})
    assert data["image"].shape == (1, SIZE, SIZE) and tuple(data["image"].meta["spatial_shape"]) == (285, 451)
    data["pred"] = (data["image"] > 0.3).float()
    restored = Invertd("pred", transform=transform, orig_keys="image", nearest_interp=True)(data)["pred"]
    assert restored.shape == (1, 285, 451)


def test_sharpen_follows_imgaugs_kernel():
    image = torch.zeros(1, 8, 8)
    image[:, :, 4:] = 0.5
    identity = RandSharpend("image", alpha=(0.0, 0.0))({"image": image})["image"]
    torch.testing.assert_close(identity, image)
    sharp = RandSharpend("image", alpha=(1.0, 1.0), lightness=(1.0, 1.0))({"image": image})["image"]
    # kernel [[-1]*3, [-1, 9, -1], [-1]*3]: flat areas unchanged, both sides of the edge overshoot
    torch.testing.assert_close(sharp[:, :, :3], image[:, :, :3])
    assert sharp[0, 4, 3] == pytest.approx(-1.5) and sharp[0, 4, 4] == pytest.approx(2.0)
    brighter = RandSharpend("image", alpha=(1.0, 1.0), lightness=(1.25, 1.25))({"image": torch.full((1, 5, 5), 0.4)})
    torch.testing.assert_close(brighter["image"], torch.full((1, 5, 5), 0.5))


def test_kernel_blurs_draw_sizes_in_range():
    mean, median = RandKernelBlurd("image", "mean", (2, 7)), RandKernelBlurd("image", "median", (3, 11))
    assert mean.sizes == [2, 3, 4, 5, 6, 7] and median.sizes == [3, 5, 7, 9, 11]
    dot = torch.zeros(1, 15, 15)
    dot[0, 7, 7] = 1.0
    assert median({"image": dot})["image"].sum() == 0  # a lone bright pixel is removed by any median
    blurred = mean({"image": dot})["image"]
    assert blurred.sum() == pytest.approx(1.0, abs=1e-5) and blurred.max() < 1.0


def test_dropout_per_pixel_and_in_coarse_cells():
    image = torch.ones(1, 100, 100)
    pixels = RandDropoutd("image", fraction=(0.1, 0.1))
    pixels.set_random_state(0)
    dropped = 1 - pixels({"image": image})["image"].mean().item()
    assert 0.08 < dropped < 0.12
    coarse = RandDropoutd("image", fraction=(0.3, 0.3), size_fraction=(0.05, 0.05))
    coarse.set_random_state(0)
    out = coarse({"image": image})["image"][0]
    blocks = out.reshape(5, 20, 5, 20)  # a 5x5 grid stretched over 100x100 px: constant 20x20 blocks
    assert torch.equal(blocks.amax(dim=(1, 3)), blocks.amin(dim=(1, 3)))
    assert 0 < (out == 0).float().mean() < 1
