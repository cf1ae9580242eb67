"""Synthetic CCF BDCI 2021 angioma cases: superficial B-mode ultrasound with one hemangioma-like lesion and its mask.

Writes the challenge's exact layout (:mod:`data.ccf_bdci`)::

    out_dir/train_data/img/<i>.png      RGB PNG with three identical channels, W 375-490 x H 230-320 px
    out_dir/train_data/label/<i>.png    8-bit L PNG, {0, 255}; some masks a few pixels off the image size
    out_dir/train_data/train.csv        ID,CATE,size (size = number of 255 pixels of the mask; CATE random 0/1)
    out_dir/test_data/img/<j>.png       images only

Each image is a linear-probe view of skin and soft tissue as in the challenge: a bright probe line and skin band
at the top, subcutaneous fat with thin bright septa, a bright fascia line, striated muscle, sometimes a bone
surface with its acoustic shadow, Rayleigh speckle elongated laterally, depth attenuation and black side margins.
The lesion is an oval, mostly hypoechoic mass in the upper half with an irregular lobulated boundary,
heterogeneous inside (dark vascular channels, bright septa), sometimes a bright rim and posterior acoustic
enhancement; its area spans about 3,000-55,000 px so that the three size tertiles used for the fold split are
all populated (cases cycle through the tertiles). Deterministic: training case ``i`` uses
``default_rng([seed, 0, i])``, test case ``j`` ``default_rng([seed, 1, j])``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter, gaussian_filter1d

from data.ccf_bdci import TEST_IMAGE_DIR, TRAIN_CSV, TRAIN_IMAGE_DIR, TRAIN_LABEL_DIR
from formats.png import fit_mask_to_image, save_png_atomic, save_rgb_png_atomic
from utils.atomic import write_text_atomic

__all__ = ["add_arguments", "generate", "synthesize_case"]

MIN_AREA, MAX_AREA = 3000.0, 55000.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of this generator."""
    parser.add_argument(
        "--test-cases", type=int, default=None, help="test images without masks (default: cases // 4, at least 2)"
    )
    parser.add_argument(
        "--off-size-fraction",
        type=float,
        default=0.25,
        help="fraction of masks written a few pixels larger or smaller than their image, as in the challenge",
    )


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float | tuple[float, ...]) -> np.ndarray:
    """Gaussian-smoothed white noise scaled to unit standard deviation."""
    field = gaussian_filter(rng.standard_normal(shape), sigma)
    return field / (field.std() + 1e-8)


def _boundary(rng: np.random.Generator, width: int, base: float, amplitude: float, smooth: float) -> np.ndarray:
    """A gently undulating row coordinate per column."""
    wave = gaussian_filter1d(rng.standard_normal(width + 40), smooth)[20:-20]
    return base + amplitude * wave / (np.abs(wave).max() + 1e-8)


def _tissue(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, float]:
    """Echogenicity map (before speckle) of probe line, skin, fat, fascia, muscle and possibly bone; skin depth."""
    rows = np.arange(height, dtype=np.float64)[:, None]
    echo = np.zeros((height, width))
    probe = rng.uniform(2, 6)
    skin = _boundary(rng, width, probe + rng.uniform(7, 13), 2.0, 30)
    fascia = _boundary(rng, width, skin.mean() + rng.uniform(0.25, 0.4) * height, 0.06 * height, 25)
    echo += 0.9 * np.exp(-0.5 * ((rows - probe) / 0.9) ** 2)
    echo += np.where((rows > probe + 2) & (rows <= skin), 0.75, 0.0)
    fat = (rows > skin) & (rows <= fascia)
    echo += np.where(fat, 0.3 + 0.05 * _smooth_noise(rng, (height, width), (6, 20)), 0.0)
    for _ in range(rng.integers(3, 8)):  # thin bright septa in the fat
        septum = _boundary(rng, width, rng.uniform(skin.mean() + 5, fascia.mean() - 3), 5.0, 15)
        start, length = rng.integers(0, width // 2), rng.integers(width // 6, width // 2)
        profile = np.exp(-0.5 * ((rows - septum) / 1.0) ** 2)
        profile[:, :start] = 0
        profile[:, start + length :] = 0
        echo += rng.uniform(0.2, 0.5) * profile * fat
    muscle = rows > fascia
    echo += np.where(muscle, 0.42 + 0.05 * _smooth_noise(rng, (height, width), (8, 25)), 0.0)
    wavy_rows = rows - 1.5 * _smooth_noise(rng, (1, width), 40)
    striae = 0.5 + 0.5 * np.sin(2 * np.pi * wavy_rows / rng.uniform(7, 12))
    echo += np.where(muscle, 0.3 * striae**6, 0.0)
    echo += 0.9 * np.exp(-0.5 * ((rows - fascia) / 1.3) ** 2)
    if rng.random() < 0.3:  # a bone surface (bright arc) with the acoustic shadow beneath it
        centre, half = rng.uniform(0.2, 0.8) * width, rng.uniform(0.12, 0.3) * width
        cols = np.arange(width)
        top = fascia + rng.uniform(0.45, 0.65) * (height - fascia.mean()) + 0.25 * half * ((cols - centre) / half) ** 2
        inside = (np.abs(cols - centre) < half).astype(np.float64)
        echo += 1.1 * np.exp(-0.5 * ((rows - top) / 1.8) ** 2) * inside
        shadow = gaussian_filter(((rows > top + 3) * inside).astype(np.float64), (2, 6))
        echo *= 1 - 0.8 * shadow
    return echo, float(skin.max())


def _lesion(rng: np.random.Generator, height: int, width: int, area: float, skin: float) -> tuple[np.ndarray, ...]:
    """Lesion mask, soft inside-weight (1 inside, 0 outside, smooth over ~2 px) and its normalised radius map."""
    aspect = rng.uniform(0.4, 0.8)  # vertical / horizontal semi-axis: hemangiomas lie along the skin
    a = np.sqrt(area / (np.pi * aspect))
    b = a * aspect
    a, b = min(a, 0.45 * width), min(b, 0.42 * height)
    cy = rng.uniform(skin + b * 0.85, max(skin + b * 0.9, 0.55 * height))
    cx = rng.uniform(a * 0.9, width - a * 0.9)
    angle = rng.uniform(-0.25, 0.25)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    u = ((cols - cx) * np.cos(angle) + (rows - cy) * np.sin(angle)) / a
    v = (-(cols - cx) * np.sin(angle) + (rows - cy) * np.cos(angle)) / b
    rho, theta = np.hypot(u, v), np.arctan2(v, u)
    radius = np.ones_like(theta)
    for k in range(2, 8):  # lobulated, irregular outline
        radius += rng.uniform(0, 0.09 / np.sqrt(k)) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    radius += 0.02 * np.cos(rng.integers(9, 15) * theta + rng.uniform(0, 2 * np.pi))
    mask = rho <= radius
    softness = 1.5 / max(a, 1.0)
    weight = 1.0 / (1.0 + np.exp(np.clip((rho - radius) / softness, -50, 50)))
    return mask, weight, rho / radius


def synthesize_case(rng: np.random.Generator, area: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One image ``(H, W)`` uint8 and its lesion mask ``(H, W)`` bool; ``area`` (px) defaults to a random one."""
    height, width = int(rng.integers(230, 321)), int(rng.integers(375, 491))
    if area is None:
        area = float(np.exp(rng.uniform(np.log(MIN_AREA), np.log(MAX_AREA))))
    echo, skin = _tissue(rng, height, width)
    mask, weight, rho = _lesion(rng, height, width, area, skin)
    inner = rng.uniform(0.08, 0.25) * (1 + 0.35 * _smooth_noise(rng, (height, width), 5))
    channels = _smooth_noise(rng, (height, width), (2, 4)) > 1.2  # dark vascular channels
    septa = np.abs(_smooth_noise(rng, (height, width), 3)) < 0.08  # thin bright strands
    inner = np.where(channels, 0.3 * inner, inner) + 0.25 * septa
    if rng.random() < 0.3:  # a bright rim
        inner += 0.35 * np.exp(-0.5 * ((rho - 0.95) / 0.05) ** 2)
    echo = (1 - weight) * echo + weight * inner
    if rng.random() < 0.5:  # posterior acoustic enhancement below the lesion
        bottom = np.where(mask.any(axis=0), height - 1 - np.argmax(mask[::-1], axis=0), height)
        below = (np.arange(height)[:, None] > bottom[None, :] + 1).astype(np.float64)
        echo *= 1 + rng.uniform(0.2, 0.45) * gaussian_filter(below, 4)
    speckle = np.abs(
        gaussian_filter(rng.standard_normal((height, width)), (0.7, 1.8))
        + 1j * gaussian_filter(rng.standard_normal((height, width)), (0.7, 1.8))
    )
    speckle = 0.45 + 0.55 * speckle / speckle.mean()  # log-compressed display: milder than raw Rayleigh
    depth = np.exp(-rng.uniform(0.3, 0.9) * np.arange(height) / height)[:, None]
    image = np.clip(echo * speckle * depth, 0, None) ** 0.85
    image = image / np.quantile(image, 0.995) * rng.uniform(200, 250)
    left, right = (int(rng.integers(0, 16)) if rng.random() < 0.5 else 0 for _ in range(2))
    image[:, :left] = 0
    image[:, width - right :] = 0
    mask[:, :left] = False
    mask[:, width - right :] = False
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _off_size(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """The mask resized (nearest) to a size a few pixels off, as some challenge masks are."""
    shape = tuple(int(n + rng.choice([-1, 1]) * rng.integers(1, 8)) for n in mask.shape)
    return fit_mask_to_image(mask.astype(np.uint8), shape, "<synthetic>", max_size_mismatch=1.0).astype(bool)


def generate(
    out_dir: Path, cases: int, seed: int, test_cases: int | None = None, off_size_fraction: float = 0.25
) -> None:
    """Write ``cases`` training cases and ``test_cases`` test images in the challenge layout under ``out_dir``."""
    if cases < 1:
        raise ValueError(f"cases must be at least 1, got {cases}")
    out_dir = Path(out_dir)
    test_cases = max(2, cases // 4) if test_cases is None else test_cases
    rows = ["ID,CATE,size"]
    for i in range(1, cases + 1):
        rng = np.random.default_rng([seed, 0, i])
        # cycle through the size tertiles so that even a few cases populate all three
        quantile = ((i - 1) % 3 + rng.uniform()) / 3
        area = float(np.exp(np.log(MIN_AREA) + quantile * (np.log(MAX_AREA) - np.log(MIN_AREA))))
        image, mask = synthesize_case(rng, area)
        if rng.random() < off_size_fraction:
            mask = _off_size(rng, mask)
        save_rgb_png_atomic(out_dir / TRAIN_IMAGE_DIR / f"{i}.png", np.repeat(image[..., None], 3, axis=-1))
        save_png_atomic(out_dir / TRAIN_LABEL_DIR / f"{i}.png", mask)
        rows.append(f"{i}.png,{int(rng.integers(0, 2))},{int(mask.sum())}")
    write_text_atomic(out_dir / TRAIN_CSV, "\n".join(rows) + "\n")
    for j in range(1, test_cases + 1):
        image, _ = synthesize_case(np.random.default_rng([seed, 1, j]))
        save_rgb_png_atomic(out_dir / TEST_IMAGE_DIR / f"{j}.png", np.repeat(image[..., None], 3, axis=-1))
