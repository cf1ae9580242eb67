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

Besides the functions on arrays: :func:`score_prediction_folder` scores the files written by
:func:`formats.oct.write_oct_prediction` against the label cubes (the submission, as the organisers would),
:func:`write_score_report` prints and saves the tables of several models (single and fused), and
:class:`EdemaCubeMetric` is the same score as an Ignite metric for validation during training.

Where the organiser code would crash or return NaN (a lesion absent from every cube: division by zero; a lesion
present in all or no slices: undefined AUC), the lesion's entry is NaN and the final means are taken over the
lesions that have a value (``nanmean``). These cases do not occur on the challenge's validation and test sets.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced
from monai.handlers import from_engine
from monai.utils import convert_to_numpy, convert_to_tensor
from sklearn.metrics import roc_auc_score

from formats.oct import (
    LABEL_CODES,
    LABEL_TO_CLASS,
    LESIONS,
    lesion_names,
    prediction_paths,
    read_oct_cube,
    read_oct_prediction,
)
from utils.atomic import write_text_atomic

__all__ = [
    "LESIONS",
    "EdemaCubeMetric",
    "cube_dice",
    "detection_auc",
    "edema_score_table",
    "evaluate_cube",
    "format_edema_table",
    "score_prediction_folder",
    "slice_presence",
    "write_score_report",
]


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
    pred, gt = convert_to_numpy(pred_volume), convert_to_numpy(gt_volume)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} does not match ground truth {gt.shape}")
    result = {}
    for c, name in zip(range(1, num_classes), lesion_names(num_classes)):
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
    vol = convert_to_numpy(label_volume)
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
        probs = np.concatenate([convert_to_numpy(p).reshape(len(p), -1) for p in det_probs], axis=0)
    else:
        probs = convert_to_numpy(det_probs)
    if isinstance(gt_presence, (list, tuple)):
        truth = np.concatenate([convert_to_numpy(g).reshape(len(g), -1) for g in gt_presence], axis=0)
    else:
        truth = convert_to_numpy(gt_presence)
    if probs.ndim != 2 or probs.shape != truth.shape:
        raise ValueError(f"det_probs {probs.shape} and gt_presence {truth.shape} must both be (N_slices, K)")
    names = lesion_names(probs.shape[1] + 1)
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
    gt = convert_to_numpy(gt_volume)
    probs = None
    if det_probs is not None:
        probs = convert_to_numpy(det_probs).astype(np.float32)
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


def _label_classes(codes: np.ndarray) -> np.ndarray:
    """Label grey codes (0, 255, 191, 128) -> class indices (0, 1, 2, 3)."""
    lut = np.zeros(256, dtype=np.uint8)
    for code, cls in LABEL_TO_CLASS.items():
        lut[code] = cls
    return lut[codes]


def score_prediction_folder(
    pred_dir: str | os.PathLike,
    datalist: Sequence[Mapping[str, Any]],
    num_classes: int = 4,
    case_ms: Mapping[str, float] | None = None,
    peak_memory_mb: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Score the predictions of :func:`formats.oct.write_oct_prediction` in ``pred_dir`` against label cubes.

    As a submission is scored: per-cube lesion Dice and per-slice detection AUC (:func:`edema_score_table`) from
    the files. A cube without prediction files counts as all background with detection probability 0 (a missing
    submission) and is listed under ``missing_predictions``.

    Args:
        pred_dir: folder of ``<case>_seg.nii.gz`` and ``<case>_det.csv``.
        datalist: items with ``"case"`` and ``"label"`` (the label cube folder, grey codes 0/128/191/255).
        num_classes: classes including background.
        case_ms: wall time per cube in ms (``CaseInferenceWorkflow.report.case_ms``), summarised in the table.
        peak_memory_mb: peak memory per cube (``CaseInferenceWorkflow.report.peak_memory_mb``), summarised too.

    Raises:
        CaseReadError: a label cube or a prediction cannot be read (the message names the cube).
        ValueError: a prediction's shape differs from its label cube's.
    """
    results, missing = [], []
    for item in datalist:
        case = str(item["case"])
        gt = _label_classes(read_oct_cube(item["label"], allowed_values=LABEL_CODES))
        if any(path.exists() for path in prediction_paths(pred_dir, case)):
            pred, det = read_oct_prediction(pred_dir, case)
        else:
            missing.append(case)
            pred, det = np.zeros_like(gt), np.zeros((gt.shape[0], num_classes - 1), np.float32)
        if pred.shape != gt.shape:
            raise ValueError(f"cube {case}: prediction in {pred_dir} is {pred.shape} (S, H, W), its label {gt.shape}")
        results.append(evaluate_cube(pred, gt, det, case, num_classes))
    table = edema_score_table(results)
    table["missing_predictions"] = missing
    for name, values in (("seconds_per_cube", case_ms), ("peak_memory_mb", peak_memory_mb)):
        found = [values[str(item["case"])] for item in datalist if values and str(item["case"]) in values]
        if found:
            scale = 1e-3 if name == "seconds_per_cube" else 1.0
            table[name] = {"mean": scale * float(np.mean(found)), "max": scale * float(np.max(found))}
    return table


def write_score_report(tables: Mapping[str, Mapping[str, Any]], path: str | os.PathLike) -> str:
    """Print one score table per model (e.g. ``{"fusion": ..., "unet_plus_plus": ..., "unet": ...}``), a summary
    line per model (mean Dice, mean AUC, seconds and peak memory per cube when the tables carry them), and save all
    tables as JSON at ``path`` (atomically). Returns the printed text."""
    blocks, summary = [], ["| model | Dice | AUC | s / cube | peak MB |", "|---|---|---|---|---|"]
    for name, table in tables.items():
        block = [f"## {name}", format_edema_table(table)]
        if table.get("missing_predictions"):
            block.append(f"no prediction (scored as background): {', '.join(table['missing_predictions'])}")
        blocks.append("\n".join(block))
        auc = table["auc"]["mean"] if table.get("auc") else float("nan")
        timing = table.get("seconds_per_cube", {}).get("mean", float("nan"))
        memory = table.get("peak_memory_mb", {}).get("mean", float("nan"))
        summary.append(f"| {name} | {table['dice']['mean']:.4f} | {auc:.4f} | {timing:.2f} | {memory:.0f} |")
    if len(tables) > 1:
        summary.append("(s / cube and peak MB are those of the one inference pass that computed every model)")
    text = "\n\n".join(blocks + ["\n".join(summary)])
    print(text, flush=True)
    write_text_atomic(path, json.dumps({name: dict(table) for name, table in tables.items()}, indent=2))
    return text


class EdemaCubeMetric(Metric):
    """The challenge score of whole validation cubes as an Ignite metric (key metric of best-checkpoint selection).

    For MONAI's ``SupervisedEvaluator`` with ``decollate=False``, one cube per batch item and a
    :class:`monai.inferers.SliceInferer`: ``pred`` is the packed network output ``(B, C + K, S, H, W)`` (logits of
    :mod:`networks.unet_plus_plus`; softmax or sigmoid probabilities give the same argmax and AUC), ``label`` the
    class indices ``(B, 1, S, H, W)``. Each cube's prediction is the argmax of the segmentation channels, its
    per-slice detection scores the detection channels; both go through :func:`evaluate_cube`.

    ``compute()`` returns the mean lesion Dice (:func:`edema_score_table`). When attached, every lesion's Dice and
    AUC is also written to ``engine.state.metrics[f"{name}/dice_<lesion>"]`` / ``f"{name}/auc_<lesion>"``
    (and ``f"{name}/auc"``, the mean AUC) and the full table is kept as ``self.table``.

    Distributed: the per-cube results are gathered from every process (``ignite.distributed.all_gather`` of
    Python objects; cubes padded in by a ``DistributedSampler`` count twice).

    Args:
        num_classes: segmentation classes including background.
        output_transform: maps ``engine.state.output`` to ``(pred, label)``.
        device: device of the metric's state.
    """

    def __init__(
        self,
        num_classes: int = 4,
        output_transform: Callable = from_engine(["pred", "label"]),
        device: str | torch.device = torch.device("cpu"),
    ) -> None:
        self.num_classes = num_classes
        self.table: dict[str, Any] = {}
        super().__init__(output_transform=output_transform, device=device, skip_unrolling=True)

    @reinit__is_reduced
    def reset(self) -> None:
        self._results: list[dict[str, Any]] = []

    @reinit__is_reduced
    def update(self, output: Sequence[Any]) -> None:
        pred, label = output
        pred = convert_to_tensor(pred, track_meta=False).detach()
        label = convert_to_tensor(label, track_meta=False).detach()
        c = self.num_classes
        if pred.ndim != 5 or pred.shape[1] < c:
            raise ValueError(f"EdemaCubeMetric expects cube predictions (B, {c} + K, S, H, W), got {tuple(pred.shape)}")
        if label.ndim == 5:
            label = label[:, 0]
        if label.shape != pred.shape[:1] + pred.shape[2:]:
            raise ValueError(f"label {tuple(label.shape)} does not match the prediction {tuple(pred.shape)}")
        classes = pred[:, :c].argmax(dim=1).cpu().numpy()
        detection = pred[:, c:, :, 0, 0].float().cpu().numpy() if pred.shape[1] > c else None  # (B, K, S)
        label_np = label.cpu().numpy()
        for b in range(pred.shape[0]):
            det = None if detection is None else detection[b].T
            case = str(len(self._results))
            self._results.append(evaluate_cube(classes[b], label_np[b], det, case=case, num_classes=c))

    def compute(self) -> float:
        gathered = idist.all_gather(self._results)
        results = [r for rank in gathered for r in rank]
        if not results:
            raise NotComputableError("EdemaCubeMetric must have at least one cube before it can be computed.")
        self.table = edema_score_table(results)
        return self.table["dice"]["mean"]

    def completed(self, engine: Engine, name: str) -> None:
        """Store the mean Dice under ``name`` and each lesion's Dice and AUC beside it."""
        engine.state.metrics[name] = self.compute()
        for lesion in lesion_names(self.num_classes):
            engine.state.metrics[f"{name}/dice_{lesion}"] = self.table["dice"][lesion]
            if self.table["auc"] is not None:
                engine.state.metrics[f"{name}/auc_{lesion}"] = self.table["auc"][lesion]
        if self.table["auc"] is not None:
            engine.state.metrics[f"{name}/auc"] = self.table["auc"]["mean"]
