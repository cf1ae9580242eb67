"""Intensity transforms MONAI lacks: MAGNET's brightness/contrast and square cutout, imgaug's sharpen, kernel blurs
and dropouts, the [0, 1] scaling of 8-bit images."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch

from formats.h5 import write_h5_atomic
from transforms.intensity import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    hsv_to_rgb,
    RandBrightnessContrastd,
    RandColorJitterd,
    RandDropoutd,
    RandGammad,
    RandGaussianBlurd,
    RandGaussianNoiseStdRanged,
    RandKernelBlurd,
    RandSharpend,
    RandSquareCutoutd,
    rgb_to_hsv,
    ToUnitIntervald,
)
from transforms.io import LoadH5d

def test_to_unit_interval_scales_8_bit_images_only():
    scaled = ToUnitIntervald("x")({"x": torch.tensor([0.0, 127.5, 255.0])})["x"]
    torch.testing.assert_close(scaled, torch.tensor([0.0, 0.5, 1.0]))
    unit = torch.tensor([0.0, 0.25, 1.0])
    assert torch.equal(ToUnitIntervald("x")({"x": unit})["x"], unit)


def test_gamma_is_exactly_the_power_on_unit_images() -> None:
    # an image that does not span [0, 1] (after a contrast change): MONAI's RandAdjustContrastd rescales by its
    # own min/max and so differs from MAGNET's np.power(img, gamma); RandGammad gives the power itself
    image = torch.tensor([[[0.2, 0.4], [0.6, 0.8]]])
    transform = RandGammad("x", prob=1.0, gamma_range=(0.7, 1.3)).set_random_state(3)
    out = transform({"x": image})["x"]
    assert 0.7 <= transform.gamma <= 1.3 and transform.gamma != 1.0
    torch.testing.assert_close(out, image**transform.gamma)
    # values outside [0, 1] are clipped first (no NaN from a negative base)
    out = RandGammad("x", prob=1.0, gamma_range=(0.5, 0.5))({"x": torch.tensor([-0.1, 0.25, 1.2])})["x"]
    torch.testing.assert_close(out, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.equal(RandGammad("x", prob=0.0)({"x": image})["x"], image)
    with pytest.raises(ValueError, match="gamma_range"):
        RandGammad("x", gamma_range=(0.0, 1.0))


def test_noise_std_is_drawn_from_the_range() -> None:
    transform = RandGaussianNoiseStdRanged("x", prob=1.0, std_range=(0.01, 0.04)).set_random_state(0)
    stds = []
    for _ in range(200):
        out = transform({"x": torch.zeros(1, 64, 64)})["x"]
        stds.append(transform.std)
        assert float(out.std()) == pytest.approx(transform.std, rel=0.1)
    # MAGNET: U(0.01, 0.04), never below 0.01 (MONAI's sample_std draws from U(0, std))
    assert 0.01 <= min(stds) < 0.012 and 0.038 < max(stds) <= 0.04
    with pytest.raises(ValueError, match="std_range"):
        RandGaussianNoiseStdRanged("x", std_range=(0.04, 0.01))


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


def test_hsv_conversions_match_colorsys_and_invert():
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(3, 4, 5, generator=g, dtype=torch.float64)
    rgb[:, 0, 0] = 0.3  # a grey pixel: hue 0, saturation 0
    rgb[:, 0, 1] = 0.0  # black
    hsv = rgb_to_hsv(rgb)
    expected = np.array([[colorsys.rgb_to_hsv(*rgb[:, i, j].tolist()) for j in range(5)] for i in range(4)])
    np.testing.assert_allclose(hsv.permute(1, 2, 0).numpy(), expected, atol=1e-12)
    torch.testing.assert_close(hsv_to_rgb(hsv), rgb)


def test_adjustments_on_hand_pixels():
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    torch.testing.assert_close(adjust_hue(red, 1 / 3), torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1))
    torch.testing.assert_close(adjust_hue(red, -1 / 3), torch.tensor([0.0, 0.0, 1.0]).view(3, 1, 1))
    image = torch.tensor([[[0.2, 0.6]], [[0.4, 0.6]], [[0.6, 0.8]]])  # (3, 1, 2)
    torch.testing.assert_close(adjust_brightness(image, 1.5), torch.tensor([[[0.3, 0.9]], [[0.6, 0.9]], [[0.9, 1.0]]]))
    luma = 0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]  # per pixel: 0.3576, 0.6228
    torch.testing.assert_close(adjust_saturation(image, 0.0), luma.expand(3, 1, 2))
    mean = luma.mean()
    torch.testing.assert_close(adjust_contrast(image, 0.5), 0.5 * image + 0.5 * mean)
    grey = torch.rand(1, 3, 3)
    assert adjust_saturation(grey, 0.2) is grey and adjust_hue(grey, 0.3) is grey
    torch.testing.assert_close(adjust_contrast(grey, 0.0), grey.mean().expand(1, 3, 3))


def test_color_jitter_factor_ranges_and_random_order():
    jitter = RandColorJitterd("image", prob=1.0, brightness=0.5, contrast=0.5, saturation=0.5, hue=0.25)
    jitter.set_random_state(0)
    orders, factors = set(), {"brightness": [], "contrast": [], "saturation": [], "hue": []}
    image = torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.25
    for _ in range(200):
        out = jitter({"image": image})["image"]
        assert out.shape == image.shape and 0 <= out.min() and out.max() <= 1
        orders.add(tuple(name for name, _ in jitter.operations))
        for name, value in jitter.operations:
            factors[name].append(value)
    assert len(orders) > 12  # 24 permutations of four adjustments
    for name in ("brightness", "contrast", "saturation"):
        assert 0.5 <= min(factors[name]) < 0.6 and 1.4 < max(factors[name]) <= 1.5
    assert -0.25 <= min(factors["hue"]) < -0.2 and 0.2 < max(factors["hue"]) <= 0.25


def test_color_jitter_probability_and_brightness_only():
    image = torch.full((3, 4, 4), 0.5)
    never = RandColorJitterd("image", prob=0.0, brightness=0.5)
    assert never({"image": image})["image"] is image
    jitter = RandColorJitterd("image", prob=0.8, brightness=0.4)
    jitter.set_random_state(3)
    applied = 0
    for _ in range(500):
        out = jitter({"image": image})["image"]
        if jitter.operations:
            applied += 1
            (name, factor), = jitter.operations
            assert name == "brightness"
            torch.testing.assert_close(out, image * factor)
    assert 0.74 < applied / 500 < 0.86


def test_color_jitter_rejects_bad_amounts_and_channels():
    with pytest.raises(ValueError, match="hue"):
        RandColorJitterd("image", hue=0.6)
    with pytest.raises(ValueError, match="contrast"):
        RandColorJitterd("image", contrast=-0.1)
    jitter = RandColorJitterd("image", saturation=0.5)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        jitter({"image": torch.rand(2, 4, 4)})


def test_gaussian_blur_isotropic_normalised_and_edge_repeating():
    blur = RandGaussianBlurd("image", prob=1.0, sigma_range=(1.5, 1.5))
    impulse = torch.zeros(1, 15, 15)
    impulse[0, 7, 7] = 1.0
    out = blur({"image": impulse})["image"]
    assert out.sum().item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(out, out.transpose(1, 2))  # one sigma for both axes
    assert out[0, 7, 7] < 1 and out[0, 7, 9] > 0
    constant = torch.full((3, 5, 7), 0.7)  # a zero-padded blur would darken the border
    torch.testing.assert_close(blur({"image": constant})["image"], constant)


def test_gaussian_blur_draws_sigma_in_range_with_probability():
    blur = RandGaussianBlurd(["a", "b"], prob=0.5, sigma_range=(0.1, 2.0))
    blur.set_random_state(0)
    sigmas, applied = [], 0
    image = torch.rand(1, 8, 8)
    for _ in range(400):
        out = blur({"a": image, "b": image})
        if blur._do_transform:
            applied += 1
            sigmas.append(blur.sigma)
            torch.testing.assert_close(out["a"], out["b"])
        else:
            assert out["a"] is image
    assert 0.42 < applied / 400 < 0.58
    assert 0.1 <= min(sigmas) < 0.2 and 1.9 < max(sigmas) <= 2.0
    with pytest.raises(ValueError, match="sigma_range"):
        RandGaussianBlurd("a", sigma_range=(0.0, 1.0))


@pytest.mark.parametrize(
    "stored", [np.array([[-300, 0], [200, 700]], np.int16), np.array([[0, 1000], [30000, 65535]], np.uint16)]
)
def test_to_unit_interval_rescales_images_beyond_8_bits_by_their_range(tmp_path, caplog, stored):
    path = tmp_path / "0007.h5"
    write_h5_atomic(path, {"long_img": stored})
    with caplog.at_level("WARNING", logger="transforms.intensity"):
        image = ToUnitIntervald("long_img")(LoadH5d("image", ["long_img"])({"image": path}))["long_img"]
    low, high = float(stored.min()), float(stored.max())
    torch.testing.assert_close(image[0], torch.as_tensor((stored - low) / (high - low), dtype=torch.float32))
    assert "0007.h5 (long_img)" in caplog.text and "own range" in caplog.text
