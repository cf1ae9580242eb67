"""Spatial helpers: the elastic control grid equivalent to a scipy-style elastic field."""

from __future__ import annotations

import pytest

from transforms.spatial import elastic_control_grid


def test_elastic_control_grid_matches_the_fields_rms_and_scales_with_the_resolution():
    spacing, magnitude = elastic_control_grid(alpha=10.0, sigma=6.0)
    assert spacing == 12 and magnitude == pytest.approx((0.2714, 0.2714), abs=1e-4)  # sub-pixel jitter at 512
    half_spacing, half_magnitude = elastic_control_grid(alpha=10.0, sigma=6.0, scale=0.5)
    assert half_spacing == 6 and half_magnitude[0] == pytest.approx(magnitude[0] / 2)
    assert elastic_control_grid(alpha=1.0, sigma=0.1, scale=0.25)[0] == 1  # never below one pixel
