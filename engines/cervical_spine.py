"""Two-stage inference over a folder of CT studies and its evaluation (RSNA 2022 cervical spine bundle).

:func:`predict_studies` runs the per-study workflow (:class:`engines.inference.CaseInferenceWorkflow`:
segmentation, then the per-vertebra classifier inside its post-processing) and joins the per-study rows into the
competition's ``submission.csv`` whatever happened, so that the studies that were predicted are submitted even
when others failed. :func:`score_predictions` scores the written label maps and submission against ground truth:
per-vertebra Dice on the preprocessed grid, the competition's weighted log loss against that of the
all-prevalence prior, and the per-label AUC (bundle docs, "Evaluation").
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from data.rsna_cervical import VERTEBRAE, read_train_csv
from engines.inference import CaseInferenceWorkflow, InferenceReport
from formats.rsna_cervical import merge_submission, read_submission
from metrics.rsna_cervical_spine import LABELS, score_studies, weighted_log_loss
from transforms.rsna_cervical import load_preprocessed_study
from utils.atomic import write_text_atomic

__all__ = ["format_score_table", "predict_studies", "score_predictions"]

logger = logging.getLogger(__name__)


def predict_studies(runner: CaseInferenceWorkflow, output_dir: str | os.PathLike, rows_suffix: str = "_fracture") -> InferenceReport:
    """Run ``runner`` and write ``<output_dir>/submission.csv`` from every ``*<rows_suffix>.csv`` there, also when
    the runner raises because some studies failed (the error is raised after the merge)."""
    folder = Path(output_dir)
    try:
        return runner.run()
    finally:
        rows = sorted(folder.glob(f"*{rows_suffix}.csv"))
        count = merge_submission(rows, folder / "submission.csv")
        logger.info("submission.csv: %d studies", count)


def _dice(prediction: np.ndarray, truth: np.ndarray, value: int) -> float:
    p, t = prediction == value, truth == value
    total = int(p.sum() + t.sum())
    return 2.0 * int((p & t).sum()) / total if total else math.nan


def score_predictions(
    datalist: Sequence[dict],
    prediction_dir: str | os.PathLike,
    train_csv: str | os.PathLike,
    prior: Sequence[float],
    cache_dir: str | os.PathLike | None = None,
    image_size: int = 256,
    z_step: int = 2,
    map_suffix: str = "_vertebrae",
    output_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Score a prediction folder (label maps + ``submission.csv``) against the studies' labels.

    Args:
        datalist: the evaluated studies (``data.rsna_cervical.load_rsna_cervical_datalist`` items); those with a
            ``"segmentation"`` are scored for Dice.
        prediction_dir: the inference output folder.
        train_csv: the studies' fracture labels.
        prior: the 8 prevalences of the training data (the baseline prediction).
        cache_dir, image_size, z_step: the grid of the label maps (the bundle's preprocessing).
        output_path: where to write the table as JSON.

    Returns:
        ``{"dice": {C1..C7, "mean"}, "num_segmented", "fracture": score_studies(...),
        "prior_weighted_log_loss", "num_predicted", "missing": [studies without a prediction]}``.
    """
    folder = Path(prediction_dir)
    labels, _ = read_train_csv(train_csv)
    submission_path = folder / "submission.csv"
    predicted = read_submission(submission_path) if submission_path.is_file() else {}
    dice: dict[str, list[float]] = {name: [] for name in VERTEBRAE}
    num_segmented, missing = 0, []
    truth_rows, pred_rows = [], []
    for item in datalist:
        study = item["study"]
        if study not in predicted:
            missing.append(study)
            continue
        if study in labels:
            truth_rows.append(labels[study])
            pred_rows.append(predicted[study])
        label_map = folder / f"{study}{map_suffix}.nii.gz"
        if item.get("segmentation") and label_map.is_file():
            truth = load_preprocessed_study(item["image"], item["segmentation"], cache_dir, image_size, z_step)["label"]
            prediction = np.asarray(nib.load(str(label_map)).dataobj)
            if prediction.shape != truth.shape:
                raise ValueError(f"{label_map}: shape {prediction.shape} differs from the study grid {truth.shape}")
            num_segmented += 1
            for value, name in enumerate(VERTEBRAE, start=1):
                if (truth == value).any():
                    dice[name].append(_dice(prediction, truth, value))
    dice_table = {name: float(np.mean(v)) if v else math.nan for name, v in dice.items()}
    finite = [v for v in dice_table.values() if not math.isnan(v)]
    dice_table["mean"] = float(np.mean(finite)) if finite else math.nan
    table: dict[str, Any] = {"dice": dice_table, "num_segmented": num_segmented, "num_predicted": len(pred_rows),
                             "missing": missing}  # fmt: skip
    if truth_rows:
        truth, pred = np.array(truth_rows, dtype=np.float64), np.array(pred_rows, dtype=np.float64)
        table["fracture"] = score_studies(truth, pred)
        table["prior_weighted_log_loss"] = weighted_log_loss(truth, np.tile(np.asarray(prior, dtype=np.float64), (len(truth), 1)))
    if output_path is not None:
        write_text_atomic(output_path, json.dumps(table, indent=1))
    return table


def format_score_table(table: dict[str, Any]) -> str:
    """The score table as text: Dice per vertebra, weighted log loss (model and prior), AUC per label."""
    lines = [f"vertebra Dice ({table['num_segmented']} segmented studies)"]
    lines.append("  " + "  ".join(f"{k} {v:.3f}" for k, v in table["dice"].items()))
    if "fracture" in table:
        fracture = table["fracture"]
        lines.append(
            f"weighted log loss {fracture['weighted_log_loss']:.4f} (all-prevalence prior "
            f"{table['prior_weighted_log_loss']:.4f}) over {fracture['num_studies']} studies"
        )
        lines.append("AUC  " + "  ".join(f"{k} {fracture['auc'][k]:.3f}" for k in (*LABELS, "mean")))
    if table["missing"]:
        lines.append(f"no prediction for {len(table['missing'])} studies: {', '.join(table['missing'][:5])}")
    return "\n".join(lines)
