"""RSNA 2022 Cervical Spine Fracture Detection: the competition's weighted log loss and per-label AUC.

The competition scores 8 probabilities per study, ``[patient_overall, C1, ..., C7]``, with the weighted binary
log loss ``L_ij = -w_ij [y_ij log p_ij + (1 - y_ij) log(1 - p_ij)]``, where ``w`` is 7 (negative) / 14 (positive)
for ``patient_overall`` and 1 / 2 for each vertebra (Kaggle competition page, Evaluation; weights from the host's
clarification, Kaggle discussion 340392). The losses are normalised **per study** by that study's sum of
weights and then averaged over the studies::

    score = mean_i [ sum_j w_ij L_ij / sum_j w_ij ]

It is ONE weighted mean over all eight rows of a study: ``patient_overall`` and the vertebrae are not averaged
separately. This is the normalisation of the community reconstruction that matched the leaderboard (Kaggle
discussion 341854; row-wise weight normalisation, discussion 344565), of MLE-bench's grader of this
competition, and of the 4th-place solution's validation (selimsef/rsna_cervical_fracture, ``train_cls.py``,
``SegFractureEvaluator``), which this module reproduces. Probabilities are kept in ``[1e-15, 1 - 1e-15]`` inside
the logarithm only to stay finite.

The solution predicts per vertebra crop; a study's prediction is the **maximum over all its crops** of each
label's sigmoid probability, clipped to ``[0.01, 0.99]`` (:func:`study_predictions`). Plain numpy functions here;
:class:`CervicalFractureMetric` wraps them as an Ignite metric for MONAI's ``SupervisedEvaluator``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced
from monai.handlers import from_engine
from monai.utils import convert_to_tensor
from sklearn.metrics import roc_auc_score

__all__ = [
    "LABELS",
    "NEGATIVE_WEIGHTS",
    "POSITIVE_WEIGHTS",
    "CervicalFractureMetric",
    "label_aucs",
    "score_studies",
    "study_predictions",
    "weighted_log_loss",
]

LABELS: tuple[str, ...] = ("patient_overall", "C1", "C2", "C3", "C4", "C5", "C6", "C7")
"""The eight targets of a study, in the order of the network's outputs and of every array here."""
NEGATIVE_WEIGHTS: tuple[float, ...] = (7.0,) + (1.0,) * 7
POSITIVE_WEIGHTS: tuple[float, ...] = (14.0,) + (2.0,) * 7
_LOG_EPS = 1e-15


def _as_matrix(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != len(LABELS):
        raise ValueError(f"{name} must be (N, {len(LABELS)}) in the order {LABELS}, got shape {array.shape}")
    return array


def weighted_log_loss(y_true: Any, y_pred: Any) -> float:
    """The competition score of ``(N, 8)`` 0/1 targets and probabilities (lower is better; see the module doc).

    Raises:
        ValueError: shapes differ or are not (N, 8), N is 0, a target is not 0/1 or a probability outside [0, 1].
    """
    truth, pred = _as_matrix(y_true, "y_true"), _as_matrix(y_pred, "y_pred")
    if truth.shape != pred.shape or truth.shape[0] == 0:
        raise ValueError(f"y_true {truth.shape} and y_pred {pred.shape} must be the same non-empty (N, 8)")
    if not np.isin(truth, (0.0, 1.0)).all():
        raise ValueError("y_true must hold 0/1 targets")
    if not ((pred >= 0) & (pred <= 1)).all():
        raise ValueError("y_pred must hold probabilities in [0, 1]")
    p = np.clip(pred, _LOG_EPS, 1 - _LOG_EPS)
    losses = -(truth * np.log(p) + (1 - truth) * np.log(1 - p))
    weights = truth * np.asarray(POSITIVE_WEIGHTS) + (1 - truth) * np.asarray(NEGATIVE_WEIGHTS)
    per_study = (weights * losses).sum(axis=1) / weights.sum(axis=1)
    return float(per_study.mean())


def study_predictions(
    probabilities: Any,
    studies: Sequence[Hashable],
    targets: Any = None,
    clip: tuple[float, float] | None = (0.01, 0.99),
) -> tuple[list[Hashable], np.ndarray, np.ndarray | None]:
    """One prediction per study: the maximum over its crops of each label's probability, then clipped.

    Args:
        probabilities: ``(M, 8)`` probabilities of M crops.
        studies: the study of each crop (M ids).
        targets: ``(M, 8)`` targets of each crop's study (the study's labels, not visibility-zeroed ones), or None.
        clip: the range the study predictions are clipped to (the solution's [0.01, 0.99]); None: no clipping.

    Returns:
        the study ids in order of first appearance, their ``(N, 8)`` predictions and ``(N, 8)`` targets (the
        maximum over the crops, i.e. the study label; None without ``targets``).
    """
    probs = _as_matrix(probabilities, "probabilities")
    if len(studies) != probs.shape[0]:
        raise ValueError(f"{len(studies)} study ids for {probs.shape[0]} crops")
    truth = None if targets is None else _as_matrix(targets, "targets")
    if truth is not None and truth.shape != probs.shape:
        raise ValueError(f"targets {truth.shape} do not match probabilities {probs.shape}")
    order: dict[Hashable, list[int]] = {}
    for index, study in enumerate(studies):
        order.setdefault(study, []).append(index)
    pred = np.stack([probs[rows].max(axis=0) for rows in order.values()]) if order else probs[:0]
    if clip is not None:
        pred = np.clip(pred, *clip)
    study_truth = None
    if truth is not None:
        study_truth = np.stack([truth[rows].max(axis=0) for rows in order.values()]) if order else truth[:0]
    return list(order), pred, study_truth


def label_aucs(y_true: Any, y_pred: Any) -> dict[str, float]:
    """ROC-AUC of each label over the studies, and their ``"mean"``; NaN for a label whose targets are all one
    value (left out of the mean)."""
    truth, pred = _as_matrix(y_true, "y_true"), _as_matrix(y_pred, "y_pred")
    result: dict[str, float] = {}
    for j, name in enumerate(LABELS):
        positives = truth[:, j] > 0.5
        result[name] = float(roc_auc_score(positives, pred[:, j])) if 0 < positives.sum() < len(positives) else math.nan
    finite = [v for v in result.values() if not math.isnan(v)]
    result["mean"] = float(np.mean(finite)) if finite else math.nan
    return result


def score_studies(y_true: Any, y_pred: Any) -> dict[str, Any]:
    """``{"weighted_log_loss", "auc": label_aucs(...), "num_studies", "num_positive": {label: count}}``."""
    truth = _as_matrix(y_true, "y_true")
    return {
        "weighted_log_loss": weighted_log_loss(truth, y_pred),
        "auc": label_aucs(truth, y_pred),
        "num_studies": int(truth.shape[0]),
        "num_positive": {name: int((truth[:, j] > 0.5).sum()) for j, name in enumerate(LABELS)},
    }


class CervicalFractureMetric(Metric):
    """The competition's weighted log loss of study predictions as an Ignite metric (lower is better).

    For MONAI's ``SupervisedEvaluator`` with ``decollate=False``: ``pred`` holds the logits of each batch item,
    ``(B, 8)`` for one crop per item or ``(B, N, 8)`` for the N crops of one study per item (reduced by the
    maximum), ``label`` the ``(B, 8)`` targets of the item's study. With ``study_key`` set, the study id of each
    item is read from ``engine.state.batch[study_key]`` (MONAI's evaluator output does not carry it), and all
    crops of a study, over every batch and process, are reduced by :func:`study_predictions`; with
    ``study_key=None`` every item is a study of its own.

    ``compute()`` returns :func:`weighted_log_loss`; when attached, ``engine.state.metrics[f"{name}/auc_<label>"]``
    and ``f"{name}/auc"`` (the mean) hold the AUCs, and ``self.table`` the whole :func:`score_studies` table.
    As a key metric of best-checkpoint selection it needs ``key_metric_negative_sign=True`` in MONAI's
    ``CheckpointSaver`` (lower is better).

    Distributed: the crops are gathered from every process (``ignite.distributed.all_gather`` of Python objects);
    a crop padded in twice by a ``DistributedSampler`` does not change a maximum.

    Args:
        study_key: batch key of the study ids, or None.
        clip: clipping of the study predictions (see :func:`study_predictions`).
        output_transform: maps ``engine.state.output`` to ``(pred, label)``.
        device: device of the metric's state.
    """

    def __init__(
        self,
        study_key: str | None = "study",
        clip: tuple[float, float] | None = (0.01, 0.99),
        output_transform: Callable = from_engine(["pred", "label"]),
        device: str | torch.device = torch.device("cpu"),
    ) -> None:
        self.study_key = study_key
        self.clip = None if clip is None else tuple(clip)
        self.table: dict[str, Any] = {}
        super().__init__(output_transform=output_transform, device=device, skip_unrolling=True)

    @reinit__is_reduced
    def reset(self) -> None:
        self._studies: list[Hashable] = []
        self._probs: list[np.ndarray] = []
        self._targets: list[np.ndarray] = []

    def iteration_completed(self, engine: Engine) -> None:
        pred, label = self._output_transform(engine.state.output)
        studies = None
        if self.study_key is not None:
            batch = engine.state.batch
            if not isinstance(batch, Mapping) or self.study_key not in batch:
                raise KeyError(f"CervicalFractureMetric: the batch has no study ids under {self.study_key!r}")
            studies = batch[self.study_key]
        self.update((pred, label, studies))

    @reinit__is_reduced
    def update(self, output: Sequence[Any]) -> None:
        pred, label, studies = output if len(output) == 3 else (*output, None)
        pred = convert_to_tensor(pred, track_meta=False).detach().float()
        label = convert_to_tensor(label, track_meta=False).detach().float()
        if pred.ndim == 3:
            pred = pred.amax(dim=1)
        if pred.ndim != 2 or pred.shape[1] != len(LABELS) or label.shape != pred.shape:
            raise ValueError(
                f"CervicalFractureMetric expects logits (B, 8) or (B, N, 8) and labels (B, 8), "
                f"got {tuple(pred.shape)} and {tuple(label.shape)}"
            )
        if studies is None:
            start = len(self._studies)
            studies = [(idist.get_rank(), start + i) for i in range(pred.shape[0])]
        studies = [s.item() if isinstance(s, torch.Tensor) else s for s in studies]
        if len(studies) != pred.shape[0]:
            raise ValueError(f"{len(studies)} study ids for a batch of {pred.shape[0]}")
        self._studies.extend(studies)
        self._probs.extend(torch.sigmoid(pred).cpu().numpy())
        self._targets.extend(label.cpu().numpy())

    def compute(self) -> float:
        studies = [s for rank in idist.all_gather(self._studies) for s in rank]
        probs = [p for rank in idist.all_gather(self._probs) for p in rank]
        targets = [t for rank in idist.all_gather(self._targets) for t in rank]
        if not studies:
            raise NotComputableError("CervicalFractureMetric must have at least one crop before it can be computed.")
        _, pred, truth = study_predictions(np.stack(probs), studies, np.stack(targets), self.clip)
        self.table = score_studies(truth, pred)
        return self.table["weighted_log_loss"]

    def completed(self, engine: Engine, name: str) -> None:
        """Store the weighted log loss under ``name`` and each label's AUC (and their mean) beside it."""
        engine.state.metrics[name] = self.compute()
        for label in LABELS:
            engine.state.metrics[f"{name}/auc_{label}"] = self.table["auc"][label]
        engine.state.metrics[f"{name}/auc"] = self.table["auc"]["mean"]
