"""Which numeric precision and memory format a network runs in: the ``precision`` setting of the inference configs.

A setting is ``"auto"`` or ``<dtype>[+channels_last]`` with ``<dtype>`` one of ``fp32``, ``bf16``, ``fp16``:

- ``fp32``: exactly fp32 (no autocast, contiguous tensors);
- ``bf16`` / ``fp16``: the network under ``torch.autocast`` in that dtype (outputs returned in fp32);
- ``+channels_last``: weights and input in the NHWC (NDHWC) memory format, which oneDNN's convolutions prefer;
- ``auto``: ``fp16`` on CUDA; on a CPU with native bf16 instructions (:func:`cpu_has_native_bf16`) the bundle's
  own choice (``auto_cpu``, the fastest path of its benchmark that keeps the argmax agreement with fp32 at or
  above 99.5 %, see each bundle's docs); ``fp32`` elsewhere, where bf16 is emulated and slower than fp32.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["DTYPES", "Precision", "cpu_has_native_bf16", "resolve_precision"]

#: dtype names of a precision setting.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: ``/proc/cpuinfo`` flags of the x86 instructions that compute in bf16 (AVX512-BF16, AMX-BF16); Arm's is ``bf16``.
_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16 on x86, BF16 on Arm).

    Read from the ``flags`` / ``Features`` of ``/proc/cpuinfo`` (Linux). oneDNN also runs bf16 on older AVX-512
    CPUs (``torch.ops.mkldnn._is_mkldnn_bf16_supported``), but by conversion, which is slower than fp32 there, so
    that is not counted. False where ``/proc/cpuinfo`` cannot be read.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return bool(_BF16_FLAGS & set(value.split()))
    return False


@dataclass(frozen=True)
class Precision:
    """A resolved precision setting: ``dtype`` to autocast to (None: fp32, no autocast) and the memory format."""

    dtype: torch.dtype | None = None
    channels_last: bool = False

    @property
    def name(self) -> str:
        dtype = "fp32" if self.dtype is None else next(k for k, v in DTYPES.items() if v == self.dtype)
        return dtype + ("+channels_last" if self.channels_last else "")


def _parse(setting: str) -> Precision:
    dtype, plus, layout = setting.partition("+")
    if dtype not in DTYPES or (plus and layout != "channels_last"):
        raise ValueError(
            f"precision {setting!r} is not 'auto' or '<dtype>[+channels_last]' with <dtype> one of {sorted(DTYPES)}"
        )
    return Precision(None if dtype == "fp32" else DTYPES[dtype], bool(plus))


def resolve_precision(
    setting: str, device: str | torch.device, auto_cpu: str = "bf16+channels_last"
) -> Precision:
    """The :class:`Precision` that ``setting`` means on ``device`` (see the module docstring).

    Args:
        setting: ``"auto"`` or ``<dtype>[+channels_last]``.
        device: where the network runs.
        auto_cpu: what ``"auto"`` means on a CPU with native bf16 (a ``<dtype>[+channels_last]`` setting).

    Raises:
        ValueError: ``setting`` or ``auto_cpu`` is not a precision setting (the message names it).
    """
    auto = _parse(auto_cpu)
    if setting != "auto":
        return _parse(setting)
    device_type = torch.device(device).type
    if device_type == "cuda":
        return Precision(torch.float16)
    if device_type == "cpu" and cpu_has_native_bf16():
        return auto
    return Precision()
