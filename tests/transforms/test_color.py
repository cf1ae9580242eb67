"""Colour jitter (torchvision ColorJitter semantics) and isotropic Gaussian blur on [0, 1] float images."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch

from transforms.color import (
    RandColorJitterd,
    RandGaussianBlurd,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    hsv_to_rgb,
    rgb_to_hsv,
)


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
