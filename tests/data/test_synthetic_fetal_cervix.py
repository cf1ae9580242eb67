"""Synthetic FUGC demo data: the challenge layout, readable by the datalist, learnable, deterministic."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_dilation

from data.fugc import fugc_datalist, fugc_split, read_fugc_case, read_fugc_label
from data.synthetic.fetal_cervix_ultrasound_segmentation import (
    HIDDEN_LABEL_DIR,
    LABELLED_RANGES,
    UNLABELLED_RANGES,
    add_arguments,
    generate,
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("fugc_demo")
    generate(root, cases=10, seed=4, height=84, width=136, labelled=0.2)
    return root


def test_layout_counts_dtypes_and_labels(demo):
    cases = fugc_datalist(demo)
    assert len(cases["labelled"]) == 2 and len(cases["unlabelled"]) == 8 and not cases["skipped"]
    assert sorted(p.name for p in (demo / "images").iterdir()) == [f"{i:04d}.png" for i in range(10)]
    hidden = sorted(p.stem for p in (demo / HIDDEN_LABEL_DIR).iterdir())
    assert hidden == [item["case"] for item in cases["unlabelled"]]  # the truth of every unlabelled image
    for item in cases["labelled"]:
        image, label = read_fugc_case(item["image"], item["label"])
        assert Image.open(item["image"]).mode == "RGB" and Image.open(item["label"]).mode == "L"
        assert image.shape == (3, 84, 136) and image.dtype == np.uint8 and (image[0] == image[1]).all()
        assert set(np.unique(label)) == {0, 1, 2}
    for case in hidden:
        assert set(np.unique(read_fugc_label(demo / HIDDEN_LABEL_DIR / f"{case}.png"))) == {0, 1, 2}
    split = fugc_split(demo, num_validation=1)
    assert len(split["training"]) == 1 and len(split["validation"]) == 1


def test_lips_are_brighter_than_the_canal_and_the_tissue(demo):
    item = fugc_datalist(demo)["labelled"][0]
    image, label = read_fugc_case(item["image"], item["label"])
    grey = image[0].astype(float)
    lips = grey[label > 0].mean()
    # the canal: background pixels within 2 px of both lips
    canal = (label == 0) & binary_dilation(label == 1, iterations=2) & binary_dilation(label == 2, iterations=2)
    tissue = grey[(label == 0) & ~binary_dilation(label > 0, iterations=3) & (grey > 0)].mean()
    assert canal.sum() > 10 and grey[canal].mean() < 0.6 * lips and tissue < 0.8 * lips


def test_anterior_lip_faces_the_transducer(demo):
    # in the labelled range the cervix tilts at most 8 degrees: the anterior lip lies above the posterior one
    for item in fugc_datalist(demo)["labelled"]:
        label = read_fugc_label(item["label"])
        rows = np.arange(label.shape[0])[:, None]
        assert (rows * (label == 1)).sum() / (label == 1).sum() < (rows * (label == 2)).sum() / (label == 2).sum()


def test_labelled_range_is_narrower_than_the_unlabelled_range():
    for key, (low, high) in LABELLED_RANGES.items():
        wide_low, wide_high = UNLABELLED_RANGES[key]
        assert wide_low < low < high < wide_high


def test_deterministic_in_the_seed_and_options_parse(tmp_path, demo):
    generate(tmp_path / "again", cases=10, seed=4, height=84, width=136, labelled=0.2)
    generate(tmp_path / "other", cases=2, seed=5, height=84, width=136, labelled=0.5)

    def image(root, name="0001.png"):
        return np.asarray(Image.open(root / "images" / name))

    assert np.array_equal(image(demo), image(tmp_path / "again"))
    assert not np.array_equal(image(demo), image(tmp_path / "other"))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert vars(parser.parse_args(["--height", "64", "--width", "96", "--labelled", "0.5"])) == {
        "height": 64,
        "width": 96,
        "labelled": 0.5,
        "heldout": False,
    }
    with pytest.raises(ValueError, match="labelled"):
        generate(tmp_path / "bad", cases=4, seed=0, labelled=1.0)


def test_heldout_sets_label_every_image_from_the_full_range(tmp_path):
    generate(tmp_path, cases=4, seed=3, height=48, width=64, heldout=True)
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == [f"{i:04d}.png" for i in range(4)]
    assert not (tmp_path / "hidden_labels").exists()
