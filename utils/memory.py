"""Peak memory of a block of code: GPU allocator peak, or the process's resident-set high-water mark on the CPU.

On a GPU ``torch.cuda.max_memory_allocated`` (reset on entry; it includes the weights). On the CPU the
``VmHWM`` of ``/proc/self/status``, reset on entry by writing ``5`` to ``/proc/self/clear_refs`` (Linux), so that
it is the peak of the block and not of the process's life. ``tracemalloc`` and ``resource.getrusage`` do not see
torch's allocations or cannot be reset, which is why they are not used.
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["PeakMemory", "status_kb"]

_PROC_STATUS = Path("/proc/self/status")
_PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


def status_kb(field_name: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), None where unavailable."""
    try:
        for line in _PROC_STATUS.read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Context manager measuring the peak memory of the code inside it (see the module docstring).

    After the block: ``peak_mb`` (GPU: ``max_memory_allocated``; CPU: process ``VmHWM``; None where unavailable),
    ``delta_mb`` (peak minus the allocated / resident memory at the start), ``kind`` (what was measured) and
    ``reset`` (False where the CPU high-water mark could not be reset: ``peak_mb`` is then the process's lifetime
    peak).
    """

    def __init__(self, device: str | torch.device) -> None:
        self.device = torch.device(device)
        self.peak_mb: float | None = None
        self.delta_mb: float | None = None
        self.reset = True
        self.kind = "cuda max_memory_allocated" if self.device.type == "cuda" else "CPU peak RSS (VmHWM)"
        self._start = 0.0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            try:
                _PROC_CLEAR_REFS.write_text("5")
            except OSError:
                pass
            rss, hwm = status_kb("VmRSS"), status_kb("VmHWM")
            # some kernels accept the write but keep the old high-water mark: then it is the lifetime peak
            self.reset = rss is not None and hwm is not None and hwm <= rss + 1024
            if not self.reset:
                self.kind += ", not resettable: lifetime peak"
            self._start = (rss or 0) / 1024
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            # the kernel refreshes VmHWM lazily; the resident set now is a lower bound of the peak too
            hwm, rss = status_kb("VmHWM"), status_kb("VmRSS")
            self.peak_mb = None if hwm is None else max(hwm, rss or 0) / 1024
        self.delta_mb = None if self.peak_mb is None else max(0.0, self.peak_mb - self._start)
