"""Synthetic angioma demo data: the challenge layout, readable by the bundle's loaders, deterministic."""

from __future__ import annotations

import argparse
import csv

import numpy as np
import pytest
from PIL import Image

from data.ccf_bdci import fold_datalists, inference_datalist, read_train_csv, train_datalist
from data.synthetic.angioma_ultrasound_segmentation import add_arguments, generate
from transforms.png import LoadGreyPNGd, LoadMaskPNGd


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("angioma_demo")
    generate(root, cases=6, seed=5, test_cases=2, off_size_fraction=0.5)
    return root


def test_layout_formats_and_csv_match_the_challenge(demo):
    items = train_datalist(demo)
    assert len(items) == 6 and len(inference_datalist(demo)) == 2
    with open(demo / "train_data" / "train.csv") as f:
        assert next(csv.reader(f)) == ["ID", "CATE", "size"]
    sizes = read_train_csv(demo / "train_data" / "train.csv")
    off_size = 0
    for item in items:
        image, mask = Image.open(item["image"]), Image.open(item["label"])
        assert image.mode == "RGB" and mask.mode == "L"
        assert 375 <= image.size[0] <= 490 and 230 <= image.size[1] <= 320
        pixels = np.asarray(mask)
        assert set(np.unique(pixels)) == {0, 255} and sizes[item["case"]] == int((pixels == 255).sum())
        off_size += image.size != mask.size
        data = LoadMaskPNGd("label")(LoadGreyPNGd("image")(item))  # the bundle's loaders accept every case
        assert data["label"].shape == data["image"].shape
    assert off_size >= 1
    ordered = [sizes[str(i)] for i in range(1, 7)]
    assert min(ordered) < 9000 and max(ordered) > 20000  # sizes cover the tertiles
    train, val = fold_datalists(demo, fold=1, n_folds=3)
    assert len(train) == 4 and len(val) == 2


def test_lesion_is_darker_than_its_surroundings(demo):
    item = train_datalist(demo)[0]
    data = LoadMaskPNGd("label")(LoadGreyPNGd("image")(item))
    image, mask = data["image"][0].numpy(), data["label"][0].numpy() > 0
    assert image[mask].mean() < 0.7 * image[~mask & (image > 0)].mean()


def test_deterministic_in_the_seed_and_options_parse(tmp_path, demo):
    generate(tmp_path / "again", cases=2, seed=5, test_cases=1, off_size_fraction=0.5)
    generate(tmp_path / "other", cases=2, seed=6, test_cases=1)
    def image(root):
        return np.asarray(Image.open(root / "train_data" / "img" / "2.png"))

    assert np.array_equal(image(demo), image(tmp_path / "again"))
    other = image(tmp_path / "other")
    assert other.shape != image(demo).shape or not np.array_equal(other, image(demo))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert vars(parser.parse_args(["--test-cases", "3", "--off-size-fraction", "0"])) == {
        "test_cases": 3,
        "off_size_fraction": 0.0,
    }
