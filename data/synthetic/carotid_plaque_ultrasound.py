"""Synthetic CSV 2026 cases: two-view carotid B-mode ultrasound with a plaque, vessel/plaque masks and a risk class.

Writes the challenge's exact layout and dtypes (bundles/carotid_plaque_ultrasound/docs/README.md)::

    out_dir/images/NNNN.h5          long_img, trans_img: uint8 (size, size)
    out_dir/labels/NNNN_label.h5    long_mask, trans_mask: uint8 {0, 128 plaque, 255 vessel}; cls: uint8 scalar
    out_dir/train.txt               every image file name, one per line

The first cases are labelled (half low risk, half high risk, as the challenge's 200 labelled cases), the
rest have no label file (the Mean Teacher pool; their hidden class is high risk with probability 0.2, the
challenge's overall 4:1). Each view is a speckled, depth-attenuated B-mode-like image: tissue layers, a dark
lumen between bright walls (longitudinal: a tilted, gently curved tube; transverse: an ellipse, sometimes
beside a dark jugular-vein-like ellipse that is not labelled), a plaque growing from the near or far wall
into the lumen in both views, the organisers' zero letterbox bands at top and bottom and a white text-like
watermark in the lower left. The vessel mask is the lumen; the plaque (128) overrides it.

The risk class is visible the way Plaque-RADS describes it: high-risk plaques are larger, hypoechoic (dark),
heterogeneous and irregularly outlined; low-risk plaques are smaller, echogenic (bright), homogeneous and
smooth. The output is a function of the arguments only (case ``i`` draws from ``default_rng([seed, i])``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter, gaussian_filter1d, zoom

from formats.h5 import write_h5_atomic
from utils.atomic import write_text_atomic

__all__ = ["add_arguments", "generate", "synthesize_case"]

PLAQUE, VESSEL = 128, 255
UNLABELLED_HIGH_RISK_RATE = 0.2
# a fixed "font" of 5 x 7 pixel glyphs and a fixed text, so that every case carries the same watermark
_GLYPHS = np.random.default_rng(2026).random((10, 7, 5)) < 0.45
_WATERMARK_TEXT = (3, 1, 4, 1, 5, 9, 2, 6)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of this generator."""
    parser.add_argument(
        "--size", type=int, default=512, help="side of every image in pixels (the challenge's 512; 128 is quicker)"
    )
    parser.add_argument(
        "--unlabelled-fraction",
        type=float,
        default=0.5,
        help="fraction of cases written without a label file (the challenge has 0.8); default 0.5",
    )


@dataclass
class _Plaque:
    """Shape and echo of a plaque, shared by both views of a case."""

    far_wall: bool
    thickness: float  # maximum, as a fraction of the lumen diameter
    extent: float  # long view: half-length / lumen diameter
    half_angle: float  # transverse view: angular half-width in radians
    echo: float
    heterogeneity: float
    irregularity: float


def _sample_plaque(rng: np.random.Generator, high_risk: bool) -> _Plaque:
    if high_risk:
        return _Plaque(
            far_wall=bool(rng.random() < 0.6),
            thickness=rng.uniform(0.35, 0.55),
            extent=rng.uniform(0.9, 1.6),
            half_angle=np.deg2rad(rng.uniform(60, 100)),
            echo=rng.uniform(0.16, 0.26),
            heterogeneity=rng.uniform(0.1, 0.16),
            irregularity=rng.uniform(0.25, 0.4),
        )
    return _Plaque(
        far_wall=bool(rng.random() < 0.6),
        thickness=rng.uniform(0.2, 0.32),
        extent=rng.uniform(0.5, 0.9),
        half_angle=np.deg2rad(rng.uniform(35, 60)),
        echo=rng.uniform(0.68, 0.85),
        heterogeneity=0.02,
        irregularity=0.0,
    )


def _texture(rng: np.random.Generator, size: int, cell: float) -> np.ndarray:
    """Smooth random field of unit standard deviation with features about ``cell`` pixels wide."""
    coarse = max(2, int(round(size / cell)))
    field = zoom(rng.standard_normal((coarse, coarse)), size / coarse, order=1)[:size, :size]
    return (field - field.mean()) / (field.std() + 1e-6)


def _outline_noise(rng: np.random.Generator, n: int, correlation: float, wrap: bool = False) -> np.ndarray:
    """Smooth 1-D noise of unit standard deviation (irregular plaque outlines)."""
    noise = gaussian_filter1d(rng.standard_normal(n), max(correlation, 0.5), mode="wrap" if wrap else "reflect")
    return (noise - noise.mean()) / (noise.std() + 1e-6)


def _plaque_echo(rng: np.random.Generator, size: int, plaque: _Plaque) -> np.ndarray:
    return plaque.echo + plaque.heterogeneity * _texture(rng, size, max(2.0, 0.015 * size))


def _paint_vessel(
    rng: np.random.Generator,
    echo: np.ndarray,
    walls: np.ndarray,
    lumen: np.ndarray,
    plaque_region: np.ndarray,
    plaque: _Plaque,
) -> tuple[np.ndarray, np.ndarray]:
    """Bright walls, a dark lumen and the plaque's echo on ``echo`` (in place), and the view's mask."""
    echo[walls] = rng.uniform(0.75, 0.95)
    echo[lumen] = rng.uniform(0.02, 0.06)
    echo[plaque_region] = _plaque_echo(rng, echo.shape[0], plaque)[plaque_region]
    mask = np.zeros(echo.shape, np.uint8)
    mask[lumen] = VESSEL
    mask[plaque_region] = PLAQUE
    return echo, mask


def _longitudinal(
    rng: np.random.Generator, size: int, top: int, bottom: int, plaque: _Plaque, tissue: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Echo map and mask of a longitudinal view: a horizontal tube with the plaque on one wall."""
    rows = np.arange(size, dtype=np.float32)[:, None]
    columns = np.arange(size, dtype=np.float32)
    radius = rng.uniform(0.055, 0.09) * size
    wall = rng.uniform(0.012, 0.02) * size
    centre = top + rng.uniform(0.38, 0.6) * (bottom - top)
    tilt = np.tan(np.deg2rad(rng.uniform(-6, 6)))
    period, phase = rng.uniform(0.8, 2.0) * size, rng.uniform(0, 2 * np.pi)
    centre_line = centre + tilt * (columns - size / 2) + rng.uniform(0, 0.015) * size * np.sin(
        2 * np.pi * columns / period + phase
    )
    radius_line = radius * (1 + 0.06 * np.sin(2 * np.pi * columns / rng.uniform(0.6, 1.5) / size + phase))
    offset = rows - centre_line[None, :]  # positive towards the far (deeper) wall
    distance = np.abs(offset)
    lumen = distance < radius_line[None, :]
    walls = ~lumen & (distance < radius_line[None, :] + wall)

    diameter = 2 * radius
    middle, half_length = rng.uniform(0.3, 0.7) * size, plaque.extent * diameter
    profile = plaque.thickness * diameter * np.sqrt(np.clip(1 - ((columns - middle) / half_length) ** 2, 0, 1))
    profile *= 1 + plaque.irregularity * _outline_noise(rng, size, 0.15 * half_length)
    towards_wall = offset if plaque.far_wall else -offset
    plaque_region = (
        (profile[None, :] > 0)
        & (towards_wall > radius_line[None, :] - profile[None, :])
        & (towards_wall < radius_line[None, :] + 0.5 * wall)
    )

    echo = tissue.copy()
    return _paint_vessel(rng, echo, walls, lumen, plaque_region, plaque)


def _transverse(
    rng: np.random.Generator, size: int, top: int, bottom: int, plaque: _Plaque, tissue: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Echo map and mask of a transverse view: an elliptic lumen with a crescent plaque on one side."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    radius = rng.uniform(0.08, 0.12) * size
    radius_x = radius * rng.uniform(0.95, 1.15)
    wall = rng.uniform(0.012, 0.02) * size
    cx = rng.uniform(0.35, 0.65) * size
    cy = top + rng.uniform(0.42, 0.6) * (bottom - top)
    rho = np.hypot((x - cx) / radius_x, (y - cy) / radius)  # 1 on the lumen border
    theta = np.arctan2(y - cy, x - cx)  # image y points down: -pi/2 is the near wall
    lumen = rho < 1
    walls = ~lumen & (rho < 1 + wall / radius)

    centre_angle = (np.pi / 2 if plaque.far_wall else -np.pi / 2) + rng.uniform(-0.5, 0.5)
    delta = np.angle(np.exp(1j * (theta - centre_angle)))
    bins = 360
    roughness = _outline_noise(rng, bins, 0.1 * bins * plaque.half_angle / np.pi, wrap=True)
    index = ((theta + np.pi) / (2 * np.pi) * bins).astype(int) % bins
    profile = plaque.thickness * 2 * radius * np.sqrt(np.clip(1 - (delta / plaque.half_angle) ** 2, 0, 1))
    profile *= 1 + plaque.irregularity * roughness[index]
    plaque_region = (profile > 0) & (rho * radius > radius - profile) & (rho < 1 + 0.5 * wall / radius)

    echo = tissue.copy()
    if rng.random() < 0.6:  # a jugular-vein-like dark ellipse beside the artery, not part of the mask
        side = rng.choice([-1.0, 1.0])
        vein_rx, vein_ry = radius * rng.uniform(1.0, 1.5), radius * rng.uniform(0.4, 0.7)
        vein_cx = cx + side * (radius_x + wall + vein_rx + rng.uniform(0.02, 0.06) * size)
        vein_cy = cy - rng.uniform(0.3, 0.9) * radius
        echo[np.hypot((x - vein_cx) / vein_rx, (y - vein_cy) / vein_ry) < 1] = rng.uniform(0.04, 0.1)
    return _paint_vessel(rng, echo, walls, lumen, plaque_region, plaque)


def _tissue(rng: np.random.Generator, size: int, top: int, bottom: int) -> np.ndarray:
    """Background echo: mottled soft tissue with a few bright, slightly wavy fascia lines near the skin."""
    tissue = rng.uniform(0.25, 0.38) + 0.09 * _texture(rng, size, 0.06 * size) + 0.05 * _texture(rng, size, 0.02 * size)
    rows = np.arange(size, dtype=np.float32)[:, None]
    columns = np.arange(size, dtype=np.float32)[None, :]
    for _ in range(rng.integers(2, 5)):
        depth = top + rng.uniform(0.02, 0.25) * (bottom - top)
        waves, phase = rng.uniform(0.5, 2), rng.uniform(0, 2 * np.pi)
        line = depth + rng.uniform(0, 0.01) * size * np.sin(2 * np.pi * waves * columns / size + phase)
        thickness = rng.uniform(0.003, 0.008) * size + 0.5
        tissue = np.maximum(tissue, rng.uniform(0.55, 0.85) * np.exp(-(((rows - line) / thickness) ** 2)))
    return tissue


def _render(rng: np.random.Generator, echo: np.ndarray, top: int, bottom: int) -> np.ndarray:
    """B-mode image from an echo map: Rayleigh speckle, depth attenuation, point-spread blur, gain, letterbox
    bands and the watermark."""
    size = echo.shape[0]
    depth = np.clip((np.arange(size, dtype=np.float32)[:, None] - top) / (bottom - top), 0, 1)
    attenuation = np.exp(-rng.uniform(0.4, 1.0) * depth)
    scale = size / 512
    # Rayleigh speckle with a grain elongated laterally, rescaled to mean 1 and a relative spread of 0.4
    speckle = gaussian_filter(rng.rayleigh(size=echo.shape).astype(np.float32), sigma=(0.8 * scale, 1.6 * scale))
    speckle = np.clip(1 + 0.4 * (speckle - speckle.mean()) / (speckle.std() + 1e-6), 0.05, None)
    image = gaussian_filter(echo * attenuation * speckle, sigma=max(0.3, 0.5 * scale))
    image = np.clip(image * rng.uniform(0.95, 1.25), 0, 1)
    image[:top] = 0
    image[bottom:] = 0
    cell = max(1, round(2 * scale))
    glyph_h, glyph_w = 7 * cell, 5 * cell
    row = bottom - round(0.02 * size) - glyph_h
    column = round(0.02 * size)
    for char in _WATERMARK_TEXT:
        image[row : row + glyph_h, column : column + glyph_w][np.kron(_GLYPHS[char], np.ones((cell, cell), bool))] = 1
        column += glyph_w + cell
    return np.round(image * 255).astype(np.uint8)


def synthesize_case(rng: np.random.Generator, size: int, high_risk: bool) -> dict[str, np.ndarray]:
    """Both views of one case: ``long_img``, ``trans_img`` (uint8) and ``long_mask``, ``trans_mask``
    (uint8 0/128/255)."""
    band = int(round(size * rng.uniform(0.04, 0.14)))  # letterbox: the scan was wider than deep
    top, bottom = band, size - band
    plaque = _sample_plaque(rng, high_risk)
    case = {}
    for view, draw in (("long", _longitudinal), ("trans", _transverse)):
        echo, mask = draw(rng, size, top, bottom, plaque, _tissue(rng, size, top, bottom))
        case[f"{view}_img"] = _render(rng, echo, top, bottom)
        case[f"{view}_mask"] = mask
    return case


def generate(out_dir: Path, cases: int, seed: int, size: int = 512, unlabelled_fraction: float = 0.5) -> None:
    """Write ``cases`` synthetic CSV 2026 cases under ``out_dir`` (see the module docstring).

    Args:
        out_dir: output root (created if needed; files of the same names are replaced).
        cases: number of cases.
        seed: seed of all randomness.
        size: image side in pixels.
        unlabelled_fraction: fraction of cases without a label file (the last ones).
    """
    if cases < 1:
        raise ValueError(f"cases must be at least 1, got {cases}")
    if not 0 <= unlabelled_fraction <= 1:
        raise ValueError(f"unlabelled_fraction must be in [0, 1], got {unlabelled_fraction}")
    if size < 64:
        raise ValueError(f"size must be at least 64 pixels, got {size}")
    out_dir = Path(out_dir)
    labelled = cases - int(round(cases * unlabelled_fraction))
    classes = np.arange(labelled) % 2  # balanced; an odd count gets one more low-risk case
    np.random.default_rng(seed).shuffle(classes)
    names = []
    for index in range(cases):
        rng = np.random.default_rng([seed, index])
        high_risk = bool(classes[index]) if index < labelled else bool(rng.random() < UNLABELLED_HIGH_RISK_RATE)
        case = synthesize_case(rng, size, high_risk)
        name = f"{index:04d}"
        write_h5_atomic(out_dir / "images" / f"{name}.h5", {k: case[k] for k in ("long_img", "trans_img")})
        if index < labelled:
            label = {k: case[k] for k in ("long_mask", "trans_mask")}
            write_h5_atomic(out_dir / "labels" / f"{name}_label.h5", {**label, "cls": np.uint8(high_risk)})
        names.append(f"{name}.h5")
    write_text_atomic(out_dir / "train.txt", "".join(f"{n}\n" for n in names))
