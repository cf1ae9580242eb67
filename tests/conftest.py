"""Shared test settings: deterministic seeds and paths to the shared real samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

# pytest-xdist runs one worker per core: more than one intra-op thread per worker oversubscribes the cores,
# and OpenMP's spin-waiting then makes small ops tens of times slower.
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_SAMPLES = REPO_ROOT.parent / "shared" / "real_samples"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def real_samples() -> Path:
    """The folder of real images shipped beside the repository (see its SOURCES.md)."""
    if not REAL_SAMPLES.is_dir():
        pytest.fail(f"real samples not found at {REAL_SAMPLES}: the repository must sit beside shared/")
    return REAL_SAMPLES
