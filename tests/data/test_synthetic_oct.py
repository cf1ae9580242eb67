"""Synthetic OCT demo cubes: the challenge layout, label codes, determinism and lesion continuity."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from data.ai_challenger_oct import oct_cube_datalist
from data.synthetic.retinal_oct_edema_segmentation import add_arguments, generate
from formats.oct import LABEL_CODES
from transforms.oct import LoadOCTCubed

SIZE = {"slices": 8, "height": 64, "width": 32}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("oct_demo")
    generate(root, cases=2, seed=3, val_cases=1, test_cases=1, **SIZE)
    return root


def load(item):
    keys = ["image", "label"] if "label" in item else ["image"]
    return LoadOCTCubed(keys, label_keys="label" if "label" in item else (), expected_slices=8)(item)


def test_layout_matches_the_challenge(demo):
    train = oct_cube_datalist(demo, "training")
    val = oct_cube_datalist(demo, "validation")
    test = oct_cube_datalist(demo, "test")
    assert (len(train), len(val), len(test)) == (2, 1, 1)
    assert "label" not in test[0] and train[0]["case"].endswith("_cube_z")
    cube = load(train[0])
    assert cube["image"].shape == (8, 64, 32) and cube["label"].shape == (8, 64, 32)
    assert set(np.unique(cube["label"])) <= set(LABEL_CODES)
    assert load(test[0])["image"].shape == (8, 64, 32)


def test_lesions_are_continuous_and_leave_slices_free(demo):
    label = load(oct_cube_datalist(demo, "training")[0])["label"]
    assert set(np.unique(label)) == set(LABEL_CODES)  # the first cube of a split has all three lesions
    for code in (255, 191, 128):
        present = np.flatnonzero((label == code).any(axis=(1, 2)))
        assert present.size and np.all(np.diff(present) == 1)
    assert not (label > 0).any(axis=(1, 2)).all()


def test_deterministic_in_the_seed(tmp_path, demo):
    generate(tmp_path / "again", cases=2, seed=3, val_cases=1, test_cases=1, **SIZE)
    generate(tmp_path / "other", cases=2, seed=4, val_cases=1, test_cases=1, **SIZE)
    first = load(oct_cube_datalist(demo)[1])
    again = load(oct_cube_datalist(tmp_path / "again")[1])
    other = load(oct_cube_datalist(tmp_path / "other")[1])
    np.testing.assert_array_equal(first["image"], again["image"])
    np.testing.assert_array_equal(first["label"], again["label"])
    assert not np.array_equal(first["image"], other["image"])


def test_arguments_and_their_checks(tmp_path):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    assert (args.slices, args.height, args.width, args.val_cases, args.test_cases) == (128, 1024, 512, 2, 1)
    with pytest.raises(ValueError, match="multiples of 16"):
        generate(tmp_path, cases=1, seed=0, slices=4, height=40, width=32)
