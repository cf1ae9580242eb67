"""Shared test settings: deterministic seeds and the real sample images shipped with the tests."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

# pytest-xdist runs one worker per core: more than one intra-op thread per worker oversubscribes the cores,
# and OpenMP's spin-waiting then makes small ops tens of times slower.
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_SAMPLES = REPO_ROOT / "tests" / "data" / "real"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(autouse=True)
def _absl_handler_on_real_stderr():
    """OpenVINO imports absl, whose log handler writes to the ``sys.stderr`` of its import (a pytest capture
    stream) and closes that stream whenever ``logging.shutdown`` runs (every ``logging.config.fileConfig``, e.g. a
    bundle's logging.conf) unless it is the current ``sys.stderr``: after each test it is pointed at the real one."""
    yield
    absl_logging = sys.modules.get("absl.logging")
    if absl_logging is not None:
        absl_logging.get_absl_handler().python_handler.stream = sys.__stderr__


@pytest.fixture(scope="session")
def real_samples() -> Path:
    """The folder of real images shipped with the tests (sources and licences in its SOURCES.md)."""
    return REAL_SAMPLES
