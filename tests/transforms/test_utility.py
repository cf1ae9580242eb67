"""Utility transforms: the 2.5D neighbour-slice stacking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transforms.utility import StackNeighbourSlicesd


def ramp_cube(slices: int, h: int = 8, w: int = 4) -> np.ndarray:
    """Slice s filled with the value 10 * s, so the slice order can be read off the values."""
    return np.repeat((10 * np.arange(slices, dtype=np.uint8))[:, None, None], h * w, axis=1).reshape(slices, h, w)


def test_stacking_replicates_edges_and_keeps_the_cube():
    cube = ramp_cube(5, 2, 2)
    original = cube.copy()
    stack = StackNeighbourSlicesd(["image", "label"], radius=[1, 0])
    for i, rows in [(0, [0, 0, 1]), (2, [1, 2, 3]), (4, [3, 4, 4])]:
        d = stack({"image": cube, "label": cube, "slice": i})
        assert d["image"].shape == (3, 2, 2) and d["label"].shape == (1, 2, 2)
        assert d["image"][:, 0, 0].tolist() == [10 * r for r in rows]
        assert d["label"][0, 0, 0] == 10 * i
    np.testing.assert_array_equal(cube, original)


def test_whole_cube_stacking_equals_per_slice_stacking():
    cube = torch.as_tensor(ramp_cube(4, 3, 2))
    stack = StackNeighbourSlicesd(["image", "label"], radius=[1, 0])
    whole = stack({"image": cube[None], "label": cube})
    assert whole["image"].shape == (3, 4, 3, 2) and whole["label"].shape == (1, 4, 3, 2)
    for i in range(4):
        single = stack({"image": cube, "label": cube, "slice": torch.tensor(i)})
        torch.testing.assert_close(whole["image"][:, i], single["image"])
        torch.testing.assert_close(whole["label"][:, i], single["label"])


def test_slice_index_out_of_range():
    with pytest.raises(ValueError, match="outside the 3 slices"):
        StackNeighbourSlicesd("image")({"image": ramp_cube(3), "slice": 3, "case": "x"})
