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


def test_reverse_gives_the_reference_channel_order():
    """The reference writes (i-1, i, i+1) with cv2 (BGR) and reads the PNG with PIL (RGB): channels (i+1, i, i-1)."""
    cube = ramp_cube(5, 2, 2)
    forward = StackNeighbourSlicesd("image")
    reverse = StackNeighbourSlicesd("image", reverse=True)
    for i, rows in [(0, [1, 0, 0]), (2, [3, 2, 1]), (4, [4, 4, 3])]:
        stacked = forward({"image": cube, "slice": i})["image"]
        bgr_read_as_rgb = np.moveaxis(stacked, 0, -1)[..., ::-1]  # cv2.imwrite's BGR file opened as RGB
        d = reverse({"image": cube, "slice": i})
        assert d["image"][:, 0, 0].tolist() == [10 * r for r in rows]
        np.testing.assert_array_equal(d["image"], np.moveaxis(bgr_read_as_rgb, -1, 0))
    whole = reverse({"image": torch.as_tensor(cube)})["image"]
    for i in range(5):
        torch.testing.assert_close(whole[:, i], torch.as_tensor(reverse({"image": cube, "slice": i})["image"]))


def test_reverse_must_be_a_bool():
    with pytest.raises(TypeError, match="reverse must be True or False"):
        StackNeighbourSlicesd("image", reverse="false")
