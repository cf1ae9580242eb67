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

__all__ = ["evaluate_variants", "format_variant_table"]


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
    amp: bool = False,
    title: str = "",
) -> dict[str, dict[str, Any]]:
    """Predict ``datalist`` with each variant into ``output_dir/<variant>/<case>.png`` and score it.

    ``postprocessing`` turns ``"pred"`` (logits) into a class map (``AsDiscreted(argmax=True)``); the network
    time per image (``time_ms``) is the workflow's. Prints the table and writes ``output_dir/scores.json``
    ``{variant: score table}``. A case that fails is reported by the workflow and scored as background.
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
            amp=amp,
            report_path=output_dir / name / "inference_report.json",
            raise_on_failure=False,
            progress=False,
        )
        report = workflow.run()
        tables[name] = score_folder(output_dir / name, datalist, case_ms=report.network_ms)
    print(format_variant_table(tables, title), flush=True)
    write_text_atomic(output_dir / "scores.json", json.dumps(tables, indent=2))
    return tables
