"""RSIP (RemoveSmallComponentsd, 8-connected) and EMF (19x19 median) on hand-made masks with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage

from transforms.angioma import angioma_postprocessing
from transforms.postprocessing import EdgeMedianFilterd, RemoveSmallComponentsd


def canvas(size: int = 200) -> np.ndarray:
    return np.zeros((1, size, size), dtype=np.float32)


def test_remove_small_components_8_connected_deletes_specks_of_at_most_max_size():
    mask = canvas(100)
    mask[0, 5, 5:12] = 1  # a 7-px speck
    mask[0, 40:46, 40:50] = 1  # a 60-px blob
    mask[0, 70:75, 70:76] = 1  # 30 px ...
    mask[0, 75:80, 76:82] = 1  # ... + 30 px touching it only diagonally
    out = RemoveSmallComponentsd("pred", max_size=50, connectivity=2)({"pred": torch.as_tensor(mask)})["pred"]
    assert out[0, 5, 5:12].sum() == 0
    assert out[0, 40:46, 40:50].sum() == 60
    assert out[0, 70:80, 70:82].sum() == 60  # one 8-connected component of 60 px
    four = RemoveSmallComponentsd("pred", max_size=50, connectivity=1)({"pred": torch.as_tensor(mask)})["pred"]
    assert four[0, 70:80, 70:82].sum() == 0  # 4-connected they are two 30-px components


@pytest.mark.parametrize("dtype", [np.float32, np.uint8, bool])
@pytest.mark.parametrize("value", [1, 255])
def test_rsip_removes_a_50_px_component_and_keeps_a_51_px_one(dtype, value):
    mask = canvas(100)
    mask[0, 10:15, 10:20] = 1  # exactly 50 px: removed ("at most 50", the rank-1 solution's intent)
    mask[0, 30:33, 30:47] = 1  # 51 px: kept
    mask[0, 60, 20:71] = 1  # 51 px in one row: kept
    mask = (mask * value).astype(dtype)
    out = angioma_postprocessing("pred", max_size=50, median_window=1)({"pred": torch.as_tensor(mask)})["pred"]
    assert out.dtype == torch.as_tensor(mask).dtype
    assert not out[0, 10:15, 10:20].any()
    assert (out[0, 30:33, 30:47] == mask[0, 30:33, 30:47]).all() and out[0, 60].count_nonzero() == 51
    array = RemoveSmallComponentsd("pred", max_size=50)({"pred": mask})["pred"]
    assert isinstance(array, np.ndarray) and np.count_nonzero(array) == 102


def test_postprocessing_pipeline_can_be_switched_off():
    mask = canvas(100)
    mask[0, 10:15, 10:20] = 1
    assert len(angioma_postprocessing("pred", max_size=0, median_window=1).transforms) == 0
    np.testing.assert_array_equal(RemoveSmallComponentsd("pred", max_size=0)({"pred": mask})["pred"], mask)
    with pytest.raises(ValueError, match="max_size"):
        RemoveSmallComponentsd("pred", max_size=-1)


def test_median_fills_a_notch_and_removes_a_spike_on_an_edge():
    mask = canvas()
    mask[0, 40:160, 40:160] = 1
    mask[0, 40:42, 99:102] = 0  # a 2-deep, 3-wide notch in the top edge
    mask[0, 35:40, 120] = 1  # a 1-px wide spike above it
    out = EdgeMedianFilterd("pred", window=19)({"pred": mask})["pred"]
    assert out[0, 40:42, 99:102].all()
    assert not out[0, 35:40, 120].any()


def test_median_keeps_straight_edges_and_rounds_corners_exactly():
    mask = canvas()
    mask[0, 40:160, 40:160] = 1
    out = EdgeMedianFilterd("pred", window=19)({"pred": MetaTensor(mask)})["pred"]
    assert isinstance(out, MetaTensor)
    # a pixel (a, b) px inside a corner sees min(10 + a, 19) * min(10 + b, 19) of the 361 window pixels set: it stays
    # set iff that is a majority (>= 181); outside pixels see at most 9 * 19 = 171 and stay empty
    expected = mask.copy()
    for a in range(9):
        for b in range(9):
            if (10 + a) * (10 + b) < 181:
                for row, col in ((40 + a, 40 + b), (40 + a, 159 - b), (159 - a, 40 + b), (159 - a, 159 - b)):
                    expected[0, row, col] = 0
    np.testing.assert_array_equal(out.numpy(), expected)
    assert out[0, 40, 49:151].all() and out[0, 49:151, 159].all()  # the straight edges


def test_median_filters_near_the_border_too_and_keeps_a_lesion_touching_it():
    mask = canvas(100)
    mask[0, 2:5, 2:5] = 1  # a speck within 9 px of the border: the rank-1 solution would copy it unchanged
    mask[0, 30:70, 0:30] = 1  # a lesion touching the left border
    out = EdgeMedianFilterd("pred", window=19)({"pred": mask * 255})["pred"]
    assert out[0, 2:5, 2:5].sum() == 0
    assert (out[0, 40:60, 0:20] == 255).all()


def test_window_is_checked_and_1_is_a_no_op():
    with pytest.raises(ValueError, match="odd"):
        EdgeMedianFilterd("pred", window=20)
    mask = canvas(50)
    mask[0, 10, 10] = 1
    np.testing.assert_array_equal(EdgeMedianFilterd("pred", window=1)({"pred": mask})["pred"], mask)


@pytest.mark.parametrize("mode", ["reflect", "nearest", "constant"])
def test_binary_masks_take_the_majority_vote_shortcut_with_the_medians_result(mode):
    rng = np.random.default_rng(0)
    blobs = (rng.random((1, 120, 90)) < 0.3).astype(np.float32)
    blobs[0, 20:80, 10:70] = 1
    for mask in (blobs, blobs.astype(bool), blobs.astype(np.uint8)):
        fast = EdgeMedianFilterd("pred", window=19, mode=mode)({"pred": mask})["pred"]
        slow = ndimage.median_filter(mask, size=(1, 19, 19), mode=mode)
        assert fast.dtype == mask.dtype
        np.testing.assert_array_equal(fast, slow)
    grey = rng.random((1, 40, 40)).astype(np.float32)  # not binary: the real median
    np.testing.assert_array_equal(
        EdgeMedianFilterd("pred", window=5)({"pred": grey})["pred"], ndimage.median_filter(grey, size=(1, 5, 5))
    )
