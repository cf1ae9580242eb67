"""Measuring helpers shared by the bundle benchmarks: timing, peak memory, inference paths, agreement, report.

Timing is wall-clock ``time.perf_counter`` around each call, after a warm-up, with ``torch.cuda.synchronize``
before and after a call on a GPU (kernels run asynchronously); the figure is the median of the repeats.

Peak memory (:class:`utils.memory.PeakMemory`, shared with the inference workflow): on a GPU
``torch.cuda.max_memory_allocated`` (reset before the measured calls; it includes the weights), on the CPU the
process's resident-set high-water mark ``VmHWM``, reset before the measured calls; ``memory_delta_mb`` is that
peak minus the memory at the start, i.e. the working memory of the measured calls.

Inference paths (:func:`candidate_paths`): fp32 eager, channels_last, low-precision autocast (bf16 on the
CPU, fp16 on CUDA) with and without channels_last, TorchScript (script, or trace where scripting fails)
frozen, ``torch.compile`` in fp32 and with autocast, and the network exported to ONNX and run by ONNX Runtime (fp32)
and OpenVINO (fp32, and bf16 where the CPU computes bf16 natively) (:mod:`networks.runtime`; CPU only, skipped
with the package to install when a runtime is missing). Each is built on a deep copy of the model in eval
mode and runs under ``torch.inference_mode``; a path that fails to build or run is reported as
``failed: reason`` and the others go on (:func:`benchmark_paths`). :func:`pick_fastest` chooses the fastest
path whose argmax agreement with fp32 stays above a threshold.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import importlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from monai.data import MetaTensor
from torch import nn

from networks.runtime import BACKENDS, build_runtime
from utils.memory import PeakMemory
from utils.precision import Precision, cpu_has_native_bf16

__all__ = [
    "Candidate",
    "PathResult",
    "PeakMemory",
    "Report",
    "StepClock",
    "TimingStats",
    "argmax_agreement",
    "benchmark_paths",
    "candidate_paths",
    "count_parameters",
    "environment",
    "failure_reason",
    "format_table",
    "low_precision_dtype",
    "pick_fastest",
    "resolve_device",
    "runtime_paths",
    "synchronize",
    "time_inference",
]


# ----------------------------------------------------------------------------------------------- device


def resolve_device(name: str | None = None) -> torch.device:
    """``cuda`` if available when ``name`` is None; raises ``ValueError`` for ``cuda`` without a GPU."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch.cuda.is_available() is False")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the queued GPU work of ``device`` (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def low_precision_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype of the low-precision paths: bf16 on the CPU (oneDNN), fp16 on CUDA."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[dtype]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------------------------- timing


@dataclass
class TimingStats:
    """Per-call wall-clock times (ms) of ``repeats`` calls after ``warmup`` calls, and the peak memory."""

    times_ms: list[float]
    warmup: int
    peak_memory_mb: float | None = None
    memory_delta_mb: float | None = None
    memory_kind: str = ""

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def min_ms(self) -> float:
        return min(self.times_ms)

    def as_dict(self) -> dict[str, Any]:
        return {
            "median_ms": self.median_ms,
            "min_ms": self.min_ms,
            "max_ms": max(self.times_ms),
            "mean_ms": statistics.fmean(self.times_ms),
            "repeats": len(self.times_ms),
            "warmup": self.warmup,
            "times_ms": self.times_ms,
            "peak_memory_mb": self.peak_memory_mb,
            "memory_delta_mb": self.memory_delta_mb,
            "memory_kind": self.memory_kind,
        }


def _as_args(inputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)


def time_inference(
    fn: Callable[..., Any], inputs: torch.Tensor | Sequence[torch.Tensor], warmup: int = 1, repeats: int = 5
) -> TimingStats:
    """Call ``fn(*inputs)`` ``warmup`` times untimed, then ``repeats`` times timed, one by one.

    The device (for synchronisation and memory) is that of the first input. ``fn`` is responsible for its own
    ``inference_mode``/autocast (the paths of :func:`candidate_paths` are).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    args = _as_args(inputs)
    device = args[0].device
    for _ in range(warmup):
        fn(*args)
    times = []
    with PeakMemory(device) as memory:
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            fn(*args)
            synchronize(device)
            times.append((time.perf_counter() - start) * 1000.0)
    return TimingStats(times, warmup, memory.peak_mb, memory.delta_mb, memory.kind)


class StepClock:
    """Timestamps of the ends of training iterations (``tick`` after each; synchronised on a GPU).

    ``items_per_second(items_per_step, warmup)`` is the throughput over the iterations after the first
    ``warmup`` ones, measured from the end of iteration ``warmup`` to the end of the last one, so that start-up
    (first optimizer step, allocator warm-up, ...) is excluded the same way for every loop.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.ticks: list[float] = []

    def tick(self, *_: Any) -> None:
        """Record the end of an iteration (extra arguments are ignored, so it can be an Ignite handler)."""
        synchronize(self.device)
        self.ticks.append(time.perf_counter())

    def seconds_per_step(self, warmup: int) -> float:
        if warmup < 1 or len(self.ticks) <= warmup:
            raise ValueError(f"need at least 1 warm-up iteration and more ticks than that, got {warmup} of "
                             f"{len(self.ticks)}")
        return (self.ticks[-1] - self.ticks[warmup - 1]) / (len(self.ticks) - warmup)

    def items_per_second(self, items_per_step: int, warmup: int) -> float:
        return items_per_step / self.seconds_per_step(warmup)


# ----------------------------------------------------------------------------------------------- agreement


def argmax_agreement(a_logits: torch.Tensor, b_logits: torch.Tensor, dim: int = 1) -> float:
    """Fraction of positions where the argmax over ``dim`` (the class axis) of two logit tensors is the same."""
    if a_logits.shape != b_logits.shape:
        raise ValueError(f"logits differ in shape: {tuple(a_logits.shape)} vs {tuple(b_logits.shape)}")
    a = torch.argmax(a_logits.float(), dim=dim)
    b = torch.argmax(b_logits.float(), dim=dim)
    return (a == b).float().mean().item()


# ----------------------------------------------------------------------------------------------- paths


@dataclass
class Candidate:
    """An inference path: ``build()`` returns ``(fn, note)`` with ``fn(x) -> output``; ``skip`` gives a reason
    not to run it (e.g. ``--skip-compile``)."""

    name: str
    build: Callable[[], tuple[Callable[..., Any], str]]
    skip: str | None = None


def _memory_format(example: torch.Tensor) -> torch.memory_format:
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    if example.ndim not in formats:
        raise ValueError(f"channels_last needs a 4-D or 5-D input, got shape {tuple(example.shape)}")
    return formats[example.ndim]


def _runner(
    net: Callable[..., Any],
    device: torch.device,
    dtype: torch.dtype | None,
    memory_format: torch.memory_format | None,
    meta: bool = False,
) -> Callable[..., Any]:
    def run(*args: torch.Tensor) -> Any:
        if memory_format is not None:
            args = tuple(a.contiguous(memory_format=memory_format) for a in args)
        if meta:
            args = tuple(MetaTensor(a) for a in args)
        autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            return net(*args)

    return run


def _eager(
    model: nn.Module,
    device: torch.device,
    dtype: torch.dtype | None,
    memory_format: torch.memory_format | None,
    meta: bool = False,
) -> tuple[Callable[..., Any], str]:
    net = copy.deepcopy(model).eval()
    if memory_format is not None:
        net = net.to(memory_format=memory_format)
    note = "input wrapped in a MONAI MetaTensor, as transforms hand it over" if meta else ""
    return _runner(net, device, dtype, memory_format, meta), note


def _torchscript(model: nn.Module, example: tuple[torch.Tensor, ...], device: torch.device) -> tuple[Callable, str]:
    net = copy.deepcopy(model).eval()
    try:
        scripted, how = torch.jit.script(net), "script"
    except Exception as error:  # scripting fails on many python constructs: fall back to tracing
        with torch.no_grad():
            scripted = torch.jit.trace(net, example)
        how = f"trace (script failed: {failure_reason(error)})"
    return _runner(torch.jit.freeze(scripted), device, None, None), f"torch.jit.{how} + freeze"


def _compiled(model: nn.Module, device: torch.device, dtype: torch.dtype | None) -> tuple[Callable, str]:
    net = torch.compile(copy.deepcopy(model).eval())
    return _runner(net, device, dtype, None), "torch.compile (inductor, default mode); first call compiles"


def _exported(model: nn.Module, backend: str, dtype: torch.dtype | None) -> tuple[Callable, str]:
    net = build_runtime(copy.deepcopy(model).eval(), backend, Precision(dtype))
    precision = "fp32" if dtype is None or backend == "onnxruntime" else _dtype_name(dtype)
    return _runner(net, torch.device("cpu"), None, None), f"ONNX (dynamic axes) run by {backend} in {precision}"


def _runtime_skip(backend: str, device: torch.device, dtype: torch.dtype | None = None) -> str | None:
    """Why a runtime path cannot run here (None if it can)."""
    if device.type != "cpu":
        return f"{backend} is measured on the CPU only"
    if dtype == torch.bfloat16 and not cpu_has_native_bf16():
        return "no native bf16 on this CPU"
    for package in ("onnx", BACKENDS[backend]):
        try:
            importlib.import_module(package)
        except ImportError:
            return f"package {package!r} not installed (pip install {package})"
    return None


def runtime_paths(model: nn.Module, device: torch.device) -> dict[str, Candidate]:
    """The ONNX runtime paths: ``onnxruntime`` (fp32), ``openvino`` (fp32), ``openvino+bf16``; each with a
    ``skip`` reason off the CPU, without the package, or (bf16) without native bf16."""
    return {
        "onnxruntime": Candidate(
            "onnxruntime", lambda: _exported(model, "onnxruntime", None), skip=_runtime_skip("onnxruntime", device)
        ),
        "openvino": Candidate(
            "openvino", lambda: _exported(model, "openvino", None), skip=_runtime_skip("openvino", device)
        ),
        "openvino+bf16": Candidate(
            "openvino+bf16",
            lambda: _exported(model, "openvino", torch.bfloat16),
            skip=_runtime_skip("openvino", device, torch.bfloat16),
        ),
    }


def candidate_paths(
    model: nn.Module,
    example: torch.Tensor | Sequence[torch.Tensor],
    skip_compile: bool = False,
    runtimes: bool = True,
) -> dict[str, Candidate]:
    """The inference paths to compare, by name; ``"fp32"`` (eager) first, the reference of the others.

    ``model`` and ``example`` (plain tensors) must be on the device to measure; each path builds on a deep copy
    of ``model``. Names: ``fp32``, ``fp32+metatensor`` (fp32 eager on the input wrapped in a MONAI
    ``MetaTensor``, as a transform pipeline hands it over: every op then goes through
    ``MetaTensor.__torch_function__``, which is the price of not converting before the network),
    ``channels_last``, ``bf16``/``fp16`` (autocast; bf16 on the CPU, fp16 on CUDA), ``bf16+channels_last``,
    ``torchscript`` (frozen), ``compile``, ``compile+bf16`` (``skip`` set with ``skip_compile``), and with
    ``runtimes`` those of :func:`runtime_paths` (``onnxruntime``, ``openvino``, ``openvino+bf16``).
    """
    args = _as_args(example)
    device = args[0].device
    low = low_precision_dtype(device)
    low_name = _dtype_name(low)
    channels_last = _memory_format(args[0])
    compile_skip = "--skip-compile" if skip_compile else None
    paths = {
        "fp32": Candidate("fp32", lambda: _eager(model, device, None, None)),
        "fp32+metatensor": Candidate("fp32+metatensor", lambda: _eager(model, device, None, None, meta=True)),
        "channels_last": Candidate("channels_last", lambda: _eager(model, device, None, channels_last)),
        low_name: Candidate(low_name, lambda: _eager(model, device, low, None)),
        f"{low_name}+channels_last": Candidate(
            f"{low_name}+channels_last", lambda: _eager(model, device, low, channels_last)
        ),
        "torchscript": Candidate("torchscript", lambda: _torchscript(model, args, device)),
        "compile": Candidate("compile", lambda: _compiled(model, device, None), skip=compile_skip),
        f"compile+{low_name}": Candidate(
            f"compile+{low_name}", lambda: _compiled(model, device, low), skip=compile_skip
        ),
    }
    return {**paths, **runtime_paths(model, device)} if runtimes else paths


@dataclass
class PathResult:
    """Outcome of one inference path: ``status`` is ``ok``, ``failed: reason`` or ``skipped: reason``;
    ``agreement`` (argmax agreement with the reference) and ``details`` come from the bundle's ``compare``."""

    name: str
    status: str
    note: str = ""
    first_call_ms: float | None = None
    stats: TimingStats | None = None
    agreement: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    speedup: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def median_ms(self) -> float | None:
        return None if self.stats is None else self.stats.median_ms

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stats"] = None if self.stats is None else self.stats.as_dict()
        data["median_ms"] = self.median_ms
        return data


def failure_reason(error: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters), for a ``failed: ...`` status."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


def benchmark_paths(
    candidates: Mapping[str, Candidate],
    example: torch.Tensor | Sequence[torch.Tensor],
    compare: Callable[[Any, Any], Mapping[str, Any]],
    warmup: int = 1,
    repeats: int = 5,
    reference: str = "fp32",
    log: Callable[[str], None] | None = None,
) -> list[PathResult]:
    """Build, run and time every candidate on ``example``; compare each output with the ``reference`` path's.

    ``compare(reference_output, output)`` returns a dict with ``"agreement"`` (a fraction, e.g. from
    :func:`argmax_agreement`) and any other bundle-specific figures, stored in ``details``. ``first_call_ms``
    is the time to build the path and make its first call (TorchScript / compile time). A failing path gets
    ``status = "failed: reason"``; ``log`` (e.g. ``print``) is told about each path as it finishes.

    Raises:
        ValueError: ``reference`` is not a candidate.
        RuntimeError: the reference path itself fails (nothing to compare with).
    """
    if reference not in candidates:
        raise ValueError(f"reference path {reference!r} is not among the candidates {list(candidates)}")
    args = _as_args(example)
    device = args[0].device
    order = [reference, *(name for name in candidates if name != reference)]
    reference_output = None
    results = []
    for name in order:
        candidate = candidates[name]
        if candidate.skip:
            result = PathResult(name, f"skipped: {candidate.skip}")
        else:
            result = _run_candidate(candidate, args, device, warmup, repeats)
            if result.ok:
                output = result.details.pop("output")
                if name == reference:
                    reference_output = output
                figures = dict(compare(reference_output, output))
                result.agreement = figures.pop("agreement", None)
                result.details = figures
                del output
            elif name == reference:
                raise RuntimeError(f"the reference path {reference!r} failed: {result.status}")
        results.append(result)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if log is not None:
            timing = "" if result.median_ms is None else f" {result.median_ms:.1f} ms"
            log(f"  {name}: {result.status}{timing}")
    base = results[0].median_ms
    for result in results:
        if result.ok and base:
            result.speedup = base / result.median_ms
    return results


def _run_candidate(
    candidate: Candidate, args: tuple[torch.Tensor, ...], device: torch.device, warmup: int, repeats: int
) -> PathResult:
    try:
        synchronize(device)
        start = time.perf_counter()
        fn, note = candidate.build()
        output = fn(*args)
        synchronize(device)
        first_call_ms = (time.perf_counter() - start) * 1000.0
        stats = time_inference(fn, args, warmup=warmup, repeats=repeats)
    except Exception as error:  # any failure of one path is a figure, not the end of the benchmark
        return PathResult(candidate.name, f"failed: {failure_reason(error)}")
    return PathResult(candidate.name, "ok", note, first_call_ms, stats, details={"output": _detach(output)})


def _detach(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output.detach().float().clone()
    if isinstance(output, (list, tuple)):
        return type(output)(_detach(o) for o in output)
    if isinstance(output, Mapping):
        return {k: _detach(v) for k, v in output.items()}
    return output


def pick_fastest(
    results: Sequence[PathResult], min_agreement: float = 0.995, require: Callable[[PathResult], bool] | None = None
) -> PathResult | None:
    """The fastest successful path with ``agreement >= min_agreement`` (and ``require(result)`` if given);
    None if none qualifies. The reference always agrees with itself, so it is the fallback."""
    eligible = [
        r
        for r in results
        if r.ok and r.agreement is not None and r.agreement >= min_agreement and (require is None or require(r))
    ]
    return min(eligible, key=lambda r: r.median_ms, default=None)


# ----------------------------------------------------------------------------------------------- model facts


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of ``module`` (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters())


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, hardware and threading of this run; the load average tells whether the machine was busy."""
    import monai

    try:
        import ignite

        ignite_version = ignite.__version__
    except ImportError:
        ignite_version = None
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "ignite": ignite_version,
        "platform": platform.platform(),
        "device": str(device),
        "cpu": _cpu_model(),
        "cpu_count_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            cudnn_benchmark=torch.backends.cudnn.benchmark,
        )
    return env


# ----------------------------------------------------------------------------------------------- report


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain-text table: columns padded to their widest cell, numbers right-aligned, None shown as ``-``."""
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    numeric = [all(_is_number(row[i]) for row in rows) and bool(rows) for i in range(len(headers))]

    def fmt(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    lines = [fmt([str(h) for h in headers]), "  ".join("-" * w for w in widths)]
    lines += [fmt(row) for row in cells]
    return "\n".join(lines)


def _is_number(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (int, float)):
        return True
    text = str(value).rstrip("x%")
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


class Report:
    """The figures of one run: each section is printed as soon as it is filled and kept for ``--json``.

    ``section(key, title)`` prints a heading and returns the dict stored under ``sections[key]`` (put the
    JSON figures there); ``line`` and ``table`` print text only.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.sections: dict[str, dict[str, Any]] = {}

    def section(self, key: str, title: str) -> dict[str, Any]:
        self.line(f"\n== {title} ==")
        self.sections[key] = {"title": title}
        return self.sections[key]

    def line(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.line(format_table(headers, rows))
