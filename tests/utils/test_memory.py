from __future__ import annotations

import numpy as np
import torch

from utils.memory import PeakMemory, status_kb


def test_cpu_peak_covers_an_allocation_inside_the_block_and_is_reset_on_entry():
    with PeakMemory("cpu") as big:
        block = np.ones(64 * 2**20 // 8)  # 64 MB touched
        del block
    assert big.peak_mb is not None and big.delta_mb is not None
    assert big.kind.startswith("CPU peak RSS")
    if big.reset:  # Linux: the high-water mark starts again at the current resident set
        assert big.delta_mb > 48
        with PeakMemory(torch.device("cpu")) as small:
            np.ones(2**20 // 8)
        assert small.delta_mb < big.delta_mb
    assert status_kb("NoSuchField") is None
