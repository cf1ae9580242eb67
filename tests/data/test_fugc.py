"""FUGC 2025 layout: datalist, seeded split, split file, the reader's checks, and real PSFHS images as FUGC cases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.fugc import fugc_datalist, fugc_split, read_fugc_case, read_fugc_image, read_split_file
from formats.errors import CaseReadError
from metrics.fugc import score_folder

REAL = Path(__file__).resolve().parent / "real" / "fetal_psfhs"


def _rgb(path: Path, shape=(6, 8), value=100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*shape, 3), value, np.uint8), mode="RGB").save(path)


def _label(path: Path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8), mode="L").save(path)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """12 images, 1..12; 1..5 labelled; plus stray entries."""
    for i in range(1, 13):
        _rgb(tmp_path / "images" / f"{i}.png")
    label = np.zeros((6, 8), np.uint8)
    label[1:3, 2:6], label[3:5, 2:6] = 1, 2
    for i in range(1, 6):
        _label(tmp_path / "labels" / f"{i}.png", label)
    _label(tmp_path / "labels" / "99.png", label)  # a label without its image
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    (tmp_path / "images" / "sub").mkdir()
    return tmp_path


def test_datalist_separates_labelled_unlabelled_and_skipped(root: Path):
    cases = fugc_datalist(root)
    assert [i["case"] for i in cases["labelled"]] == ["1", "2", "3", "4", "5"]
    assert [i["case"] for i in cases["unlabelled"]] == [str(i) for i in range(6, 13)]  # numeric order
    assert all("label" not in i for i in cases["unlabelled"])
    reasons = {Path(p).name: r for p, r in cases["skipped"].items()}
    assert reasons.keys() == {"99.png", "notes.txt", "sub"}
    assert "label without an image" in reasons["99.png"] and "not a PNG" in reasons["notes.txt"]
    with pytest.raises(CaseReadError, match="image folder not found"):
        fugc_datalist(root / "missing")


def test_test_folder_without_labels_is_all_unlabelled(tmp_path: Path):
    _rgb(tmp_path / "images" / "0001.png")
    assert fugc_datalist(tmp_path)["unlabelled"][0]["case"] == "0001"


def test_seeded_split(root: Path):
    split = fugc_split(root, num_validation=2, seed=3)
    train, val = [i["case"] for i in split["training"]], [i["case"] for i in split["validation"]]
    assert len(val) == 2 and sorted(train + val, key=int) == ["1", "2", "3", "4", "5"]
    assert len(split["unlabelled"]) == 7 and len(split["skipped"]) == 3
    assert fugc_split(root, num_validation=2, seed=3) == split  # same seed, same split
    draws = {tuple(i["case"] for i in fugc_split(root, num_validation=2, seed=s)["validation"]) for s in range(8)}
    assert len(draws) > 1  # the seed matters
    with pytest.raises(ValueError, match="num_validation"):
        fugc_split(root, num_validation=5)


def test_split_file(root: Path, tmp_path: Path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"training": ["1.png", "2", "3"], "validation": ["5"]}))
    assert read_split_file(path) == {"training": ["1", "2", "3"], "validation": ["5"]}
    split = fugc_split(root, split_file=path)
    assert [i["case"] for i in split["training"]] == ["1", "2", "3"]
    assert [i["case"] for i in split["validation"]] == ["5"]  # 4 is in neither list: left out
    path.write_text(json.dumps({"training": ["1", "7"], "validation": ["5"]}))
    with pytest.raises(CaseReadError, match=r"not labelled images.*'7'"):
        fugc_split(root, split_file=path)
    path.write_text(json.dumps({"training": ["1"], "validation": ["1"]}))
    with pytest.raises(CaseReadError, match="listed twice"):
        read_split_file(path)
    path.write_text(json.dumps({"train": ["1"]}))
    with pytest.raises(CaseReadError, match="'training' and 'validation'"):
        read_split_file(path)
    path.write_text("{not json")
    with pytest.raises(CaseReadError, match="JSON"):
        read_split_file(path)


def test_reader_returns_channel_first_image_and_label(root: Path):
    image, label = read_fugc_case(root / "images" / "1.png", root / "labels" / "1.png")
    assert image.shape == (3, 6, 8) and image.dtype == np.uint8 and (image == 100).all()
    assert label.shape == (6, 8) and set(np.unique(label)) == {0, 1, 2}
    assert read_fugc_case(root / "images" / "7.png")[1] is None


def test_bad_label_values_and_sizes_name_the_file(root: Path):
    _label(root / "labels" / "2.png", np.full((6, 8), 255))
    with pytest.raises(CaseReadError, match=r"2\.png: label values \[255\] are outside 0\.\.2"):
        read_fugc_case(root / "images" / "2.png", root / "labels" / "2.png")
    _label(root / "labels" / "3.png", np.zeros((6, 9)))
    with pytest.raises(CaseReadError, match=r"3\.png: label size \(6, 9\).*differs from its image's \(6, 8\)"):
        read_fugc_case(root / "images" / "3.png", root / "labels" / "3.png")
    with pytest.raises(CaseReadError, match="file not found"):
        read_fugc_case(root / "images" / "99.png", root / "labels" / "99.png")


def test_grey_and_rgba_images(tmp_path: Path):
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8)
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    image = read_fugc_image(tmp_path / "grey.png")  # accepted: the channel repeated three times
    assert image.shape == (3, 6, 8) and all((image[c] == grey).all() for c in range(3))
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 7, 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "opaque.png")
    assert (read_fugc_image(tmp_path / "opaque.png")[0] == 7).all()  # opaque alpha: dropped
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "transparent.png")
    with pytest.raises(CaseReadError, match=r"transparent\.png: RGBA image with a transparent alpha"):
        read_fugc_image(tmp_path / "transparent.png")
    Image.fromarray(grey.astype(np.uint16) * 1000).save(tmp_path / "deep.png")
    with pytest.raises(CaseReadError, match=r"deep\.png: is a 16-bit image"):
        read_fugc_image(tmp_path / "deep.png")


def test_real_psfhs_images_as_fugc_cases(tmp_path: Path):
    """Two real PSFHS transperineal images (3 identical planes, masks 0/1/2) written in the FUGC layout."""
    import itk  # reads MetaImage; imported here because loading it takes seconds

    for case in ("03744", "04143"):
        planes = itk.array_from_image(itk.imread(str(REAL / f"img_{case}.mha")))
        mask = itk.array_from_image(itk.imread(str(REAL / f"lbl_{case}.mha")))
        assert planes.shape == (3, 256, 256) and mask.shape == (256, 256)
        image_path = tmp_path / "images" / f"{case}.png"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(planes.transpose(1, 2, 0)), mode="RGB").save(image_path)
        _label(tmp_path / "labels" / f"{case}.png", mask)
        shifted = np.zeros_like(mask)
        shifted[3:, :-2] = mask[:-3, 2:]  # the prediction: the truth moved 3 px down and 2 px left
        if case == "04143":
            shifted[shifted == 1] = 0  # and the pubic symphysis missed entirely
        _label(tmp_path / "pred" / f"{case}.png", shifted)
    split = fugc_split(tmp_path, num_validation=1, seed=0)
    assert len(split["training"]) == 1 and len(split["validation"]) == 1 and not split["skipped"]
    for item in split["training"] + split["validation"]:
        image, label = read_fugc_case(item["image"], item["label"])
        assert image.shape == (3, 256, 256) and set(np.unique(label)) == {0, 1, 2}
        assert label.mean() > 0.1 and image[:, label == 2].mean() != image[:, label == 0].mean()
    table = score_folder(tmp_path / "pred", split["training"] + split["validation"])
    shift = math.hypot(3, 2)  # a translated mask is exactly its translation away (no mask touches the border)
    assert table["hd_posterior"] == pytest.approx(shift)
    # with the symphysis missed, the "all" map of 04143 is 40.26 px off: the value of ITK 5.4's
    # HausdorffDistanceImageFilter on these masks, recorded once (the filter takes ~20 s to load)
    assert table["hd_all"] == pytest.approx((shift + 40.26164427839479) / 2)
    # the missed class scores the image diagonal hypot(255, 255) on 04143
    assert table["hd_anterior"] == pytest.approx((shift + math.hypot(255, 255)) / 2)
    assert 0.3 < table["dice_anterior"] < 0.5 and 0.9 < table["dice_posterior"] < 1.0
