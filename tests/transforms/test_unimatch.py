"""UniMatch's CutMix boxes (area and aspect statistics, probability), the batch paste and the strong-view pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transforms.unimatch import RandCutMixBoxd, cutmix, sample_cutmix_box, unimatch_strong_views

H, W = 84, 136  # the FUGC image (336 x 544) at a quarter


def test_box_area_and_aspect_statistics():
    rng = np.random.RandomState(0)
    areas, aspects = [], []
    for _ in range(3000):
        top, left, box_h, box_w = sample_cutmix_box(H, W, rng)
        assert 0 <= top and top + box_h <= H and 0 <= left and left + box_w <= W
        areas.append(box_h * box_w / (H * W))
        aspects.append(box_h / box_w)
    areas, aspects = np.array(areas), np.array(aspects)
    # int() truncation shrinks boxes a little below the drawn U(0.02, 0.4) area
    assert 0.015 < areas.min() < 0.025 and 0.36 < areas.max() <= 0.4
    assert 0.19 < areas.mean() < 0.21  # mean of U(0.02, 0.4) = 0.21, minus truncation
    big = areas > 0.1  # int() moves the aspect of small boxes further
    assert 0.29 <= aspects[big].min() < 0.35 and 2.5 < aspects[big].max() <= 1 / 0.3 + 0.05
    assert aspects.min() > 0.25 and aspects.max() < 4
    # large boxes only fit with an aspect the image allows: h <= H means r <= H / (area * W)
    large = areas > 0.35
    assert (aspects[large] <= H / (0.35 * W) + 0.05).all() and (aspects[~large] > 2).any()


def test_random_box_transform_probability_shape_and_independence():
    box = RandCutMixBoxd("image", "box", prob=0.5)
    box.set_random_state(1)
    image = torch.rand(3, H, W)
    filled = 0
    for _ in range(400):
        out = box({"image": image})
        assert out["image"] is image and out["box"].shape == (1, H, W) and out["box"].dtype == torch.bool
        if out["box"].any():
            filled += 1
            rows, cols = out["box"][0].any(1).nonzero(), out["box"][0].any(0).nonzero()
            assert out["box"].sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)  # a rectangle
    assert 0.42 < filled / 400 < 0.58
    assert not RandCutMixBoxd("image", "box", prob=0.0)({"image": image})["box"].any()


def test_no_fitting_box_is_an_error():
    with pytest.raises(ValueError, match="fits a 2 x 500 image"):
        sample_cutmix_box(2, 500, np.random.RandomState(0), area_range=(0.9, 0.9), max_tries=50)


def test_cutmix_pastes_images_and_label_maps_inside_the_box():
    target = torch.zeros(2, 3, 4, 5)
    source = torch.ones(2, 3, 4, 5)
    box = torch.zeros(2, 1, 4, 5, dtype=torch.bool)
    box[0, 0, 1:3, 2:4] = True  # second item: no box
    mixed = cutmix(target, source, box)
    assert mixed[0, :, 1:3, 2:4].eq(1).all() and mixed.sum() == 3 * 4
    labels = cutmix(torch.zeros(2, 4, 5, dtype=torch.long), torch.full((2, 4, 5), 2), box.float())
    assert labels.eq(2).nonzero().tolist() == [[0, r, c] for r in (1, 2) for c in (2, 3)]
    with pytest.raises(ValueError, match="cutmix needs"):
        cutmix(target, source[:1], box)


def test_strong_views_are_independent_copies_with_their_own_boxes():
    views = unimatch_strong_views(jitter_prob=1.0, blur_prob=1.0, cutmix_prob=1.0)
    views.set_random_state(0)
    weak = torch.rand(3, H, W, generator=torch.Generator().manual_seed(0))
    out = views({"image": weak})
    assert out["image"] is weak
    assert out["image_s1"].shape == out["image_s2"].shape == weak.shape
    assert not torch.equal(out["image_s1"], weak) and not torch.equal(out["image_s1"], out["image_s2"])
    assert out["box_s1"].any() and out["box_s2"].any() and not torch.equal(out["box_s1"], out["box_s2"])
    untouched = unimatch_strong_views(jitter_prob=0.0, blur_prob=0.0, cutmix_prob=0.0)({"image": weak})
    assert torch.equal(untouched["image_s1"], weak) and not untouched["box_s2"].any()
