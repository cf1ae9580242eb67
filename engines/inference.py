"""Inference over a folder of new cases that survives bad cases.

MONAI's ``SupervisedEvaluator`` stops at the first exception raised by a transform. A user running a
bundle on a folder of new cases wants the other way round, as nnU-Net's predictor does: every readable
case is predicted and written, each unreadable one is reported by name, and the run ends with a summary
and a non-zero exit status when anything failed.

A case is all or nothing: the writers (:class:`transforms.writers.CaseWriterd`) name the files of each case, so
existing outputs are found before the network runs (the case fails, or is skipped with ``skip_existing``), and the
files of a case appear together or not at all (:func:`utils.atomic.atomic_group`). The output folders are checked
for writing before the first case. Entries of the input folder that are no case (the ``skipped`` of a
:class:`data.listing.CaseList`) are listed in the report, so that cases and skipped entries add up to the folder.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.inferers import Inferer, SimpleInferer
from tqdm import tqdm

from engines.prepare_batch import to_plain_tensor
from networks.runtime import build_runtime, resolve_backend, runtime_descriptions
from transforms.writers import CaseWriterd
from utils.atomic import atomic_group, write_text_atomic
from utils.errors import error_summary
from utils.memory import PeakMemory
from utils.precision import resolve_precision

__all__ = [
    "CaseFailure",
    "CaseInferenceWorkflow",
    "InferenceFailed",
    "InferenceReport",
    "OutputNotWritable",
    "find_writers",
]


logger = logging.getLogger(__name__)


@dataclass
class CaseFailure:
    """A case that could not be predicted, and why."""

    case: str
    stage: str
    error: str


@dataclass
class InferenceReport:
    """What a run did: the cases written, failed and skipped (outputs already there), the entries of the input
    folder that are no case (``skipped_entries``: ``{"entry", "reason"}``), the time and peak memory per case."""

    succeeded: list[str] = field(default_factory=list)
    failed: list[CaseFailure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    skipped_entries: list[dict[str, str]] = field(default_factory=list)
    case_ms: dict[str, float] = field(default_factory=dict)
    network_ms: dict[str, float] = field(default_factory=dict)
    peak_memory_mb: dict[str, float] = field(default_factory=dict)
    memory_kind: str = ""

    @property
    def num_cases(self) -> int:
        """Cases of the datalist: written + failed + skipped."""
        return len(self.succeeded) + len(self.failed) + len(self.skipped)

    @property
    def num_entries(self) -> int:
        """Entries of the input folder: cases + entries that are no case."""
        return self.num_cases + len(self.skipped_entries)

    @property
    def mean_case_ms(self) -> float:
        """Mean wall time per written case (reading, network, post-processing and writing)."""
        return sum(self.case_ms.values()) / max(len(self.case_ms), 1)

    @property
    def mean_network_ms(self) -> float:
        """Mean time per case spent in the network (and its inferer) alone."""
        return sum(self.network_ms.values()) / max(len(self.network_ms), 1)

    @property
    def max_peak_memory_mb(self) -> float | None:
        """The largest peak memory of a written case (see ``memory_kind``), None if not measured."""
        return max(self.peak_memory_mb.values()) if self.peak_memory_mb else None

    def summary(self) -> str:
        memory = "" if self.max_peak_memory_mb is None else f"; peak memory {self.max_peak_memory_mb:.0f} MB"
        lines = [
            f"{self.num_entries} input entr{'y' if self.num_entries == 1 else 'ies'}: {self.num_cases} case(s), "
            f"{len(self.skipped_entries)} skipped as no case; {len(self.succeeded)} case(s) written, "
            f"{len(self.failed)} failed, {len(self.skipped)} skipped (outputs already there); "
            f"mean {self.mean_case_ms:.1f} ms per case ({self.mean_network_ms:.1f} ms in the network){memory}"
        ]
        lines += [f"  FAILED {f.case} ({f.stage}): {f.error}" for f in self.failed]
        lines += [f"  SKIPPED {s['entry']}: {s['reason']}" for s in self.skipped_entries]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_entries": self.num_entries,
            "num_cases": self.num_cases,
            "succeeded": self.succeeded,
            "failed": [vars(f) for f in self.failed],
            "skipped": self.skipped,
            "skipped_entries": self.skipped_entries,
            "case_ms": self.case_ms,
            "network_ms": self.network_ms,
            "mean_case_ms": self.mean_case_ms,
            "mean_network_ms": self.mean_network_ms,
            "peak_memory_mb": self.peak_memory_mb,
            "max_peak_memory_mb": self.max_peak_memory_mb,
            "memory_kind": self.memory_kind,
        }


class InferenceFailed(RuntimeError):
    """Raised at the end of a run in which some cases failed (after all other cases were written)."""

    def __init__(self, report: InferenceReport) -> None:
        super().__init__(report.summary())
        self.report = report


class OutputNotWritable(PermissionError):
    """Raised before the first case when an output folder cannot be created or written to."""


def find_writers(transform: Any) -> list[CaseWriterd]:
    """The :class:`~transforms.writers.CaseWriterd` s of a transform: itself, or those inside (nested) ``Compose``."""
    if isinstance(transform, CaseWriterd):
        return [transform]
    return [w for t in getattr(transform, "transforms", ()) for w in find_writers(t)]


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise OutputNotWritable(
            f"output folder {folder} is not writable ({error.strerror or error}); no case was processed"
        ) from error


class CaseInferenceWorkflow:
    """Predict cases one by one: ``preprocessing -> inferer(network) -> postprocessing`` on each data dict.

    Before the first case, every output folder (those of the writers and the report's) is created if needed and
    checked for writing (:class:`OutputNotWritable` otherwise). Before a case is read, the files its writers will
    create are looked up: when all exist and ``skip_existing`` is set, the case is skipped (listed in the report);
    otherwise an existing file that its writer may not overwrite fails the case without computing it. The
    postprocessing runs inside :func:`utils.atomic.atomic_group`, so a case's files appear together or none does.
    A case whose preprocessing, prediction or postprocessing (which includes the writer transforms)
    raises is logged with its name and the error, and the run carries on. Each case's wall time and peak memory
    (:class:`utils.memory.PeakMemory`: GPU allocator peak, or the process's peak RSS on the CPU) are recorded.
    After the last case the summary is logged, written to ``report_path`` (JSON) when given, and
    :class:`InferenceFailed` is raised if any case failed, so that the command exits with a non-zero status.

    Args:
        datalist: one dict per case; ``case_key`` names it in reports. Its ``skipped`` attribute, if any
            (:class:`data.listing.CaseList`), lists the entries of the input folder that are no case.
        preprocessing: dictionary transform producing ``image_key`` (channel-first, unbatched).
        network: the model; put in eval mode by the workflow.
        postprocessing: dictionary transform receiving the data dict with ``pred_key`` (unbatched network
            output) added; it ends with the writers.
        inferer: how to apply the network (default: the whole image at once).
        device: where the network runs.
        amp: when ``precision`` is not given: autocast the network in float16 on CUDA (bfloat16 on CPU).
        precision: the network's precision and memory format (:func:`utils.precision.resolve_precision`):
            ``"auto"``, ``"fp32"`` (exactly fp32), ``"bf16"``, ``"bf16+channels_last"``, ...; default from ``amp``.
        auto_cpu_precision: what ``"auto"`` means on a CPU with native bf16 (the bundle's measured fastest path).
        backend: who executes the network: ``"torch"``, ``"onnxruntime"`` or ``"openvino"``
            (:func:`networks.runtime.build_runtime`; the last two export it to ONNX at the first case, CPU only),
            or ``"auto"``: ``auto_cpu_backend`` when ``device`` is the CPU, ``"torch"`` elsewhere
            (:func:`networks.runtime.resolve_backend`).
        auto_cpu_backend: what ``backend: "auto"`` means on the CPU (the bundle's measured fastest backend); when
            its package is missing, the network runs by torch with a warning naming the package.
        report_path: where to write the JSON report, if anywhere.
        writers: the writers whose outputs are checked before each case; default: those found in
            ``postprocessing`` (:func:`find_writers`).
        skip_existing: skip a case whose outputs all exist (a rerun over a finished folder does the missing cases).
        raise_on_failure: raise :class:`InferenceFailed` at the end when a case failed.
        progress: show a progress bar.

    After :meth:`run`, ``self.report`` holds the :class:`InferenceReport` (also when it raised).
    """

    def __init__(
        self,
        datalist: Sequence[dict],
        preprocessing: Callable[[dict], dict],
        network: torch.nn.Module,
        postprocessing: Callable[[dict], dict],
        inferer: Inferer | None = None,
        device: str | torch.device = "cpu",
        amp: bool = False,
        precision: str | None = None,
        auto_cpu_precision: str = "bf16+channels_last",
        backend: str = "torch",
        auto_cpu_backend: str = "torch",
        image_key: str = "image",
        pred_key: str = "pred",
        case_key: str = "case",
        report_path: str | Path | None = None,
        writers: Sequence[CaseWriterd] | None = None,
        skip_existing: bool = False,
        raise_on_failure: bool = True,
        progress: bool = True,
    ) -> None:
        self.skipped_entries = list(getattr(datalist, "skipped", ()))
        self.datalist = list(datalist)
        self.preprocessing = preprocessing
        self.network = network
        self.postprocessing = postprocessing
        self.inferer = inferer if inferer is not None else SimpleInferer()
        self.device = torch.device(device)
        self.amp = amp
        if precision is None:
            precision = ("fp16" if self.device.type == "cuda" else "bf16") if amp else "fp32"
        self.precision = resolve_precision(precision, self.device, auto_cpu_precision)
        self.backend = resolve_backend(backend, self.device, auto_cpu_backend)
        self.image_key = image_key
        self.pred_key = pred_key
        self.case_key = case_key
        self.report_path = Path(report_path) if report_path is not None else None
        self.writers = find_writers(postprocessing) if writers is None else list(writers)
        self.skip_existing = skip_existing
        self.raise_on_failure = raise_on_failure
        self.progress = progress
        self.report = InferenceReport()

    def _case_name(self, item: dict, index: int) -> str:
        name = item.get(self.case_key)
        if name is None:
            name = item.get(self.image_key, f"case {index}")
        return str(name)

    def _check_output_folders(self) -> None:
        folders = {path.parent for writer in self.writers for path in writer.output_paths("case")}
        if self.report_path is not None:
            folders.add(self.report_path.parent)
        for folder in sorted(folders):
            _check_writable(folder)

    def _existing_outputs(self, item: dict, name: str) -> tuple[list[Path], list[Path]]:
        """(every output file of the case, those already there that their writer may not overwrite)."""
        paths, blocking = [], []
        for writer in self.writers:
            for path in writer.output_paths(str(item.get(writer.case_key, name))):
                paths.append(path)
                if not writer.overwrite and path.exists():
                    blocking.append(path)
        return paths, blocking

    @torch.inference_mode()
    def _predict(self, runtime: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
        batch = to_plain_tensor(image.unsqueeze(0), device=self.device)
        return self.inferer(batch, runtime)[0].float()

    def run(self) -> InferenceReport:
        """Predict every case; return the report (or raise :class:`InferenceFailed` after the last case)."""
        report = self.report = InferenceReport(skipped_entries=list(self.skipped_entries))
        self._check_output_folders()
        self.network.to(self.device).eval()
        runtime = build_runtime(self.network, self.backend, self.precision, self.device)
        # models wrapped one by one inside the network (a sliding window kept in Python) say how they really run
        inner = runtime_descriptions(self.network)
        logger.info("network run by %s on %s", "; ".join(inner) if inner else runtime.description, self.device)
        cases = tqdm(self.datalist, desc="inference", unit="case", disable=not self.progress)
        for index, item in enumerate(cases):
            name = self._case_name(item, index)
            paths, blocking = self._existing_outputs(item, name)
            if self.skip_existing and paths and all(path.exists() for path in paths):
                logger.info("case %s skipped: its outputs exist", name)
                report.skipped.append(name)
                continue
            if blocking:
                message = (
                    f"outputs exist: {', '.join(map(str, blocking))} (set overwrite to replace them, or "
                    "skip_existing to skip finished cases); none of the case's files was written"
                )
                logger.error("case %s failed: %s", name, message)
                report.failed.append(CaseFailure(name, "checking outputs", message))
                continue
            start = time.perf_counter()
            stage = "reading/preprocessing"
            memory = PeakMemory(self.device)
            try:
                with memory:
                    data = self.preprocessing(dict(item))
                    stage = "prediction"
                    net_start = time.perf_counter()
                    data[self.pred_key] = self._predict(runtime, data[self.image_key])
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    network_ms = 1000 * (time.perf_counter() - net_start)
                    stage = "postprocessing/writing"
                    with atomic_group():  # every file of the case, or none
                        self.postprocessing(data)
            except Exception as error:  # noqa: BLE001 - any failure of one case must not stop the others
                message = error_summary(error)  # MONAI's Compose wraps the error that names the file
                logger.error("case %s failed during %s: %s", name, stage, message)
                report.failed.append(CaseFailure(name, stage, message))
                continue
            report.succeeded.append(name)
            report.network_ms[name] = network_ms
            report.case_ms[name] = 1000 * (time.perf_counter() - start)
            if memory.peak_mb is not None:
                report.peak_memory_mb[name] = memory.peak_mb
                report.memory_kind = memory.kind
        logger.info(report.summary())
        if self.report_path is not None:
            write_text_atomic(self.report_path, json.dumps(report.to_dict(), indent=2))
        if report.failed and self.raise_on_failure:
            raise InferenceFailed(report)
        return report
