"""Synthetic OCT cubes in the AI Challenger 2018 retinal edema layout, for the demo and the tests.

Writes ``out_dir/Edema_trainingset``, ``Edema_validationset`` (images + labels) and ``Edema_testset`` (images only)
exactly as :mod:`data.ai_challenger_oct` describes: ``original_images/<cube>.img/<n>.bmp`` and
``label_images/<cube>_labelMark/<n>.bmp``, n = 1 .. slices, 8-bit grey BMPs, label grey values 255 REA, 191 SRF,
128 PED, 0 background. ``cases`` is the number of TRAINING cubes; ``--val-cases`` and ``--test-cases`` add the
other two splits.

Each B-scan shows a curved retina (bright nerve-fibre layer, alternating inner layers, dark outer nuclear layer,
bright photoreceptor line and RPE band, choroid fading below, dark vitreous above, foveal pit) under multiplicative
speckle. Lesions are smooth domes in the (slice, column) plane, so they continue over neighbouring slices and leave
the other slices lesion-free:

* REA (class 1): the retina thickens and its middle layers turn dark (swollen, fluid-filled tissue);
* SRF (class 2): a black pocket between the lifted retina and the RPE;
* PED (class 3): the RPE band lifted into a dome over a grey sub-RPE space (small, as in the challenge data).

Which lesions a cube has follows a fixed cycle (first cube of each split: all three; one in six: none), so even a
handful of cubes covers every class. Output is a pure function of ``seed`` and the options.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from data.ai_challenger_oct import IMAGE_DIR, IMAGE_SUFFIX, LABEL_DIR, LABEL_SUFFIX, SPLIT_DIRS
from formats.oct import write_oct_cube

__all__ = ["add_arguments", "generate", "synthesize_cube"]

_LESION_CYCLE: tuple[tuple[str, ...], ...] = (
    ("REA", "SRF", "PED"),
    ("REA",),
    ("REA", "SRF"),
    (),
    ("REA", "PED"),
    ("SRF",),
)
_CODES = {"REA": 255, "SRF": 191, "PED": 128}
# depth in the retina (0 = inner limiting membrane, 1 = photoreceptor tips) -> reflectivity
_LAYER_T = np.array([0.0, 0.07, 0.1, 0.28, 0.32, 0.4, 0.44, 0.5, 0.55, 0.82, 0.86, 0.9, 0.94, 1.0])
_LAYER_V = np.array([0.62, 0.6, 0.38, 0.36, 0.2, 0.2, 0.33, 0.3, 0.13, 0.12, 0.5, 0.48, 0.25, 0.25])
_RPE_HALF = 0.011  # half thickness of the RPE band, fraction of the image height


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Cube size and split options (defaults: the challenge's 128 slices of 1024 x 512)."""
    parser.add_argument("--slices", type=int, default=128, help="B-scans per cube (challenge: 128)")
    parser.add_argument("--height", type=int, default=1024, help="rows per B-scan, a multiple of 16 (challenge: 1024)")
    parser.add_argument("--width", type=int, default=512, help="columns per B-scan, a multiple of 16 (challenge: 512)")
    parser.add_argument("--val-cases", type=int, default=2, help="validation cubes (with labels)")
    parser.add_argument("--test-cases", type=int, default=1, help="test cubes (images only)")


def _dome(x: np.ndarray, z: np.ndarray, cx: float, cz: float, rx: float, rz: float) -> np.ndarray:
    """Smooth dome profile (1 - r^2)^2 in [0, 1] over the (slice, column) grid, 0 outside the ellipse."""
    r2 = ((x[None, :] - cx) / rx) ** 2 + ((z[:, None] - cz) / rz) ** 2
    return np.clip(1.0 - r2, 0.0, 1.0) ** 2


def synthesize_cube(
    rng: np.random.Generator, lesions: tuple[str, ...], slices: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """One cube: ``(image, label)``, both ``(slices, height, width)`` uint8; label in the challenge's grey codes."""
    x = np.linspace(-1.0, 1.0, width)
    z = np.linspace(-1.0, 1.0, slices) if slices > 1 else np.zeros(1)
    zero = np.zeros((slices, width))
    # surfaces as (slice, column) maps, in fractions of the image height (y grows downwards)
    bruch = (
        rng.uniform(0.55, 0.62)
        + rng.uniform(-0.04, 0.04) * x[None, :]
        + rng.uniform(-0.02, 0.02) * z[:, None]
        + rng.uniform(0.02, 0.06) * x[None, :] ** 2
    )
    fx, fz = rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2)
    pit = np.exp(-((x[None, :] - fx) ** 2) / 0.03 - (z[:, None] - fz) ** 2 / 0.05)
    thickness = rng.uniform(0.16, 0.2) * (1.0 - 0.45 * pit)
    # lesion sizes in grid units, at least a few pixels / slices wide and high so that small demo cubes keep them
    dx, dz, dy = 2.0 / max(width - 1, 1), 2.0 / max(slices - 1, 1), 1.0 / height
    cx, cz = rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4)
    f_rea = f_srf = f_ped = zero
    if "REA" in lesions:
        f_rea = _dome(x, z, cx, cz, max(rng.uniform(0.25, 0.5), 6 * dx), max(rng.uniform(0.3, 0.6), 2.5 * dz))
    if "SRF" in lesions:
        sx, sz = cx + rng.uniform(-0.1, 0.1), cz + rng.uniform(-0.1, 0.1)
        f_srf = _dome(x, z, sx, sz, max(rng.uniform(0.12, 0.25), 5 * dx), max(rng.uniform(0.2, 0.4), 2 * dz))
    if "PED" in lesions:
        px, pz = rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5)
        f_ped = _dome(x, z, px, pz, max(rng.uniform(0.1, 0.18), 4 * dx), max(rng.uniform(0.15, 0.3), 2 * dz))
    rpe = bruch - max(rng.uniform(0.03, 0.05), 4 * dy) * f_ped
    outer = rpe - _RPE_HALF - max(rng.uniform(0.03, 0.06), 4 * dy) * f_srf
    ilm = outer - thickness - rng.uniform(0.05, 0.09) * f_rea

    y = (np.arange(height) + 0.5)[:, None] / height
    image = np.empty((slices, height, width), dtype=np.uint8)
    label = np.zeros((slices, height, width), dtype=np.uint8)
    for s in range(slices):
        top, bottom, band, base = ilm[s][None, :], outer[s][None, :], rpe[s][None, :], bruch[s][None, :]
        depth = (y - top) / (bottom - top)
        retina = (depth >= 0) & (depth < 1)
        value = np.where(y < top, 0.03, 0.0)
        value = np.where(retina, np.interp(depth, _LAYER_T, _LAYER_V), value)
        rea = retina & (f_rea[s][None, :] > 0.2) & (depth > 0.2) & (depth < 0.8)
        value = np.where(rea, value * 0.35, value)
        srf = (y >= bottom) & (y < band - _RPE_HALF)
        value = np.where(srf, 0.04, value)
        value = np.where(np.abs(y - band) < _RPE_HALF, 0.85, value)
        ped = (y >= band + _RPE_HALF) & (y < base + _RPE_HALF)
        value = np.where(ped, 0.16, value)
        below = y >= np.maximum(band, base) + _RPE_HALF
        value = np.where(below, 0.05 + 0.3 * np.exp(-(y - base - _RPE_HALF) / 0.06), value)
        speckle = rng.gamma(4.0, 0.25, size=value.shape) + rng.normal(0.0, 0.015, size=value.shape)
        image[s] = np.clip(value * speckle * 255.0, 0, 255).astype(np.uint8)
        label[s][rea] = _CODES["REA"]
        label[s][srf] = _CODES["SRF"]
        label[s][ped] = _CODES["PED"]
    return image, label


def generate(
    out_dir: Path,
    cases: int,
    seed: int,
    slices: int = 128,
    height: int = 1024,
    width: int = 512,
    val_cases: int = 2,
    test_cases: int = 1,
) -> None:
    """Write ``cases`` training, ``val_cases`` validation and ``test_cases`` test cubes under ``out_dir``."""
    if cases < 1 or val_cases < 0 or test_cases < 0:
        raise ValueError(f"need cases >= 1 and val/test cases >= 0, got {cases}, {val_cases}, {test_cases}")
    if slices < 1 or height < 16 or width < 16 or height % 16 or width % 16:
        raise ValueError(f"need slices >= 1 and height, width multiples of 16, got {slices}, {height}, {width}")
    out_dir = Path(out_dir)
    counter = 0
    for split, count in (("training", cases), ("validation", val_cases), ("test", test_cases)):
        root = out_dir / SPLIT_DIRS[split]
        for i in range(count):
            counter += 1
            rng = np.random.default_rng([seed, counter])
            eye, serial = ("OD" if counter % 2 else "OS"), 90000 + counter
            case = f"PS{counter:03d}_MacularCube{width}x{slices}_1-{counter}-2018_10-0-0_{eye}_sn{serial}_cube_z"
            image, label = synthesize_cube(rng, _LESION_CYCLE[i % len(_LESION_CYCLE)], slices, height, width)
            write_oct_cube(root / IMAGE_DIR / f"{case}{IMAGE_SUFFIX}", image)
            if split != "test":
                write_oct_cube(root / LABEL_DIR / f"{case}{LABEL_SUFFIX}", label)
