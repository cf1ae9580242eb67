"""Grey PNG reading/writing: the real angioma samples, off-size masks, and a clear error for every bad file."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from formats.errors import CaseReadError
from formats.png import fit_mask_to_image, save_png_atomic
from transforms.png import LoadGreyPNGd, LoadMaskPNGd, SaveGreyPNGd


@pytest.fixture(scope="module")
def angioma(real_samples):
    return real_samples / "angioma_ccf_bdci"


def test_real_rgb_images_load_as_one_grey_channel(angioma):
    paths = sorted(angioma.glob("t*_data/img/*.png"))
    assert len(paths) == 16
    for path in paths:
        image = LoadGreyPNGd("image")({"image": path})["image"]
        rgb = np.asarray(Image.open(path))
        assert image.shape == (1, *rgb.shape[:2]) and image.dtype == torch.float32
        np.testing.assert_array_equal(image[0].numpy(), rgb[..., 0])
        assert image.meta["filename_or_obj"] == str(path)
        assert tuple(image.meta["spatial_shape"]) == rgb.shape[:2]


def test_real_masks_are_fitted_to_their_images(angioma):
    sizes = {r["ID"]: int(r["size"]) for r in csv.DictReader(open(angioma / "train_data" / "train.csv"))}
    off_size = 0
    for image_path in sorted((angioma / "train_data" / "img").glob("*.png")):
        mask_path = angioma / "train_data" / "label" / image_path.name
        d = LoadMaskPNGd("label")(LoadGreyPNGd("image")({"image": image_path, "label": mask_path}))
        assert d["label"].shape == d["image"].shape
        assert set(torch.unique(d["label"]).tolist()) == {0.0, 1.0}
        disk = Image.open(mask_path).size[::-1]
        assert tuple(d["label"].meta["spatial_shape"]) == disk
        off_size += disk != tuple(d["image"].shape[1:])
        # the CSV size counts the mask's 255 pixels on disk; nearest resizing by a few px keeps it within 3 %
        assert abs(float(d["label"].sum()) - sizes[image_path.name]) <= 0.03 * sizes[image_path.name]
    assert off_size >= 4  # the samples include masks a few pixels off their image


def test_mask_alone_keeps_its_size(angioma):
    mask = LoadMaskPNGd("label")({"label": angioma / "train_data" / "label" / "4.png"})["label"]
    assert mask.shape == (1, 292, 450)


def write(path, array, mode=None):
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("missing.png", None, "file not found"),
        ("corrupt.png", "corrupt", "not a readable PNG"),
        ("truncated.png", "truncated", "not a readable PNG"),
        ("deep.png", "16bit", "16-bit"),
        ("alpha.png", "rgba", "alpha channel"),
        ("palette.png", "palette", "palette"),
        ("photo.png", "jpeg", "holds a JPEG image, not a PNG"),
        ("cine.png", "animated", "animated PNG with 2 frames"),
    ],
)
def test_bad_images_raise_a_case_error_naming_the_file(tmp_path, name, make, message):
    path = tmp_path / name
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    if make == "corrupt":
        path.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    elif make == "truncated":
        write(path, np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
        path.write_bytes(path.read_bytes()[:200])
    elif make == "16bit":
        Image.fromarray(grey.astype(np.uint16) * 1000).save(path)
    elif make == "rgba":
        write(path, np.stack([grey] * 4, -1), "RGBA")
    elif make == "jpeg":
        Image.fromarray(grey).save(path, format="JPEG")
    elif make == "animated":
        Image.fromarray(grey).save(path, format="PNG", save_all=True, append_images=[Image.fromarray(255 - grey)])
    elif make == "palette":
        Image.fromarray(grey).convert("P").save(path)
    with pytest.raises(CaseReadError, match=message) as error:
        LoadGreyPNGd("image")({"image": path})
    assert name in str(error.value) and isinstance(error.value, ValueError)


def test_bad_masks_raise_a_case_error_naming_the_file(tmp_path):
    image = torch.zeros(1, 100, 100)
    grey = write(tmp_path / "grey.png", np.full((100, 100), 128, dtype=np.uint8))
    with pytest.raises(CaseReadError, match=r"grey\.png: mask has values 128 that are no code"):
        LoadMaskPNGd("label")({"image": image, "label": grey})
    small = write(tmp_path / "small.png", np.zeros((80, 100), dtype=np.uint8))
    with pytest.raises(CaseReadError, match=r"small\.png: mask size \(80, 100\).*20%"):
        LoadMaskPNGd("label")({"image": image, "label": small})


def test_nearest_fit_follows_opencv_inter_nearest():
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[1, 2] = 1
    grown = fit_mask_to_image(mask, (8, 8), "m.png", max_size_mismatch=1.0)
    expected = np.zeros((8, 8), dtype=np.uint8)
    expected[2:4, 4:6] = 1  # source index floor(i * 4 / 8)
    np.testing.assert_array_equal(grown, expected)


def test_atomic_png_writer_round_trip_and_checks(tmp_path):
    mask = np.zeros((1, 5, 7), dtype=bool)
    mask[0, 1:3, 2:6] = True
    save_png_atomic(tmp_path / "m.png", mask)
    written = Image.open(tmp_path / "m.png")
    assert written.mode == "L" and written.size == (7, 5)
    np.testing.assert_array_equal(np.asarray(written), mask[0].astype(np.uint8) * 255)
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]  # no temporary file left behind
    with pytest.raises(FileExistsError):
        save_png_atomic(tmp_path / "m.png", mask, overwrite=False)
    with pytest.raises(ValueError, match="0..255"):
        save_png_atomic(tmp_path / "bad.png", np.full((3, 3), 0.5))


def test_save_grey_pngd_writes_the_submission_masks(tmp_path):
    pred = torch.zeros(1, 6, 9)
    pred[0, 2:4, 3:7] = 1
    SaveGreyPNGd("pred", tmp_path / "predict")({"pred": pred, "case": "17"})
    written = np.asarray(Image.open(tmp_path / "predict" / "17.png"))
    assert set(np.unique(written)) == {0, 255} and int((written == 255).sum()) == 8


def test_a_grey_image_with_colour_marks_is_converted_with_a_warning_or_refused(tmp_path, caplog):
    rgb = np.stack([np.arange(64, dtype=np.uint8).reshape(8, 8)] * 3, -1)
    rgb[0, :3] = [255, 0, 0]  # a red annotation mark
    path = write(tmp_path / "marked.png", rgb, "RGB")
    with caplog.at_level("WARNING", logger="formats.png"):
        image = LoadGreyPNGd("image")({"image": path})["image"]
    assert "marked.png: RGB channels differ at 3 pixels" in caplog.text
    np.testing.assert_array_equal(image[0].numpy(), np.asarray(Image.fromarray(rgb).convert("L")))
    with pytest.raises(CaseReadError, match="marked.png: RGB image with differing channels at 3 pixels"):
        LoadGreyPNGd("image", colour_to_grey=False)({"image": path})


def test_anti_aliased_mask_values_are_named_and_mapped_on_request(tmp_path):
    mask = np.zeros((6, 6), dtype=np.uint8)
    mask[2:5, 2:5] = 255
    mask[2, 2], mask[4, 4], mask[1, 1] = 254, 253, 2
    path = write(tmp_path / "soft.png", mask)
    expected = r"soft\.png: mask has values 2, 253, 254 that are no code.*almost codes.*nearest_label_code"
    with pytest.raises(CaseReadError, match=expected):
        LoadMaskPNGd("label")({"label": path})
    loaded = LoadMaskPNGd("label", nearest_code=True)({"label": path})["label"]
    assert int(loaded.sum()) == 9 and float(loaded[0, 1, 1]) == 0.0


def test_real_busi_one_bit_mask_and_grey_rgb_image_are_accepted():
    folder = Path(__file__).parents[1] / "data" / "real" / "breast_busi"
    item = {"image": folder / "malignant_10.png", "label": folder / "malignant_10_mask.png"}
    d = LoadMaskPNGd("label")(LoadGreyPNGd("image")(item))
    with Image.open(folder / "malignant_10_mask.png") as mask:
        assert mask.mode == "1"
        lesion = int(np.count_nonzero(np.asarray(mask)))
    assert d["label"].shape == d["image"].shape and int(d["label"].sum()) == lesion > 0
