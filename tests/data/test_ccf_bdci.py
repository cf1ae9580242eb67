"""CCF BDCI datalists and the size-stratified 5-fold split (on the challenge's real train.csv)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from data.ccf_bdci import (
    fold_datalists,
    image_folder_datalist,
    inference_datalist,
    lesion_sizes,
    read_train_csv,
    size_folds,
    train_datalist,
)
from data.splits import quantile_strata
from formats.errors import CaseReadError


@pytest.fixture(scope="module")
def root(real_samples):
    return real_samples / "angioma_ccf_bdci"


def test_size_folds_on_the_real_csv_balance_the_tertiles(root):
    sizes = read_train_csv(root / "train_data" / "train.csv")
    assert len(sizes) == 215 and all(s is not None for s in sizes.values())
    cases = sorted(sizes)
    folds = size_folds(cases, [sizes[c] for c in cases], n_folds=5, seed=2020)
    assert sorted(c for f in folds for c in f) == cases  # disjoint and complete
    assert all(42 <= len(f) <= 44 for f in folds)
    tertile = dict(zip(cases, quantile_strata([sizes[c] for c in cases])))
    for group in range(3):
        per_fold = [sum(tertile[c] == group for c in fold) for fold in folds]
        assert max(per_fold) - min(per_fold) <= 1, per_fold
    # same seed, same folds; another seed, other folds
    assert size_folds(cases, [sizes[c] for c in cases], seed=2020) == folds
    assert size_folds(cases, [sizes[c] for c in cases], seed=1) != folds


def test_datalists_of_the_real_samples_use_only_present_images(root):
    items = train_datalist(root)
    assert [i["case"] for i in items] == [str(i) for i in range(1, 9)]
    assert items[0]["image"].endswith("train_data/img/1.png") and items[0]["label"].endswith("train_data/label/1.png")
    assert lesion_sizes(root, items)[:2] == [21407, 5049]  # from train.csv
    assert [set(i) for i in inference_datalist(root)] == [{"case", "image"}] * 8
    train, val = fold_datalists(root, fold=0)
    assert {i["case"] for i in train}.isdisjoint(i["case"] for i in val)
    assert sorted(i["case"] for i in train + val) == sorted(i["case"] for i in items)
    with pytest.raises(ValueError, match="fold must be"):
        fold_datalists(root, fold=5)


@pytest.fixture
def copy(root, tmp_path):
    shutil.copytree(root, tmp_path / "data")
    return tmp_path / "data"


def test_orphan_masks_and_images_are_named(copy):
    (copy / "train_data" / "img" / "3.png").unlink()
    with pytest.raises(CaseReadError, match=r"1 masks without a matching image: .*label/3\.png"):
        train_datalist(copy)
    (copy / "train_data" / "label" / "3.png").unlink()
    (copy / "train_data" / "label" / "5.png").unlink()
    with pytest.raises(CaseReadError, match=r"images without a matching mask: .*img/5\.png"):
        train_datalist(copy)


def test_sizes_missing_from_the_csv_are_counted_in_the_masks(copy):
    csv_path = copy / "train_data" / "train.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join(line.replace(",21407", ",") if line.startswith("1.png") else line for line in lines))
    items = train_datalist(copy)
    assert lesion_sizes(copy, items)[0] == 21407  # counted: the mask's 255 pixels
    csv_path.unlink()
    counted = lesion_sizes(copy, items)
    assert counted[:2] == [21407, 5049]
    assert np.all(np.asarray(counted) > 0)


def test_a_folder_of_new_images_is_listed_by_name_without_reading_them(copy):
    folder = copy / "test_data" / "img"
    (folder / "not an image.txt").write_text("ignored")
    (folder / "broken.png").write_bytes(b"read later, reported by name then")
    items = image_folder_datalist(folder)
    assert [i["case"] for i in items] == [str(i) for i in range(1, 9)] + ["broken"]
    assert items[0]["image"].endswith("test_data/img/1.png") and set(items[0]) == {"case", "image"}
    with pytest.raises(CaseReadError, match="folder not found"):
        image_folder_datalist(copy / "nowhere")
