"""Synthetic FUGC 2025 cases: transvaginal ultrasound of the cervix, a few labelled and many unlabelled images.

Writes the challenge's layout (:mod:`data.fugc`)::

    out_dir/images/NNNN.png          3-channel uint8 PNG (identical channels), H x W (default 336 x 544)
    out_dir/labels/NNNN.png          8-bit class indices 0 background, 1 anterior lip, 2 posterior lip
                                     (labelled images only)
    out_dir/hidden_labels/NNNN.png   the same for the unlabelled images: the truth the challenge never gives,
                                     kept aside (not read by the datalist) to score pseudo-labels later

Each image is a fan-shaped sector (the transducer at the top centre, black outside the fan) of Rayleigh
speckle over smooth tissue, with depth attenuation. The cervix is a curved canal, a thin dark band, between two
lips: the anterior lip on the side facing the transducer, the posterior lip on the far side. Each lip is
layered: a bright mucosa next to the canal and a medium stroma behind it, over tissue darker than the lips.
Position, size, orientation, curvature and lip thicknesses vary.

So that the unlabelled images genuinely help, the labelled images are drawn from a narrower range (near the
centre of the fan, middle sizes, nearly horizontal) than the unlabelled ones (anywhere in the fan, small to
large, tilted up to 40 degrees): a model trained on the labelled few alone does not see all the variation.
Which images are labelled is drawn with the seed. Deterministic: image ``i`` uses ``default_rng([seed, i])``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from data.fugc import IMAGE_DIR, LABEL_DIR
from formats.png import save_png_atomic, save_rgb_png_atomic

__all__ = ["HIDDEN_LABEL_DIR", "add_arguments", "generate", "synthesize_case"]

HIDDEN_LABEL_DIR = "hidden_labels"

# (low, high) ranges of the cervix geometry, in fractions of the image size or degrees, for labelled images
# and for unlabelled ones (a wider range containing the labelled one)
LABELLED_RANGES = {"row": (0.5, 0.6), "col": (0.45, 0.55), "length": (0.45, 0.55), "angle": (-8.0, 8.0)}
UNLABELLED_RANGES = {"row": (0.38, 0.72), "col": (0.32, 0.68), "length": (0.3, 0.7), "angle": (-40.0, 40.0)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of this generator."""
    parser.add_argument("--height", type=int, default=336, help="image height (default 336, the challenge's)")
    parser.add_argument("--width", type=int, default=544, help="image width (default 544, the challenge's)")
    parser.add_argument(
        "--labelled",
        type=float,
        default=0.1,
        help="fraction of the images that get a label file (default 0.1, the challenge's 50 of 500; at least one)",
    )
    parser.add_argument(
        "--heldout",
        action="store_true",
        help="a held-out test set: every image labelled, drawn from the full range of the unlabelled images",
    )


def _sector(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The fan of a curved transvaginal probe at the top centre: inside mask and depth (0 at the probe, 1 at the
    bottom)."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    apex = -0.15 * height
    radius = np.hypot(rows - apex, cols - width / 2)
    angle = np.degrees(np.arctan2(cols - width / 2, rows - apex))
    inside = (np.abs(angle) <= 38.0) & (radius >= 0.25 * height) & (radius <= height - apex - 2)
    return inside, (radius - 0.25 * height) / (height - apex - 0.25 * height)


def _cervix(
    rng: np.random.Generator, height: int, width: int, ranges: dict[str, tuple[float, float]]
) -> tuple[np.ndarray, np.ndarray]:
    """Label map (0, 1 anterior, 2 posterior) and echogenicity (before speckle) of the cervix region."""
    row = rng.uniform(*ranges["row"]) * height
    col = rng.uniform(*ranges["col"]) * width
    half_length = rng.uniform(*ranges["length"]) * width / 2
    angle = np.radians(rng.uniform(*ranges["angle"]))
    curvature = rng.uniform(-0.4, 0.4) / half_length  # canal bends up or down
    scale = half_length / (0.25 * width)
    gap = max(1.5, rng.uniform(0.006, 0.012) * height * scale)  # canal half-width
    thickness_anterior = rng.uniform(0.09, 0.14) * height * scale
    thickness_posterior = rng.uniform(0.1, 0.16) * height * scale
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    # u along the canal, v across it, v > 0 towards the transducer (up when not tilted)
    u = (cols - col) * np.cos(angle) - (rows - row) * np.sin(angle)
    v = -(cols - col) * np.sin(angle) - (rows - row) * np.cos(angle)
    across = v - curvature * u**2  # signed distance from the curved canal, roughly
    taper = np.sqrt(np.clip(1 - (u / half_length) ** 2, 0, None)) ** 0.6  # rounded ends of the lips
    anterior = (across >= gap) & (across <= gap + thickness_anterior * taper)
    posterior = (across <= -gap) & (across >= -gap - thickness_posterior * taper)
    label = np.zeros((height, width), np.uint8)
    label[anterior], label[posterior] = 1, 2
    depth_in_lip = np.where(across > 0, across - gap, -across - gap)
    mucosa = np.exp(-0.5 * (depth_in_lip / (0.25 * thickness_anterior)) ** 2)  # bright layer along the canal
    echo = np.where(label > 0, 0.55 + 0.35 * mucosa, 0.0)
    canal = (np.abs(across) < gap) & (np.abs(u) < half_length)
    return label, np.where(canal, -1.0, echo)


def synthesize_case(
    rng: np.random.Generator, height: int = 336, width: int = 544, labelled_range: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """One image ``(H, W)`` uint8 and its label ``(H, W)`` uint8 (0, 1, 2); ``labelled_range`` draws the cervix
    from the narrower range of the labelled images."""
    inside, depth = _sector(height, width)
    label, cervix_echo = _cervix(rng, height, width, LABELLED_RANGES if labelled_range else UNLABELLED_RANGES)
    label[~inside] = 0
    texture = gaussian_filter(rng.standard_normal((height, width)), 10)
    tissue = 0.3 + 0.05 * texture / (texture.std() + 1e-8)  # smooth tissue, darker than the lips
    echo = np.where(label > 0, cervix_echo, tissue)
    echo = np.where(cervix_echo < 0, 0.06, echo)  # the canal: dark
    echo = gaussian_filter(echo, 1.0)
    speckle = np.abs(
        gaussian_filter(rng.standard_normal((height, width)), (0.8, 1.4))
        + 1j * gaussian_filter(rng.standard_normal((height, width)), (0.8, 1.4))
    )
    speckle = 0.4 + 0.6 * speckle / speckle.mean()
    attenuation = np.exp(-rng.uniform(0.3, 0.8) * np.clip(depth, 0, 1))
    image = np.clip(echo, 0, None) * speckle * attenuation * rng.uniform(200, 240)
    image[~inside] = 0
    return np.clip(image, 0, 255).astype(np.uint8), label


def generate(
    out_dir: Path,
    cases: int,
    seed: int,
    height: int = 336,
    width: int = 544,
    labelled: float = 0.1,
    heldout: bool = False,
) -> None:
    """Write ``cases`` images under ``out_dir`` (see the module doc), ``round(labelled * cases)`` (at least one)
    of them with labels, the others with their truth in ``hidden_labels/``; ``heldout``: every image from the
    unlabelled images' full range, with its label in ``labels/`` (a test set scoring the variation the labelled
    few miss)."""
    if cases < 2:
        raise ValueError(f"cases must be at least 2 (labelled and unlabelled images), got {cases}")
    if not 0 < labelled < 1:
        raise ValueError(f"labelled must be a fraction in (0, 1), got {labelled}")
    if height < 32 or width < 32:
        raise ValueError(f"images must be at least 32 x 32, got {height} x {width}")
    out_dir = Path(out_dir)
    num_labelled = min(cases - 1, max(1, round(labelled * cases)))
    labelled_ids = set(np.random.default_rng(seed).choice(cases, num_labelled, replace=False).tolist())
    for i in range(cases):
        is_labelled = i in labelled_ids and not heldout
        image, label = synthesize_case(np.random.default_rng([seed, i]), height, width, is_labelled)
        save_rgb_png_atomic(out_dir / IMAGE_DIR / f"{i:04d}.png", np.repeat(image[..., None], 3, axis=-1))
        label_dir = LABEL_DIR if is_labelled or heldout else HIDDEN_LABEL_DIR
        save_png_atomic(out_dir / label_dir / f"{i:04d}.png", label)
