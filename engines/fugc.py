"""Evaluation of the FUGC 2025 bundle: every variant (the logit ensemble and each of its networks) predicted over
a labelled datalist, written as PNG class maps and scored with the challenge's metrics (:mod:`metrics.fugc`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.transforms import Compose
from torch import nn

from engines.inference import CaseInferenceWorkflow
from metrics.fugc import score_folder
from transforms.png import SaveGreyPNGd
from utils.atomic import write_text_atomic

__all__ = ["SUBMISSION_MODEL_PY", "evaluate_variants", "export_submission", "format_variant_table"]


def format_variant_table(tables: Mapping[str, Mapping[str, Any]], title: str = "") -> str:
    """One line per variant: Dice per lip and their mean, the mean HD of the three maps, ms per image."""
    lines = [title] if title else []
    lines.append(f"{'variant':<14} {'Dice ant.':>9} {'Dice post.':>10} {'Dice':>7} {'HD px':>7} {'ms/image':>9}")
    for name, t in tables.items():
        lines.append(
            f"{name:<14} {t['dice_anterior']:>9.4f} {t['dice_posterior']:>10.4f} {t['dice']:>7.4f} "
            f"{t['hd']:>7.2f} {t.get('time_ms', float('nan')):>9.1f}"
        )
    return "\n".join(lines)


def evaluate_variants(
    variants: Mapping[str, nn.Module],
    datalist: Sequence[dict],
    preprocessing: Callable[[dict], dict],
    postprocessing: Sequence[Callable[[dict], dict]],
    output_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    auto_cpu_precision: str = "bf16+channels_last",
    backend: str = "torch",
    auto_cpu_backend: str = "torch",
    title: str = "",
) -> dict[str, dict[str, Any]]:
    """Predict ``datalist`` with each variant into ``output_dir/<variant>/<case>.png`` and score it.

    ``postprocessing`` turns ``"pred"`` (logits) into a class map (``AsDiscreted(argmax=True)``); the network
    time per image (``time_ms``) is the workflow's. Prints the table and writes ``output_dir/scores.json``
    ``{variant: score table}``. A case that fails (unreadable image, or a label of the wrong size or values) is
    reported by name by the workflow, left out of the scores and listed under ``"failed"``. ``precision``,
    ``auto_cpu_precision``, ``backend`` and ``auto_cpu_backend`` run every variant as inference does
    (:class:`engines.inference.CaseInferenceWorkflow`), so that the scores and times are those of the deployed path.
    """
    output_dir = Path(output_dir)
    tables = {}
    for name, network in variants.items():
        writer = SaveGreyPNGd("pred", output_dir / name, scale=1.0, overwrite=True)
        workflow = CaseInferenceWorkflow(
            datalist,
            preprocessing,
            network,
            Compose([*postprocessing, writer]),
            device=device,
            precision=precision,
            auto_cpu_precision=auto_cpu_precision,
            backend=backend,
            auto_cpu_backend=auto_cpu_backend,
            report_path=output_dir / name / "inference_report.json",
            raise_on_failure=False,
            progress=False,
        )
        report = workflow.run()
        failed = {f.case: f"{f.stage}: {f.error}" for f in report.failed}
        scored = [item for item in datalist if str(item["case"]) not in failed]
        if not scored:
            raise RuntimeError(f"{name}: no case could be predicted and scored ({len(failed)} failed)")
        tables[name] = {**score_folder(output_dir / name, scored, case_ms=report.network_ms), "failed": failed}
    print(format_variant_table(tables, title), flush=True)
    write_text_atomic(output_dir / "scores.json", json.dumps(tables, indent=2))
    return tables


SUBMISSION_MODEL_PY = '''"""FUGC 2025 submission (the challenge's model.py interface), exported by the podium bundle
fetal_cervix_ultrasound_segmentation: the TorchScript logit ensemble of its PVT-v2-b1 and ResNet34-D UNets.

Needs only numpy and torch; runs on the CPU.
"""

import json
import os

import numpy as np
import torch


class model:
    def __init__(self):
        self.network = None
        self.input_size = None

    def load(self, path="./"):
        """Load ``ensemble.ts`` and ``submission.json`` from the folder ``path``."""
        self.network = torch.jit.load(os.path.join(path, "ensemble.ts"), map_location="cpu").eval()
        with open(os.path.join(path, "submission.json")) as f:
            self.input_size = tuple(json.load(f)["input_size"])
        return self

    def predict(self, X):
        """``X``: uint8 (or 0..255) array (3, H, W) of one image -> (H, W) uint8 class indices 0, 1, 2."""
        X = np.asarray(X)
        if X.ndim != 3 or X.shape[0] != 3 or X.shape[1:] != self.input_size:
            raise ValueError(f"expected an image (3, {self.input_size[0]}, {self.input_size[1]}), got {X.shape}")
        image = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32) / 255.0)[None]
        with torch.inference_mode():
            logits = self.network(image)
        return logits[0].argmax(0).numpy().astype(np.uint8)
'''
"""The challenge's ``model.py`` (class ``model`` with ``load(path)`` and ``predict(X)``), written by
:func:`export_submission`."""


def export_submission(
    network: nn.Module, output_dir: str | os.PathLike, input_size: Sequence[int] = (336, 544)
) -> Path:
    """Write a FUGC 2025 submission folder: ``model.py`` (:data:`SUBMISSION_MODEL_PY`), ``ensemble.ts`` (``network``
    traced on the CPU at ``input_size``, the challenge's 336 x 544) and ``submission.json``.

    The challenge runs ``model().load(path)`` then ``predict(X)`` on numpy ``(3, 336, 544)`` images in 0..255 and
    expects ``(336, 544)`` class maps; the traced network needs neither this repository nor MONAI. Returns the
    folder.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    network = network.cpu().eval()
    example = torch.rand(1, 3, *input_size)
    with torch.inference_mode():
        expected = network(example)
        traced = torch.jit.trace(network, example, check_trace=False)
        if not torch.equal(traced(example).argmax(1), expected.argmax(1)):
            raise RuntimeError("the traced ensemble does not reproduce the network's labels")
    torch.jit.save(traced, str(output_dir / "ensemble.ts.tmp"))
    os.replace(output_dir / "ensemble.ts.tmp", output_dir / "ensemble.ts")
    write_text_atomic(output_dir / "submission.json", json.dumps({"input_size": list(input_size)}))
    write_text_atomic(output_dir / "model.py", SUBMISSION_MODEL_PY)
    return output_dir
