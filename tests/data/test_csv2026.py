"""CSV 2026 datalists and folds on generated demo data; packing real PNG images as cases."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
from monai.bundle import ConfigParser

from data.csv2026 import (
    csv2026_fold_datalists,
    csv2026_folds,
    labelled_cases,
    letterbox_to_square,
    list_cases,
    load_csv2026_datalist,
    pack_png_as_csv2026_case,
    read_case_list,
    read_fold_file,
)
from data.synthetic.carotid_plaque_ultrasound import generate
from formats.errors import CaseReadError
from formats.h5 import write_h5_atomic
from transforms.io import LoadH5d


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("csv2026")
    generate(root, cases=18, seed=5, size=64, unlabelled_fraction=0.25)  # 14 labelled (7 + 7), 4 unlabelled
    return root


@pytest.fixture
def root_copy(demo_root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(demo_root, tmp_path / "copy"))


def test_datalist_of_demo_data(demo_root: Path) -> None:
    labelled, unlabelled = load_csv2026_datalist(demo_root)
    assert [i["case"] for i in labelled] == [f"{k:04d}" for k in range(14)]
    assert [i["case"] for i in unlabelled] == [f"{k:04d}" for k in range(14, 18)]
    for item in labelled:
        assert item["image"] == str(demo_root / "images" / f"{item['case']}.h5")
        assert item["label"] == str(demo_root / "labels" / f"{item['case']}_label.h5")
        with h5py.File(item["label"]) as f:
            assert item["cls"] == int(f["cls"][()])
    assert Counter(i["cls"] for i in labelled) == {0: 7, 1: 7}
    assert all(set(i) == {"case", "image"} for i in unlabelled)


def test_folds_are_disjoint_cover_and_balance_classes(demo_root: Path) -> None:
    labelled, _ = load_csv2026_datalist(demo_root)
    folds = csv2026_folds(labelled, n_folds=4, seed=1)
    assert len(folds) == 4 and sorted(c for f in folds for c in f) == [i["case"] for i in labelled]
    cls = {i["case"]: i["cls"] for i in labelled}
    for k in (0, 1):
        counts = [sum(cls[c] == k for c in f) for f in folds]
        assert max(counts) - min(counts) <= 1
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    assert csv2026_folds(labelled, n_folds=4, seed=1) == folds  # deterministic
    for fold in range(4):
        train, val = csv2026_fold_datalists(labelled, fold, n_folds=4, seed=1)
        assert [i["case"] for i in val] == folds[fold]
        assert {i["case"] for i in train}.isdisjoint(folds[fold]) and len(train) + len(val) == len(labelled)


def test_train_list_selects_labelled_cases_and_keeps_the_unlabelled_pool(root_copy: Path) -> None:
    # a train.txt of labelled training cases only (as MAGNET's README describes it) must not empty the pool
    (root_copy / "train.txt").write_text("0000\n\n0001.h5\nimages/0002.h5  # a comment\n0015.h5\n")
    labelled, unlabelled = load_csv2026_datalist(root_copy)
    assert [i["case"] for i in labelled] == ["0000", "0001", "0002"]
    assert [i["case"] for i in unlabelled] == ["0014", "0015", "0016", "0017"]


def _magnet_split(folds: list[list[str]], cases: list[str]) -> dict:
    return {
        "n_folds": len(folds),
        "splits": [{"fold": k, "train": [c for c in cases if c not in f], "val": f} for k, f in enumerate(folds)],
    }


def test_fold_file_in_magnet_split4_form(demo_root: Path, tmp_path: Path) -> None:
    labelled, _ = load_csv2026_datalist(demo_root)
    cases = [i["case"] for i in labelled]
    folds = [cases[:4], cases[4:8], cases[8:11], cases[11:]]  # deliberately not the computed folds
    split = _magnet_split(folds, cases)
    split["splits"][1]["train"].remove("0000")  # train lists are taken as given, not as the complement
    fold_file = tmp_path / "split4.json"
    fold_file.write_text(json.dumps(split))
    assert [(t, v) for t, v in read_fold_file(fold_file)] == [(s["train"], s["val"]) for s in split["splits"]]
    train, val = csv2026_fold_datalists(labelled, 1, fold_file=fold_file)
    assert [i["case"] for i in val] == cases[4:8]
    assert [i["case"] for i in train] == [c for c in cases if c not in cases[4:8] and c != "0000"]
    assert labelled_cases(demo_root, fold=2, fold_file=fold_file) == [i for i in labelled if i["case"] in folds[2]]
    # without a fold file the computed split is used
    assert csv2026_fold_datalists(labelled, 1, 4, 0) == csv2026_fold_datalists(labelled, 1, 4, 0, None)
    with pytest.raises(ValueError, match=r"split4.json: has folds 0..3, fold 4 was asked for"):
        csv2026_fold_datalists(labelled, 4, fold_file=fold_file)
    split["splits"][0]["val"].append("0999")
    fold_file.write_text(json.dumps(split))
    with pytest.raises(ValueError, match=r"split4.json: fold 0 lists cases that are not labelled cases: \['0999'\]"):
        csv2026_fold_datalists(labelled, 0, fold_file=fold_file)


def test_fold_file_in_monai_datalist_form(demo_root: Path, tmp_path: Path) -> None:
    labelled, _ = load_csv2026_datalist(demo_root)
    cases = [i["case"] for i in labelled]
    training = [{"image": f"images/{c}.h5", "label": f"labels/{c}_label.h5", "fold": n % 3} for n, c in enumerate(cases)]
    fold_file = tmp_path / "datalist.json"
    fold_file.write_text(json.dumps({"training": training}))
    train, val = csv2026_fold_datalists(labelled, 2, fold_file=fold_file)
    assert [i["case"] for i in val] == cases[2::3]
    assert [i["case"] for i in train] == [c for c in cases if c not in cases[2::3]]


def test_fold_file_errors(tmp_path: Path) -> None:
    fold_file = tmp_path / "folds.json"
    with pytest.raises(FileNotFoundError, match="folds.json: fold file not found"):
        read_fold_file(fold_file)
    for content, message in (
        ("not json", "not a JSON fold file"),
        ('{"folds": []}', "expected MAGNET's split4.json form"),
        ('{"splits": [{"fold": 0, "train": ["1"]}]}', r"splits\[0\] needs 'train' and 'val'"),
        ('{"splits": [{"fold": 1, "train": ["1"], "val": ["2"]}]}', r"folds must be numbered 0..0, got \[1\]"),
        ('{"splits": [{"fold": 0, "train": ["1", "2"], "val": ["2"]}]}', r"fold 0 has cases in both .*\['2'\]"),
        ('{"training": [{"image": "a.h5"}]}', r"training\[0\] needs 'image' and 'fold'"),
    ):
        fold_file.write_text(content)
        with pytest.raises(ValueError, match=message):
            read_fold_file(fold_file)


def test_read_case_list_formats(tmp_path: Path) -> None:
    listing = tmp_path / "train.txt"
    listing.write_text("0000.h5\n 0001 \n# skipped\nlabels/0002_label.h5\n")
    assert read_case_list(listing) == ["0000", "0001", "0002"]


def test_layout_errors(root_copy: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no 'images/' folder"):
        load_csv2026_datalist(tmp_path / "nowhere")
    (root_copy / "train.txt").write_text("0000.h5\n0999.h5\n")
    with pytest.raises(FileNotFoundError, match=r"train.txt: listed cases without an image .*'0999'"):
        load_csv2026_datalist(root_copy)
    (root_copy / "train.txt").unlink()
    shutil.copy(root_copy / "labels" / "0000_label.h5", root_copy / "labels" / "0500_label.h5")
    with pytest.raises(FileNotFoundError, match=r"label files without an image.*'0500'"):
        load_csv2026_datalist(root_copy)
    (root_copy / "labels" / "0500_label.h5").unlink()
    mask = np.zeros((64, 64), np.uint8)
    write_h5_atomic(root_copy / "labels" / "0003_label.h5", {"long_mask": mask, "trans_mask": mask, "cls": np.uint8(2)})
    with pytest.raises(CaseReadError, match=r"0003_label.h5: 'cls' must be 0 or 1, got 2"):
        load_csv2026_datalist(root_copy)
    shutil.rmtree(root_copy / "labels")
    with pytest.raises(FileNotFoundError, match="no 'labels/' folder"):
        load_csv2026_datalist(root_copy)


def test_list_cases(demo_root: Path, tmp_path: Path) -> None:
    items = list_cases(demo_root / "images")
    assert [i["case"] for i in items] == [f"{k:04d}" for k in range(18)]
    assert items[3] == {"case": "0003", "image": str(demo_root / "images" / "0003.h5")}
    with pytest.raises(FileNotFoundError, match="not a folder"):
        list_cases(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no .h5 files"):
        list_cases(tmp_path)


def test_letterbox_keeps_aspect_and_centres() -> None:
    tall = np.full((30, 10), 255, np.uint8)
    out = letterbox_to_square(tall, size=60, nearest=True)
    assert out.shape == (60, 60) and out.dtype == np.uint8
    columns = np.nonzero(out.any(axis=0))[0]
    assert (columns.min(), columns.max()) == (20, 39) and out.all(axis=1).sum() == 0
    mask = np.zeros((10, 20), np.uint8)
    mask[:, 10:] = 128
    assert set(np.unique(letterbox_to_square(mask, 40, nearest=True))) == {0, 128}


@pytest.mark.parametrize("name", ["example_US_image.png", "example_US_image2.png", "example_US_image3.png"])
def test_pack_real_carotid_png(real_samples: Path, tmp_path: Path, name: str) -> None:
    out = tmp_path / "images" / "0000.h5"
    pack_png_as_csv2026_case(real_samples / "carotid_momot_cca" / name, out)
    with h5py.File(out) as f:
        assert sorted(f) == ["long_img", "trans_img"]
        image = f["long_img"][()]
        assert image.shape == (512, 512) and image.dtype == np.uint8
        np.testing.assert_array_equal(image, f["trans_img"][()])
    # 709 x 749 (w x h): height -> 512, width -> 485, centred with 13 + 14 zero columns
    assert not image[:, :13].any() and not image[:, 498:].any()
    assert image[:, 13:498].any(axis=0).mean() > 0.95 and image.max() > 200
    parser = ConfigParser()
    bundle = Path(__file__).resolve().parents[2] / "bundles" / "carotid_plaque_ultrasound"
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["image_size"] = 128
    batch = parser.get_parsed_content("preprocessing")(list_cases(tmp_path / "images")[0])  # the bundle's reading
    assert batch["image"].shape == (2, 128, 128) and 0 <= batch["image"].min() and batch["image"].max() <= 1
    assert tuple(LoadH5d("image", datasets=("long_img",))({"image": out})["long_img"].shape) == (1, 512, 512)


def test_pack_unreadable_image(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(CaseReadError, match="bad.png: not a readable image"):
        pack_png_as_csv2026_case(bad, tmp_path / "out.h5")


def test_labelled_cases_of_a_fold_or_of_the_whole_folder(tmp_path):
    from data.csv2026 import csv2026_fold_datalists, labelled_cases, load_csv2026_datalist
    from data.synthetic.carotid_plaque_ultrasound import generate

    generate(tmp_path, cases=12, seed=3, size=64, unlabelled_fraction=0.25)
    labelled, _ = load_csv2026_datalist(tmp_path)
    assert labelled_cases(tmp_path) == labelled
    assert labelled_cases(tmp_path, fold=1, n_folds=3) == csv2026_fold_datalists(labelled, 1, 3)[1]
