"""How a network is executed at inference: PyTorch (autocast, memory format), ONNX Runtime or OpenVINO.

:func:`build_runtime` wraps a network (or an ensemble with its TTA) in a module with the same call signature,
``runtime(x) -> fp32 tensor``, so that an inferer (``SimpleInferer``, ``SliceInferer``, ...) and the inference
workflow use it unchanged:

- ``torch``: :class:`TorchRuntime`, the network itself under the resolved :class:`utils.precision.Precision`
  (autocast dtype, channels_last);
- ``onnxruntime`` / ``openvino``: :class:`OnnxRuntimeNetwork` / :class:`OpenVINONetwork`, the network exported
  to ONNX (:func:`networks.onnx.export_onnx`, dynamic batch and spatial axes) at the first call, with that call's
  input as the tracing example, then run by that runtime on the CPU with as many threads as torch uses.
  OpenVINO runs in bf16 where the precision asks for it (its ``INFERENCE_PRECISION_HINT``; OpenVINO's own default
  on a bf16 CPU is bf16, so fp32 is asked for explicitly); ONNX Runtime has no bf16 CPU kernels and runs fp32.

A missing runtime package raises :class:`ImportError` naming it. Which backend runs is the ``backend`` setting of the
inference configs, resolved by :func:`resolve_backend`: a backend name, or ``"auto"``: the bundle's own CPU choice
(``auto_cpu_backend``, the fastest path of its benchmark, see each bundle's docs) when the network runs on the CPU,
``torch`` on CUDA (the runtimes here are CPU only).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from networks.onnx import INPUT_NAME, export_onnx
from utils.precision import Precision

__all__ = [
    "AUTO",
    "BACKENDS",
    "OnnxRuntimeNetwork",
    "OpenVINONetwork",
    "TorchRuntime",
    "backend_packages",
    "build_runtime",
    "import_runtime",
    "resolve_backend",
    "runtime_descriptions",
]

logger = logging.getLogger(__name__)

#: backend name -> the package it needs (None: none beyond torch).
BACKENDS = {"torch": None, "onnxruntime": "onnxruntime", "openvino": "openvino"}
#: the backend setting that leaves the choice to the device: the bundle's ``auto_cpu_backend`` on a CPU, else torch.
AUTO = "auto"


def import_runtime(backend: str) -> Any:
    """The package of ``backend``; ImportError naming what to install when it is missing."""
    package = BACKENDS[backend]
    try:
        return importlib.import_module(package)
    except ImportError as error:
        raise ImportError(
            f"backend {backend!r} needs the package {package!r}, which is not installed: "
            f"pip install {package} (or set backend to 'torch')"
        ) from error


def backend_packages(backend: str) -> tuple[str, ...]:
    """The packages that ``backend`` imports when it runs (lazily, through importlib, so an import scan of the code
    does not see them): none for torch; ``onnx``, which writes the exported network, and the runtime's own."""
    package = BACKENDS[backend]
    return () if package is None else ("onnx", package)


def resolve_backend(setting: str, device: str | torch.device, auto_cpu: str = "torch") -> str:
    """The backend that the ``backend`` setting ``setting`` means on ``device``.

    ``"auto"`` is ``auto_cpu`` when the network runs on the CPU and ``"torch"`` on any other device (ONNX Runtime
    and OpenVINO run on the CPU here). When a package of the auto-chosen backend (:func:`backend_packages`) is
    missing, the network runs by torch and one warning names the package; a backend asked for by name whose package is missing raises
    :class:`ImportError` later, in :func:`build_runtime`.

    Args:
        setting: ``"auto"`` or one of :data:`BACKENDS`.
        device: where the network runs.
        auto_cpu: what ``"auto"`` means on a CPU (one of :data:`BACKENDS`): the bundle's measured fastest backend.

    Raises:
        ValueError: ``setting`` or ``auto_cpu`` is not a valid value (the message lists the valid ones).
    """
    if setting != AUTO and setting not in BACKENDS:
        raise ValueError(f"backend {setting!r} is not one of {[AUTO, *BACKENDS]}")
    if auto_cpu not in BACKENDS:
        raise ValueError(f"auto_cpu_backend {auto_cpu!r} is not one of {list(BACKENDS)}")
    if setting != AUTO:
        return setting
    if torch.device(device).type != "cpu":
        return "torch"
    for package in backend_packages(auto_cpu):
        try:
            importlib.import_module(package)
        except ImportError:
            logger.warning(
                "backend 'auto' means %r on the CPU, but the package %r is not installed: running the network by "
                "torch (pip install %s for the faster path)", auto_cpu, package, package
            )
            return "torch"
    return auto_cpu


def _memory_format(ndim: int) -> torch.memory_format:
    return torch.channels_last_3d if ndim == 5 else torch.channels_last


def _to_channels_last(network: nn.Module) -> None:
    """Weights of 2-D layers in channels_last and of 3-D layers in channels_last_3d (``Module.to`` takes one
    format and fails on the 5-D weights of a 3-D network when given channels_last)."""
    for tensor in (*network.parameters(), *network.buffers()):
        if tensor.ndim in (4, 5):
            tensor.data = tensor.data.contiguous(memory_format=_memory_format(tensor.ndim))


class TorchRuntime(nn.Module):
    """The network run by PyTorch in ``precision``: input (and weights) in channels_last if asked, the network
    under ``torch.autocast`` when a dtype is given, the output returned as fp32."""

    def __init__(self, network: nn.Module, precision: Precision, device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.network = network
        self.precision = precision
        self.device_type = torch.device(device).type
        if precision.channels_last:
            _to_channels_last(self.network)

    @property
    def description(self) -> str:
        return f"torch in {self.precision.name}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision.channels_last and x.ndim in (4, 5):
            x = x.contiguous(memory_format=_memory_format(x.ndim))
        dtype = self.precision.dtype
        autocast = torch.autocast(self.device_type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with autocast:
            output = self.network(x)
        return output.float()


class _ExportedNetwork(nn.Module):
    """A network exported to ONNX at the first call and run by another runtime from then on (CPU only)."""

    backend = ""

    def __init__(self, network: nn.Module, precision: Precision) -> None:
        super().__init__()
        self.runtime = import_runtime(self.backend)
        self.network = network
        self.precision = precision
        self.threads = torch.get_num_threads()
        self._ready = False

    @property
    def description(self) -> str:
        return f"{self.backend} in fp32 (ONNX exported at the first call)"

    def _load(self, onnx_path: Path) -> None:
        raise NotImplementedError

    def _run(self, array: Any) -> Any:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise ValueError(f"backend {self.backend!r} runs on the CPU; got an input on {x.device} (set device cpu)")
        x = x.detach().float().contiguous()
        if not self._ready:
            with tempfile.TemporaryDirectory(prefix="podium_onnx_") as folder:
                self._load(export_onnx(self.network, x, Path(folder) / "network.onnx"))
            self._ready = True
        return torch.from_numpy(self._run(x.numpy()))


class OnnxRuntimeNetwork(_ExportedNetwork):
    """The network run by ONNX Runtime (CPU execution provider, all graph optimisations, fp32)."""

    backend = "onnxruntime"

    def _load(self, onnx_path: Path) -> None:
        options = self.runtime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.graph_optimization_level = self.runtime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = self.runtime.InferenceSession(
            str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
        )

    def _run(self, array: Any) -> Any:
        return self.session.run(None, {INPUT_NAME: array})[0]


class OpenVINONetwork(_ExportedNetwork):
    """The network run by OpenVINO on the CPU, in bf16 when the precision's dtype is bf16, else in fp32.

    Each new input shape gets the model reshaped to it and compiled once (cases of a bundle share one or two
    shapes), which is faster than running the dynamic-shape model."""

    backend = "openvino"

    def _load(self, onnx_path: Path) -> None:
        self.core = self.runtime.Core()
        self.model = self.core.read_model(str(onnx_path))
        self.compiled: dict[tuple[int, ...], Any] = {}

    @property
    def description(self) -> str:
        return f"openvino in {self.inference_precision} (ONNX exported at the first call)"

    @property
    def inference_precision(self) -> str:
        """OpenVINO's ``INFERENCE_PRECISION_HINT`` for this precision."""
        return {torch.bfloat16: "bf16", torch.float16: "f16"}.get(self.precision.dtype, "f32")

    def _run(self, array: Any) -> Any:
        shape = tuple(array.shape)
        if shape not in self.compiled:
            model = self.model.clone()
            model.reshape({INPUT_NAME: list(shape)})
            config = {"INFERENCE_PRECISION_HINT": self.inference_precision, "INFERENCE_NUM_THREADS": self.threads}
            self.compiled[shape] = self.core.compile_model(model, "CPU", config)
        return self.compiled[shape](array)[0]


def runtime_descriptions(network: nn.Module) -> list[str]:
    """What runs the runtimes wrapped inside ``network`` (distinct descriptions, in the order met): a bundle that
    keeps its sliding window in Python wraps each fold model by :func:`build_runtime` instead of the whole
    network, and its log should say how those run. Empty when ``network`` holds none."""
    descriptions = (m.description for m in network.modules() if isinstance(m, (TorchRuntime, _ExportedNetwork)))
    return list(dict.fromkeys(descriptions))


def build_runtime(
    network: nn.Module, backend: str = "torch", precision: Precision | None = None, device: str | torch.device = "cpu"
) -> nn.Module:
    """``network`` wrapped for execution by ``backend`` in ``precision`` (default fp32) on ``device``.

    Raises:
        ValueError: an unknown backend, or a runtime backend with a non-CPU device.
        ImportError: the backend's package is missing (the message names it).
    """
    precision = precision if precision is not None else Precision()
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {list(BACKENDS)} (resolve 'auto' by resolve_backend)")
    if backend == "torch":
        return TorchRuntime(network, precision, device)
    if torch.device(device).type != "cpu":
        raise ValueError(f"backend {backend!r} runs on the CPU; set device to 'cpu' or backend to 'torch'")
    runtime = OnnxRuntimeNetwork if backend == "onnxruntime" else OpenVINONetwork
    return runtime(network, precision)
