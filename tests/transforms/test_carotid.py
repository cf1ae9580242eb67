"""CSV 2026 pipelines: the data contract, image/mask alignment under augmentation, independent views,
pixel-aligned strong augmentation, and the custom intensity/cutout transforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset

from transforms.carotid import (
    RandBrightnessContrastd,
    RandSquareCutoutd,
    carotid_load_transforms,
    carotid_train_transforms,
    carotid_unlabelled_transforms,
    carotid_val_transforms,
)
from formats.errors import CaseReadError
from formats.h5 import write_h5_atomic

SIZE = 48  # stored side of the test cases
IMAGE_SIZE = 32  # pipeline output side

NO_INTENSITY = dict(brightness_contrast_prob=0, gamma_prob=0, noise_prob=0, blur_prob=0, cutout_prob=0)
NO_GEOMETRY = dict(flip_prob=0, affine_prob=0, crop_prob=0, elastic_prob=0, grid_distortion_prob=0)


def _masks() -> tuple[np.ndarray, np.ndarray]:
    """Stored masks: a vessel band with a plaque in the left half (long), a vessel disc with a plaque on
    its right side (trans): both asymmetric so that a flip is visible."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    long_mask = np.zeros((SIZE, SIZE), np.uint8)
    long_mask[18:30] = 255
    long_mask[24:30, 6:20] = 128
    trans_mask = np.zeros((SIZE, SIZE), np.uint8)
    trans_mask[np.hypot(y - 24, x - 22) < 11] = 255
    trans_mask[(np.hypot(y - 24, x - 22) < 11) & (x > 27)] = 128
    return long_mask, trans_mask


@pytest.fixture
def case(tmp_path: Path) -> dict[str, str]:
    """One stored case whose images encode the masks (background 0, plaque 127, vessel 254)."""
    long_mask, trans_mask = _masks()
    codes = {0: 0, 128: 127, 255: 254}
    views = {"long": long_mask, "trans": trans_mask}
    images = {f"{v}_img": np.vectorize(codes.get)(m).astype(np.uint8) for v, m in views.items()}
    write_h5_atomic(tmp_path / "images" / "0003.h5", images)
    write_h5_atomic(
        tmp_path / "labels" / "0003_label.h5", {"long_mask": long_mask, "trans_mask": trans_mask, "cls": np.uint8(1)}
    )
    return {
        "case": "0003",
        "image": str(tmp_path / "images" / "0003.h5"),
        "label": str(tmp_path / "labels" / "0003_label.h5"),
    }


def _check_labelled_contract(out: dict) -> None:
    assert out["case"] == "0003"
    assert out["image"].shape == (2, IMAGE_SIZE, IMAGE_SIZE) and out["image"].dtype == torch.float32
    assert 0 <= out["image"].min() and out["image"].max() <= 1
    assert out["label"].shape == (2, IMAGE_SIZE, IMAGE_SIZE) and out["label"].dtype == torch.int64
    assert set(torch.unique(out["label"]).tolist()) <= {0, 1, 2}
    assert out["cls"].shape == (1,) and out["cls"].dtype == torch.float32 and out["cls"].item() == 1


def test_load_scales_images_and_maps_label_codes(case: dict) -> None:
    out = carotid_load_transforms(labelled=True)(dict(case))
    assert out["long_img"].shape == (1, SIZE, SIZE)
    assert out["long_img"].max().item() == pytest.approx(254 / 255)
    long_mask, _ = _masks()
    expected = np.select([long_mask == 128, long_mask == 255], [1, 2], 0)
    np.testing.assert_array_equal(out["long_mask"][0].numpy(), expected)
    assert out["cls"].tolist() == [1.0]
    assert "long_mask" not in carotid_load_transforms(labelled=False)(dict(case))


def test_bad_mask_code_names_the_label_file(case: dict) -> None:
    long_mask, trans_mask = _masks()
    long_mask[0, 0] = 1
    write_h5_atomic(case["label"], {"long_mask": long_mask, "trans_mask": trans_mask, "cls": np.uint8(1)})
    with pytest.raises(RuntimeError) as error:  # MONAI's Compose chains the reader's error as the cause
        carotid_val_transforms(IMAGE_SIZE)(dict(case))
    cause = error.value.__cause__
    assert isinstance(cause, CaseReadError) and cause.path == case["label"]
    assert "0003_label.h5: 'long_mask' has label values 1 outside" in str(cause)


def test_val_contract_keeps_resized_views_with_disk_shape(case: dict) -> None:
    out = carotid_val_transforms(IMAGE_SIZE)(dict(case))
    _check_labelled_contract(out)
    assert "long_mask" not in out and tuple(out["long_img"].meta["spatial_shape"]) == (SIZE, SIZE)
    torch.testing.assert_close(out["image"][1:], out["trans_img"].as_tensor())
    assert set(torch.unique(out["label"][0]).tolist()) == {0, 1, 2}
    unlabelled = carotid_val_transforms(IMAGE_SIZE, labelled=False)({"case": "0003", "image": case["image"]})
    assert unlabelled["image"].shape == (2, IMAGE_SIZE, IMAGE_SIZE) and "label" not in unlabelled


def test_train_contract_and_determinism(case: dict) -> None:
    first = carotid_train_transforms(IMAGE_SIZE).set_random_state(3)(dict(case))
    _check_labelled_contract(first)
    assert "long_img" not in first and "long_mask" not in first
    again = carotid_train_transforms(IMAGE_SIZE).set_random_state(3)(dict(case))
    torch.testing.assert_close(first["image"].as_tensor(), again["image"].as_tensor())


def _foreground_dice(image: torch.Tensor, label: torch.Tensor) -> float:
    """Dice of the encoded foreground of the images (> 0.25, bilinear) and of the masks (nearest)."""
    a, b = image.as_tensor() > 0.25, label.as_tensor() > 0
    return (2 * (a & b).sum() / (a.sum() + b.sum())).item()


@pytest.mark.parametrize("seed", range(4))
def test_masks_stay_aligned_under_all_geometric_augmentations(case: dict, seed: int) -> None:
    geometry = dict(flip_prob=1, affine_prob=1, crop_prob=1, elastic_prob=1, grid_distortion_prob=1)
    out = carotid_train_transforms(IMAGE_SIZE, **geometry, **NO_INTENSITY).set_random_state(seed)(dict(case))
    other = carotid_train_transforms(IMAGE_SIZE, **geometry, **NO_INTENSITY).set_random_state(seed + 100)(dict(case))
    untouched = carotid_val_transforms(IMAGE_SIZE)(dict(case))
    assert not torch.equal(out["label"].as_tensor(), untouched["label"].as_tensor())  # it did move
    # the images encode the masks: they agree up to interpolated edges, unlike another draw's mask
    assert _foreground_dice(out["image"], out["label"]) > 0.9
    assert _foreground_dice(out["image"], other["label"]) < 0.85


def test_flip_moves_image_and_mask_together(case: dict) -> None:
    out = carotid_train_transforms(IMAGE_SIZE, **{**NO_GEOMETRY, "flip_prob": 1}, **NO_INTENSITY)(dict(case))
    reference = carotid_val_transforms(IMAGE_SIZE)(dict(case))
    torch.testing.assert_close(out["label"].as_tensor(), reference["label"].as_tensor().flip(-1))
    torch.testing.assert_close(out["image"].as_tensor(), reference["image"].as_tensor().flip(-1))


def test_views_are_randomised_independently(case: dict) -> None:
    reference = carotid_val_transforms(IMAGE_SIZE)(dict(case))["label"].as_tensor()
    transform = carotid_train_transforms(IMAGE_SIZE, **{**NO_GEOMETRY, "flip_prob": 0.5}, **NO_INTENSITY)
    outcomes = set()
    for seed in range(16):
        label = transform.set_random_state(seed)(dict(case))["label"].as_tensor()
        outcomes.add(tuple(bool(torch.equal(label[v], reference[v].flip(-1))) for v in range(2)))
    assert {(True, False), (False, True)} <= outcomes


def test_intensity_augmentation_leaves_the_mask_alone(case: dict) -> None:
    intensity = dict(brightness_contrast_prob=1, gamma_prob=1, noise_prob=1, blur_prob=1, cutout_prob=1)
    out = carotid_train_transforms(IMAGE_SIZE, **NO_GEOMETRY, **intensity).set_random_state(0)(dict(case))
    reference = carotid_val_transforms(IMAGE_SIZE)(dict(case))
    torch.testing.assert_close(out["label"].as_tensor(), reference["label"].as_tensor())
    assert not torch.allclose(out["image"].as_tensor(), reference["image"].as_tensor())
    assert 0 <= out["image"].min() and out["image"].max() <= 1


@pytest.mark.parametrize("seed", range(3))
def test_strong_augmentation_is_pixel_aligned(case: dict, seed: int) -> None:
    item = {"case": "0003", "image": case["image"]}
    out = carotid_unlabelled_transforms(IMAGE_SIZE, cutout_prob=0).set_random_state(seed)(item)
    weak = carotid_val_transforms(IMAGE_SIZE, labelled=False)(dict(item))["image"].as_tensor()
    assert set(out) == {"case", "image", "image_strong"}
    torch.testing.assert_close(out["image"].as_tensor(), weak)  # teacher input: resized, unaugmented
    strong = out["image_strong"].as_tensor()
    assert strong.shape == (2, IMAGE_SIZE, IMAGE_SIZE) and 0 <= strong.min() and strong.max() <= 1
    for view in range(2):
        vessel, background = weak[view] > 0.9, weak[view] < 0.1
        # the bright vessel stays where it was: much brighter than the background in the strong view
        assert strong[view][vessel].mean() > strong[view][background].mean() + 0.3


def test_square_cutout_holes() -> None:
    image = torch.ones(1, 100, 100)
    single = RandSquareCutoutd("x", prob=1, max_holes=1, size_range=(0.05, 0.15)).set_random_state(0)
    for _ in range(10):
        hole = single({"x": image})["x"][0] == 0
        rows, cols = torch.nonzero(hole, as_tuple=True)
        side_h, side_w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert side_h == side_w and 5 <= side_h <= 15 and hole.sum() == side_h * side_w
    several = RandSquareCutoutd("x", prob=1, max_holes=3).set_random_state(0)
    counts = {len(several.holes) for _ in range(20) if several({"x": image}) is not None}
    assert counts == {1, 2, 3}
    assert torch.equal(RandSquareCutoutd("x", prob=0)({"x": image})["x"], image)


def test_brightness_contrast_formula() -> None:
    image = torch.linspace(0, 1, 11)[None, None]
    transform = RandBrightnessContrastd("x", prob=1, brightness=0.3, contrast=0.3).set_random_state(1)
    out = transform({"x": image})["x"]
    brightness, contrast = transform.factors
    assert brightness != 1 and contrast != 1
    torch.testing.assert_close(out, torch.clamp((image * brightness - 0.5) * contrast + 0.5, 0, 1))


def test_batches_collate_to_the_contract(case: dict) -> None:
    labelled = DataLoader(Dataset([dict(case), dict(case)], carotid_train_transforms(IMAGE_SIZE)), batch_size=2)
    batch = next(iter(labelled))
    assert batch["image"].shape == batch["label"].shape == (2, 2, IMAGE_SIZE, IMAGE_SIZE)
    assert batch["cls"].shape == (2, 1) and batch["case"] == ["0003", "0003"]
    pool = [{"case": "0003", "image": case["image"]}] * 2
    batch = next(iter(DataLoader(Dataset(pool, carotid_unlabelled_transforms(IMAGE_SIZE)), batch_size=2)))
    assert batch["image"].shape == batch["image_strong"].shape == (2, 2, IMAGE_SIZE, IMAGE_SIZE)


def test_builders_work_from_a_bundle_config(case: dict) -> None:
    target = "transforms.carotid.carotid_{}_transforms"
    train = {"_target_": target.format("train"), "image_size": "@size", "scale_range": [0.9, 1.1]}
    unlabelled = {"_target_": target.format("unlabelled"), "image_size": "@size", "cutout_prob": 0}
    config = {"size": IMAGE_SIZE, "train": train, "unlabelled": unlabelled}
    parser = ConfigParser(config)
    _check_labelled_contract(parser.get_parsed_content("train")(dict(case)))
    strong = parser.get_parsed_content("unlabelled")({"case": "0003", "image": case["image"]})["image_strong"]
    assert strong.shape == (2, IMAGE_SIZE, IMAGE_SIZE)
