"""Datalists of the AI Challenger OCT layout and the (cube, slice) training dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose, MapLabelValued
from PIL import Image

from data.ai_challenger_oct import OCTSliceDataset, list_cubes, oct_cube_datalist, pack_bscans_as_cube, split_dir
from formats.errors import CaseReadError
from formats.oct import LABEL_TO_CLASS, read_oct_cube
from transforms.oct import LoadOCTCubed
from transforms.utility import StackNeighbourSlicesd

CUBE_A = "P0012_MacularCube512x128_8-7-2014_13-29-39_OS_sn27946_cube_z"
CUBE_B = "PC004_MacularCube512x128_8-26-2013_9-15-7_OS_sn8468_cube_z"


def make_layout(root: Path, split_folder: str, cases: list[str], labels: bool = True) -> None:
    for case in cases:
        (root / split_folder / "original_images" / f"{case}.img").mkdir(parents=True)
        if labels:
            (root / split_folder / "label_images" / f"{case}_labelMark").mkdir(parents=True)


def test_training_datalist(tmp_path):
    make_layout(tmp_path, "Edema_trainingset", [CUBE_B, CUBE_A])
    (tmp_path / "Edema_trainingset" / "original_images" / ".DS_Store").write_text("")
    items = oct_cube_datalist(tmp_path, "training")
    assert [item["case"] for item in items] == [CUBE_A, CUBE_B]
    base = tmp_path / "Edema_trainingset"
    assert items[0]["image"] == str(base / "original_images" / f"{CUBE_A}.img")
    assert items[0]["label"] == str(base / "label_images" / f"{CUBE_A}_labelMark")


def test_test_split_has_no_labels_and_archive_folder_is_found(tmp_path):
    make_layout(tmp_path / "ai_challenger_fl2018_testset", "Edema_testset", [CUBE_A], labels=False)
    items = oct_cube_datalist(tmp_path, "test")
    assert items == [{"case": CUBE_A, "image": str(split_dir(tmp_path, "test") / "original_images" / f"{CUBE_A}.img")}]


def test_missing_label_folder_names_the_cube(tmp_path):
    make_layout(tmp_path, "Edema_validationset", [CUBE_A])
    (tmp_path / "Edema_validationset" / "original_images" / f"{CUBE_B}.img").mkdir()
    with pytest.raises(CaseReadError, match=f"cube {CUBE_B}: label folder .* not found"):
        oct_cube_datalist(tmp_path, "validation")


def test_label_folder_without_image_cube(tmp_path):
    make_layout(tmp_path, "Edema_trainingset", [CUBE_A])
    (tmp_path / "Edema_trainingset" / "label_images" / f"{CUBE_B}_labelMark").mkdir()
    with pytest.raises(CaseReadError, match=f"without image cube: {CUBE_B}_labelMark"):
        oct_cube_datalist(tmp_path)


def test_missing_split_and_bad_split_name(tmp_path):
    with pytest.raises(CaseReadError, match="Edema_validationset"):
        oct_cube_datalist(tmp_path, "validation")
    with pytest.raises(ValueError, match="split"):
        oct_cube_datalist(tmp_path, "train")


def test_slice_dataset_expands_cubes_in_memory():
    cubes = [
        {"case": "a", "image": np.zeros((3, 2, 2), np.uint8)},
        {"case": "b", "image": np.ones((2, 2, 2), np.uint8)},
    ]
    ds = OCTSliceDataset(cubes, transform=StackNeighbourSlicesd("image"))
    assert len(ds) == 5
    assert [(ds[i]["case"], ds[i]["slice"]) for i in range(5)] == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)]
    assert ds[4]["image"].shape == (3, 2, 2)
    assert cubes[0]["image"].shape == (3, 2, 2) and "slice" not in cubes[0]
    with pytest.raises(CaseReadError, match="has 2 slices"):
        OCTSliceDataset(cubes, num_slices=3)[5]


def test_slice_dataset_over_cached_cubes_from_disk(tmp_path):
    make_layout(tmp_path, "Edema_trainingset", [CUBE_A, CUBE_B])
    rng = np.random.default_rng(0)
    for item in oct_cube_datalist(tmp_path):
        for n in range(1, 4):
            Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(Path(item["image"]) / f"{n}.bmp")
            lab = np.zeros((16, 16), np.uint8)
            lab[n:, :4] = 255
            Image.fromarray(lab).save(Path(item["label"]) / f"{n}.bmp")
    cube_transform = Compose(
        [
            LoadOCTCubed(["image", "label"], label_keys="label"),
            MapLabelValued("label", list(LABEL_TO_CLASS), list(LABEL_TO_CLASS.values()), dtype=np.uint8),
        ]
    )
    cubes = CacheDataset(oct_cube_datalist(tmp_path), cube_transform, num_workers=0, progress=False)
    ds = OCTSliceDataset(cubes, StackNeighbourSlicesd(["image", "label"], radius=[1, 0]))
    assert len(ds) == 6
    assert not np.shares_memory(ds[0]["image"], cubes[0]["image"])  # the slice stack is a copy ...
    assert cubes[0]["image"] is cubes[0]["image"]  # ... of the cube straight from the cache
    batch = next(iter(DataLoader(ds, batch_size=4, shuffle=False)))
    assert batch["image"].shape == (4, 3, 16, 16) and batch["label"].shape == (4, 1, 16, 16)
    assert batch["slice"].tolist() == [0, 1, 2, 0] and int(batch["label"].max()) == 1


def test_folder_of_new_cubes_lists_each_subfolder(tmp_path):
    for name in (f"{CUBE_B}.img", "eye_without_suffix", ".hidden"):
        (tmp_path / name).mkdir()
    (tmp_path / "notes.txt").write_text("")
    assert list_cubes(tmp_path) == [
        {"case": CUBE_B, "image": str(tmp_path / f"{CUBE_B}.img")},
        {"case": "eye_without_suffix", "image": str(tmp_path / "eye_without_suffix")},
    ]
    with pytest.raises(CaseReadError, match="no cube folders"):
        list_cubes(tmp_path / "eye_without_suffix")
    with pytest.raises(CaseReadError, match="not found"):
        list_cubes(tmp_path / "missing")


def test_separate_bscans_are_packed_as_a_cube_with_binary_masks(tmp_path):
    rng = np.random.default_rng(0)
    images, masks = [], []
    for n in range(3):
        rgb = np.repeat(rng.integers(0, 255, (16, 8, 1), dtype=np.uint8), 3, axis=2)  # grey stored as RGB
        Image.fromarray(rgb).save(tmp_path / f"img_{n}.png")
        mask = np.zeros((16, 8), np.uint8)
        mask[n, :3] = [241, 250, 255]  # anti-aliased fluid mask
        Image.fromarray(mask).save(tmp_path / f"mask_{n}.png")
        images.append(tmp_path / f"img_{n}.png")
        masks.append(tmp_path / f"mask_{n}.png")
    pack_bscans_as_cube(images, tmp_path / "c.img", masks, tmp_path / "c_labelMark", label_code=191)
    image = read_oct_cube(tmp_path / "c.img", expected_slices=3)
    label = read_oct_cube(tmp_path / "c_labelMark", allowed_values=(0, 191))
    np.testing.assert_array_equal(image[2], np.asarray(Image.open(images[2]).convert("L")))
    assert label[1, 1, :4].tolist() == [191, 191, 191, 0] and label[1].sum() == 3 * 191
    with pytest.raises(ValueError, match="label_code"):
        pack_bscans_as_cube(images, tmp_path / "d.img", masks, tmp_path / "d_labelMark", label_code=200)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(CaseReadError, match="different sizes"):
        pack_bscans_as_cube([images[0], tmp_path / "small.png"], tmp_path / "e.img")
