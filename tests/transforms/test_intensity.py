"""Intensity transforms MONAI lacks: MAGNET's brightness/contrast and square cutout, imgaug's sharpen, kernel blurs
and dropouts, the [0, 1] scaling of 8-bit images."""

from __future__ import annotations

import pytest
import torch

from transforms.intensity import (
    RandBrightnessContrastd,
    RandDropoutd,
    RandKernelBlurd,
    RandSharpend,
    RandSquareCutoutd,
    ToUnitIntervald,
)


def test_to_unit_interval_scales_8_bit_images_only():
    scaled = ToUnitIntervald("x")({"x": torch.tensor([0.0, 127.5, 255.0])})["x"]
    torch.testing.assert_close(scaled, torch.tensor([0.0, 0.5, 1.0]))
    unit = torch.tensor([0.0, 0.25, 1.0])
    assert torch.equal(ToUnitIntervald("x")({"x": unit})["x"], unit)


def test_square_cutout_holes() -> None:
    image = torch.ones(1, 100, 100)
    single = RandSquareCutoutd("x", prob=1, max_holes=1, size_range=(0.05, 0.15)).set_random_state(0)
    for _ in range(10):
        hole = single({"x": image})["x"][0] == 0
        rows, cols = torch.nonzero(hole, as_tuple=True)
        side_h, side_w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert side_h == side_w and 5 <= side_h <= 15 and hole.sum() == side_h * side_w
    several = RandSquareCutoutd("x", prob=1, max_holes=3).set_random_state(0)
    counts = {len(several.holes) for _ in range(20) if several({"x": image}) is not None}
    assert counts == {1, 2, 3}
    assert torch.equal(RandSquareCutoutd("x", prob=0)({"x": image})["x"], image)


def test_brightness_contrast_formula() -> None:
    image = torch.linspace(0, 1, 11)[None, None]
    transform = RandBrightnessContrastd("x", prob=1, brightness=0.3, contrast=0.3).set_random_state(1)
    out = transform({"x": image})["x"]
    brightness, contrast = transform.factors
    assert brightness != 1 and contrast != 1
    torch.testing.assert_close(out, torch.clamp((image * brightness - 0.5) * contrast + 0.5, 0, 1))


def test_sharpen_follows_imgaugs_kernel():
    image = torch.zeros(1, 8, 8)
    image[:, :, 4:] = 0.5
    identity = RandSharpend("image", alpha=(0.0, 0.0))({"image": image})["image"]
    torch.testing.assert_close(identity, image)
    sharp = RandSharpend("image", alpha=(1.0, 1.0), lightness=(1.0, 1.0))({"image": image})["image"]
    # kernel [[-1]*3, [-1, 9, -1], [-1]*3]: flat areas unchanged, both sides of the edge overshoot
    torch.testing.assert_close(sharp[:, :, :3], image[:, :, :3])
    assert sharp[0, 4, 3] == pytest.approx(-1.5) and sharp[0, 4, 4] == pytest.approx(2.0)
    brighter = RandSharpend("image", alpha=(1.0, 1.0), lightness=(1.25, 1.25))({"image": torch.full((1, 5, 5), 0.4)})
    torch.testing.assert_close(brighter["image"], torch.full((1, 5, 5), 0.5))


def test_kernel_blurs_draw_sizes_in_range():
    mean, median = RandKernelBlurd("image", "mean", (2, 7)), RandKernelBlurd("image", "median", (3, 11))
    assert mean.sizes == [2, 3, 4, 5, 6, 7] and median.sizes == [3, 5, 7, 9, 11]
    dot = torch.zeros(1, 15, 15)
    dot[0, 7, 7] = 1.0
    assert median({"image": dot})["image"].sum() == 0  # a lone bright pixel is removed by any median
    blurred = mean({"image": dot})["image"]
    assert blurred.sum() == pytest.approx(1.0, abs=1e-5) and blurred.max() < 1.0


def test_dropout_per_pixel_and_in_coarse_cells():
    image = torch.ones(1, 100, 100)
    pixels = RandDropoutd("image", fraction=(0.1, 0.1))
    pixels.set_random_state(0)
    dropped = 1 - pixels({"image": image})["image"].mean().item()
    assert 0.08 < dropped < 0.12
    coarse = RandDropoutd("image", fraction=(0.3, 0.3), size_fraction=(0.05, 0.05))
    coarse.set_random_state(0)
    out = coarse({"image": image})["image"][0]
    blocks = out.reshape(5, 20, 5, 20)  # a 5x5 grid stretched over 100x100 px: constant 20x20 blocks
    assert torch.equal(blocks.amax(dim=(1, 3)), blocks.amin(dim=(1, 3)))
    assert 0 < (out == 0).float().mean() < 1
