"""AI Challenger 2018 retinal edema evaluation: per-cube lesion Dice and per-slice lesion detection AUC.

As the organiser functions compute them (copied into ShawnBIT/AI-Challenger-Retinal-Edema-Segmentation
``utils/utils.py``: ``aic_fundus_lesion_segmentation``, ``compute_segment_score``,
``aic_fundus_lesion_classification``):

* segmentation: for each cube and lesion (1 REA, 2 SRF, 3 PED) one Dice over the whole cube,
  ``2 |P & G| / (|P| + |G|)``; NaN when the lesion is absent from the cube's ground truth, so that cube is left out
  of that lesion's average (a false positive in a lesion-free cube costs nothing here, only in the detection
  score). Each lesion is averaged over the cubes where it is present, the final score is the mean of the 3 lesions.
* detection: every B-scan of every cube is one sample; its target for lesion k is whether the ground-truth mask of
  that slice contains lesion k, its score the predicted probability; ROC-AUC per lesion over all slices of all cubes,
  final score the mean of the 3.

Where the organiser code would crash or return NaN (a lesion absent from every cube: division by zero; a lesion
present in all or no slices: undefined AUC), the lesion's entry is NaN and the final means are taken over the
lesions that have a value (``nanmean``). These cases do not occur on the challenge's validation and test sets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

__all__ = [
    "LESIONS",
    "cube_dice",
    "detection_auc",
    "edema_score_table",
    "evaluate_cube",
    "format_edema_table",
    "slice_presence",
]

LESIONS: tuple[str, ...] = ("REA", "SRF", "PED")
"""Lesion names of classes 1, 2, 3 (retinal edema area, subretinal fluid, pigment epithelial detachment)."""


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _lesion_names(num_classes: int) -> tuple[str, ...]:
    if num_classes - 1 == len(LESIONS):
        return LESIONS
    return tuple(f"class_{c}" for c in range(1, num_classes))


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def cube_dice(pred_volume: Any, gt_volume: Any, num_classes: int = 4) -> dict[str, float]:
    """Dice of each lesion over a whole cube; NaN for a lesion absent from ``gt_volume``.

    Args:
        pred_volume: predicted class indices, any shape (e.g. ``(S, H, W)``), numpy or torch.
        gt_volume: ground-truth class indices of the same shape.
        num_classes: classes including background; lesions are 1 .. num_classes - 1.

    Returns:
        ``{"REA": d1, "SRF": d2, "PED": d3}`` (``class_<c>`` keys for other class counts).
    """
    pred, gt = _to_numpy(pred_volume), _to_numpy(gt_volume)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} does not match ground truth {gt.shape}")
    result = {}
    for c, name in zip(range(1, num_classes), _lesion_names(num_classes)):
        g = gt == c
        n_gt = int(g.sum())
        if n_gt == 0:
            result[name] = float("nan")
            continue
        p = pred == c
        result[name] = 2.0 * int(np.logical_and(p, g).sum()) / (int(p.sum()) + n_gt)
    return result


def slice_presence(label_volume: Any, num_classes: int = 4) -> np.ndarray:
    """``(S, num_classes - 1)`` 0/1 presence of each lesion in each slice of an ``(S, H, W)`` label volume."""
    vol = _to_numpy(label_volume)
    if vol.ndim < 2:
        raise ValueError(f"expected a label volume (S, H, W), got shape {vol.shape}")
    flat = vol.reshape(vol.shape[0], -1)
    return np.stack([(flat == c).any(axis=1) for c in range(1, num_classes)], axis=1).astype(np.float32)


def detection_auc(det_probs: Any, gt_presence: Any) -> dict[str, float]:
    """ROC-AUC of each lesion over all slices, and their mean.

    Args:
        det_probs: predicted probabilities ``(N_slices, 3)``, or a list of such arrays (one per cube).
        gt_presence: 0/1 targets of the same shape(s), e.g. from :func:`slice_presence`.

    Returns:
        ``{"REA": auc1, "SRF": auc2, "PED": auc3, "mean": ...}``; a lesion whose targets are all 0 or all 1 is NaN
        and left out of the mean.
    """
    if isinstance(det_probs, (list, tuple)):
        probs = np.concatenate([_to_numpy(p).reshape(len(p), -1) for p in det_probs], axis=0)
    else:
        probs = _to_numpy(det_probs)
    if isinstance(gt_presence, (list, tuple)):
        truth = np.concatenate([_to_numpy(g).reshape(len(g), -1) for g in gt_presence], axis=0)
    else:
        truth = _to_numpy(gt_presence)
    if probs.ndim != 2 or probs.shape != truth.shape:
        raise ValueError(f"det_probs {probs.shape} and gt_presence {truth.shape} must both be (N_slices, K)")
    names = _lesion_names(probs.shape[1] + 1)
    result: dict[str, float] = {}
    for k, name in enumerate(names):
        y = truth[:, k] > 0.5
        result[name] = float(roc_auc_score(y, probs[:, k])) if 0 < y.sum() < len(y) else float("nan")
    result["mean"] = _nanmean([result[n] for n in names])
    return result


def evaluate_cube(
    pred_volume: Any, gt_volume: Any, det_probs: Any = None, case: str = "", num_classes: int = 4
) -> dict[str, Any]:
    """Everything the challenge score needs from one cube, for :func:`edema_score_table`.

    Args:
        pred_volume: predicted class indices ``(S, H, W)``.
        gt_volume: ground-truth class indices ``(S, H, W)``.
        det_probs: predicted lesion probabilities ``(S, num_classes - 1)``, or None without detection.
        case: the cube's id.
        num_classes: classes including background.

    Returns:
        ``{"case", "dice": {lesion: dice}, "presence": (S, K) targets, "det_probs": (S, K) or None}``.
    """
    gt = _to_numpy(gt_volume)
    probs = None
    if det_probs is not None:
        probs = _to_numpy(det_probs).astype(np.float32)
        if probs.shape != (gt.shape[0], num_classes - 1):
            raise ValueError(f"case {case!r}: det_probs shape {probs.shape}, expected {(gt.shape[0], num_classes - 1)}")
    return {
        "case": case,
        "dice": cube_dice(pred_volume, gt, num_classes),
        "presence": slice_presence(gt, num_classes),
        "det_probs": probs,
    }


def edema_score_table(per_cube_results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Aggregate :func:`evaluate_cube` results into the challenge scores.

    Returns:
        ``{"dice": {lesion: mean over cubes with the lesion, "mean": mean of the lesions},
        "n_cubes": {lesion: cubes with the lesion}, "auc": {lesion: ROC-AUC, "mean": ...} or None when any cube
        lacks detection probabilities, "cases": [{"case", lesion: dice, ...}, ...]}``.
    """
    if not per_cube_results:
        raise ValueError("no cube results to aggregate")
    names = tuple(per_cube_results[0]["dice"])
    dice: dict[str, float] = {}
    n_cubes: dict[str, int] = {}
    for name in names:
        values = [float(r["dice"][name]) for r in per_cube_results]
        n_cubes[name] = sum(not math.isnan(v) for v in values)
        dice[name] = _nanmean(values)
    dice["mean"] = _nanmean([dice[n] for n in names])
    auc = None
    if all(r.get("det_probs") is not None for r in per_cube_results):
        auc = detection_auc([r["det_probs"] for r in per_cube_results], [r["presence"] for r in per_cube_results])
    cases = [{"case": r.get("case", ""), **{n: float(r["dice"][n]) for n in names}} for r in per_cube_results]
    return {"dice": dice, "n_cubes": n_cubes, "auc": auc, "cases": cases}


def format_edema_table(table: Mapping[str, Any], per_case: bool = False) -> str:
    """Markdown table of :func:`edema_score_table`'s output: one row per score, lesions as columns."""
    names = tuple(table["n_cubes"])

    def fmt(v: float) -> str:
        return "n/a" if math.isnan(v) else f"{v:.4f}"

    header = "| | " + " | ".join(names) + " | mean |"
    lines = [header, "|---" * (len(names) + 2) + "|"]
    lines.append("| Dice | " + " | ".join(fmt(table["dice"][n]) for n in names) + f" | {fmt(table['dice']['mean'])} |")
    lines.append("| cubes with lesion | " + " | ".join(str(table["n_cubes"][n]) for n in names) + " | |")
    if table.get("auc") is not None:
        lines.append("| AUC | " + " | ".join(fmt(table["auc"][n]) for n in names) + f" | {fmt(table['auc']['mean'])} |")
    if per_case:
        lines.append("")
        lines.append("| case | " + " | ".join(names) + " |")
        lines.append("|---" * (len(names) + 1) + "|")
        for row in table["cases"]:
            lines.append(f"| {row['case']} | " + " | ".join(fmt(row[n]) for n in names) + " |")
    return "\n".join(lines)
