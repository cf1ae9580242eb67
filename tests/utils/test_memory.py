from __future__ import annotations

import json
import subprocess
import sys

from utils.memory import status_kb

# A fresh process, so that what earlier tests of this worker allocated and freed cannot hide the allocation.
PROBE = """
import json, numpy as np
from utils.memory import PeakMemory
with PeakMemory("cpu") as big:
    block = np.ones(64 * 2**20 // 8)  # 64 MB touched, alive when the block ends
del block
with PeakMemory("cpu") as small:
    np.ones(2**20 // 8)
print(json.dumps({"reset": big.reset, "kind": big.kind, "big": big.delta_mb, "small": small.delta_mb}))
"""


def test_cpu_peak_covers_an_allocation_inside_the_block_and_is_reset_on_entry():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, encoding="utf-8", errors="replace", check=True).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["kind"].startswith("CPU peak RSS")
    assert figures["big"] > 48
    if figures["reset"]:  # Linux: the high-water mark starts again at the current resident set
        assert figures["small"] < figures["big"]
    assert status_kb("NoSuchField") is None
