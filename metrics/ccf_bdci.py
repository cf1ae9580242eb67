"""CCF BDCI 2021 angioma segmentation: Dice per image, and the table of the rank-1 solution's inference ablation.

The challenge scores the Dice of the submitted {0, 255} mask against the label at the image's own size, averaged
over the images. The rank-1 README reports how each inference trick adds to it (fold 1, Dice %): single model
86.91 (+DA/+EDA, training tricks) -> + TTA 89.05 -> + RSIP 89.20 -> + EMF 89.52 -> 5-fold ensemble 90.32 (the
leaderboard). :data:`STEPS` are those inference rows; :func:`engines.ccf_bdci.run_ablation` computes them on
labelled images and fills an :class:`AblationTable`, which :func:`write_ablation_report` prints and saves.

Dice uses MONAI's ``compute_dice`` on the binary masks (an image whose label and prediction are both empty
scores 1).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_dice

from utils.atomic import write_text_atomic

__all__ = ["STEPS", "AblationTable", "dice_score", "format_ablation_table", "write_ablation_report"]

SINGLE, TTA, RSIP, EMF, ENSEMBLE = "single model", "+ TTA", "+ RSIP", "+ EMF", "ensemble"
#: the rows of the ablation, in the README's order; each adds to the one above
STEPS = (SINGLE, TTA, RSIP, EMF, ENSEMBLE)


def dice_score(pred: torch.Tensor | np.ndarray, label: torch.Tensor | np.ndarray) -> float:
    """Dice of two binary masks of the same shape (non-zero = lesion; {0, 1} or {0, 255}); 1.0 if both are empty."""
    p = torch.as_tensor(np.asarray(pred) if not isinstance(pred, torch.Tensor) else pred) > 0
    t = torch.as_tensor(np.asarray(label) if not isinstance(label, torch.Tensor) else label) > 0
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {tuple(p.shape)} differs from the label's {tuple(t.shape)}")
    value = compute_dice(p.float()[None, None], t.float()[None, None], include_background=True, ignore_empty=False)
    return float(value.item())


@dataclass
class AblationTable:
    """Dice per image of each ablation row, the images that failed, and what the rows were."""

    dice: dict[str, dict[str, float]] = field(default_factory=lambda: {step: {} for step in STEPS})
    failed: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def cases(self) -> list[str]:
        return list(self.dice[SINGLE])

    def mean(self, step: str) -> float:
        values = list(self.dice[step].values())
        return float(np.mean(values)) if values else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_images": len(self.cases),
            "rows": [{"step": s, "label": self.labels.get(s, s), "mean_dice": self.mean(s)} for s in STEPS],
            "dice_per_image": self.dice,
            "failed": self.failed,
        }


def format_ablation_table(table: AblationTable, title: str = "") -> str:
    """The ablation as text: mean Dice (%) per row, then Dice (%) per image and row."""
    width = max(len(table.labels.get(s, s)) for s in STEPS)
    lines = [title or f"Ablation on {len(table.cases)} labelled image(s): Dice (%), mean over images"]
    lines += [f"  {table.labels.get(s, s):<{width}}  {100 * table.mean(s):6.2f}" for s in STEPS]
    if table.cases:
        case_width = max(6, *(len(c) for c in table.cases))
        lines += ["", "Dice (%) per image:", f"  {'image':<{case_width}}" + "".join(f"{s:>14}" for s in STEPS)]
        for case in table.cases:
            row = "".join(f"{100 * table.dice[s][case]:14.2f}" for s in STEPS)
            lines.append(f"  {case:<{case_width}}{row}")
    if table.failed:
        lines += ["", f"{len(table.failed)} image(s) failed and are not in the table:"]
        lines += [f"  FAILED {case}: {error}" for case, error in table.failed.items()]
    return "\n".join(lines)


def write_ablation_report(
    table: AblationTable, path: str | os.PathLike | None = None, raise_on_failure: bool = True, title: str = ""
) -> str:
    """Print the table, save it as JSON at ``path`` (atomically), and raise if an image failed (after both).

    Raises:
        RuntimeError: an image could not be evaluated (and ``raise_on_failure``); the message names it.
    """
    text = format_ablation_table(table, title)
    print(text, flush=True)
    if path is not None:
        write_text_atomic(path, json.dumps(table.to_dict(), indent=2))
    if table.failed and raise_on_failure:
        failures = "; ".join(f"{case}: {error}" for case, error in table.failed.items())
        raise RuntimeError(f"{len(table.failed)} image(s) could not be evaluated: {failures}")
    return text

