"""The CSV 2026 challenge score (carotid plaque segmentation + vulnerability), as the organisers define it.

Official score (the CSV 2026 challenge, www.csv-isbi.net)::

    S_total = 0.4 S_seg + 0.4 S_cls + 0.2 S_time
    S_seg   = 0.5 S_long + 0.5 S_trans                  (views: longitudinal, transverse)
    S_v     = 0.6 S_v,plaque + 0.4 S_v,vessel           (class indices 1 = plaque, 2 = vessel)
    S_v,c   = (DSC_v,c + NSD_v,c) / 2                   (NSD tolerance 3 px)

The organisers (and MAGNET / the official baseline) compute DSC and NSD per case and average them over the
cases; S_v,c is then formed from those means. Every step is linear, so the mean over cases of the per-case
S_seg (what :func:`case_segmentation_scores` gives and :func:`csv2026_score_table` averages) is the same
number. Averaging over cases happens in one place only: :func:`csv2026_score_table`.

S_cls is "F1-score" on the challenge page but macro-F1 in the organisers' note, while both reference codes
validate with the binary F1 of the high-risk class; both are reported. The local validation score used by
both reference codes leaves the time term out: ``score = 0.4 F1_high_risk + 0.4 S_seg`` (max 0.8);
``score_macro`` uses macro-F1 instead.

Everything here is plain numpy (easy to test and to run on submission files); :class:`CSV2026Metric` wraps it
as an Ignite metric for MONAI's ``SupervisedEvaluator``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced
from monai.handlers import from_engine
from monai.metrics import compute_surface_dice
from monai.utils import convert_to_tensor

from formats.h5 import read_h5_dataset
from utils.atomic import write_text_atomic

__all__ = [
    "score_prediction_folder",
    "write_score_report",
    "VIEWS",
    "CLASSES",
    "CLASS_WEIGHTS",
    "VIEW_WEIGHTS",
    "CASE_KEYS",
    "dice",
    "normalized_surface_dice",
    "case_segmentation_scores",
    "f1_scores",
    "confusion_matrix",
    "CONFUSION_KEYS",
    "time_score",
    "csv2026_score_table",
    "format_score_table",
    "CSV2026Metric",
]

VIEWS: tuple[str, ...] = ("long", "trans")
"""View names in the order of the label channels (``label[:, 0]`` long, ``label[:, 1]`` transverse)."""
CLASSES: dict[str, int] = {"plaque": 1, "vessel": 2}
"""Scored classes and their indices in the class-index masks (0 is background, not scored)."""
CLASS_WEIGHTS: dict[str, float] = {"plaque": 0.6, "vessel": 0.4}
VIEW_WEIGHTS: dict[str, float] = {"long": 0.5, "trans": 0.5}
CASE_KEYS: tuple[str, ...] = tuple(
    [f"{v}_{c}_{m}" for v in VIEWS for c in CLASSES for m in ("dsc", "nsd", "score")]
    + [f"{v}_score" for v in VIEWS]
    + ["seg_score"]
)
"""Keys of the dict returned by :func:`case_segmentation_scores`, in a fixed order."""


def _binary_pair(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    pred_b, gt_b = np.asarray(pred).astype(bool), np.asarray(gt).astype(bool)
    if pred_b.shape != gt_b.shape:
        raise ValueError(f"prediction and ground truth masks differ in shape: {pred_b.shape} vs {gt_b.shape}.")
    return pred_b, gt_b


def dice(pred: np.ndarray, gt: np.ndarray, empty_score: float = 0.0) -> float:
    """Dice similarity coefficient ``2|P & G| / (|P| + |G|)`` of two binary masks (non-zero = foreground).

    Args:
        pred: predicted mask.
        gt: reference mask of the same shape.
        empty_score: the value when both masks are empty. Defaults to 0, what both public implementations of
            the official score give (medpy's ``dc`` in MAGNET, lyyek/CSV2026, and in the official baseline);
            ``empty_score=1.0`` counts a correct empty prediction as perfect, as the NSD does.
    """
    pred_b, gt_b = _binary_pair(pred, gt)
    total = int(pred_b.sum()) + int(gt_b.sum())
    if total == 0:
        return float(empty_score)
    return 2.0 * int(np.logical_and(pred_b, gt_b).sum()) / total


def normalized_surface_dice(pred: np.ndarray, gt: np.ndarray, tolerance: float = 3.0) -> float:
    """Normalised surface Dice of two binary masks (2-D or 3-D, unit spacing), as in the CSV 2026 code.

    Boundary = mask XOR its binary erosion (scipy's default cross structure, outside the image counts as
    background); each boundary pixel is matched if its Euclidean distance to the other mask's boundary is
    ``<= tolerance``; NSD = (matched pred-boundary px + matched gt-boundary px) / (all boundary px of both).
    Both masks empty gives 1, exactly one empty gives 0.

    MONAI's :func:`monai.metrics.compute_surface_dice` (``use_subvoxels=False``) computes exactly this
    (same erosion/XOR boundaries after a zero-padded crop, exact Euclidean distances, inclusive tolerance,
    one empty mask -> 0) except that it returns NaN when both masks are empty, so the empty cases are
    decided here and only non-empty pairs go to MONAI.
    """
    pred_b, gt_b = _binary_pair(pred, gt)
    if pred_b.ndim not in (2, 3):
        raise ValueError(f"NSD needs 2-D or 3-D masks, got shape {pred_b.shape}.")
    pred_any, gt_any = bool(pred_b.any()), bool(gt_b.any())
    if not pred_any and not gt_any:
        return 1.0
    if not (pred_any and gt_any):
        return 0.0
    with warnings.catch_warnings():
        # MONAI's own deprecation notice about an argument it passes internally (get_mask_edges)
        warnings.simplefilter("ignore", FutureWarning)
        nsd = compute_surface_dice(
            torch.from_numpy(pred_b)[None, None],
            torch.from_numpy(gt_b)[None, None],
            class_thresholds=[float(tolerance)],
            include_background=True,
        )
    return float(nsd[0, 0])


def case_segmentation_scores(
    pred_long: np.ndarray,
    pred_trans: np.ndarray,
    gt_long: np.ndarray,
    gt_trans: np.ndarray,
    tolerance: float = 3.0,
    empty_score: float = 0.0,
) -> dict[str, float]:
    """Segmentation scores of one case from class-index masks (0 background, 1 plaque, 2 vessel).

    Returns a dict with the keys of :data:`CASE_KEYS`: ``{view}_{class}_dsc``, ``{view}_{class}_nsd``,
    ``{view}_{class}_score`` (= S_v,c), ``{view}_score`` (= S_v) and ``seg_score`` (= S_seg of this case).

    Args:
        pred_long, pred_trans: predicted class-index masks of the two views.
        gt_long, gt_trans: reference class-index masks (same shapes as the predictions).
        tolerance: NSD tolerance in pixels.
        empty_score: DSC when a class is absent from both prediction and reference (see :func:`dice`).
    """
    masks = {"long": (pred_long, gt_long), "trans": (pred_trans, gt_trans)}
    scores: dict[str, float] = {}
    for view in VIEWS:
        pred, gt = (np.asarray(m) for m in masks[view])
        if pred.shape != gt.shape:
            raise ValueError(f"{view} view: prediction shape {pred.shape} differs from reference {gt.shape}.")
        view_score = 0.0
        for name, index in CLASSES.items():
            dsc = dice(pred == index, gt == index, empty_score=empty_score)
            nsd = normalized_surface_dice(pred == index, gt == index, tolerance=tolerance)
            scores[f"{view}_{name}_dsc"] = dsc
            scores[f"{view}_{name}_nsd"] = nsd
            scores[f"{view}_{name}_score"] = (dsc + nsd) / 2.0
            view_score += CLASS_WEIGHTS[name] * scores[f"{view}_{name}_score"]
        scores[f"{view}_score"] = view_score
    scores["seg_score"] = sum(VIEW_WEIGHTS[v] * scores[f"{v}_score"] for v in VIEWS)
    return {key: scores[key] for key in CASE_KEYS}


def _binary_labels(values: Any, what: str) -> np.ndarray:
    arr = np.asarray(values).reshape(-1)
    if not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{what} must hold only 0 (low risk) and 1 (high risk), got {np.unique(arr)}.")
    return arr.astype(bool)


def f1_scores(
    pred_cls: Sequence[int] | np.ndarray, true_cls: Sequence[int] | np.ndarray, zero_division: float = 0.0
) -> dict[str, float]:
    """F1 of the risk classification: ``f1_high_risk`` (class 1), ``f1_low_risk`` (class 0), ``f1_macro``.

    F1 of a class = 2TP / (2TP + FP + FN). A class that appears in neither the predictions nor the truth has
    an undefined F1; it is ``zero_division`` (0, as sklearn's ``zero_division=0`` that MAGNET uses). Macro-F1
    is always the mean over BOTH classes (sklearn would average only the labels present, so for an
    all-low-risk set it reports 1 where this reports 0.5).

    Args:
        pred_cls: predicted labels, 0 low risk / 1 high risk.
        true_cls: true labels, same length.
        zero_division: F1 of a class absent from both predictions and truth.
    """
    pred = _binary_labels(pred_cls, "predicted classes")
    true = _binary_labels(true_cls, "true classes")
    if pred.shape != true.shape:
        raise ValueError(f"got {pred.size} predicted and {true.size} true classes.")

    def _f1(p: np.ndarray, t: np.ndarray) -> float:
        tp, fp, fn = int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())
        denom = 2 * tp + fp + fn
        return float(zero_division) if denom == 0 else 2.0 * tp / denom

    high, low = _f1(pred, true), _f1(~pred, ~true)
    return {"f1_high_risk": high, "f1_low_risk": low, "f1_macro": (high + low) / 2.0}


CONFUSION_KEYS: tuple[str, ...] = (
    "cm_low_pred_low",
    "cm_low_pred_high",
    "cm_high_pred_low",
    "cm_high_pred_high",
)
"""Keys of :func:`confusion_matrix`: ``cm_{true class}_pred_{predicted class}``."""


def confusion_matrix(pred_cls: Sequence[int] | np.ndarray, true_cls: Sequence[int] | np.ndarray) -> dict[str, int]:
    """Case counts of the risk classification by true and predicted class (keys :data:`CONFUSION_KEYS`).

    Flat integer entries rather than a nested list, so that every entry of the score table is a scalar that
    Ignite's ``engine.state.metrics`` and TensorBoard can log.
    """
    pred = _binary_labels(pred_cls, "predicted classes")
    true = _binary_labels(true_cls, "true classes")
    if pred.shape != true.shape:
        raise ValueError(f"got {pred.size} predicted and {true.size} true classes.")
    return {
        "cm_low_pred_low": int((~true & ~pred).sum()),
        "cm_low_pred_high": int((~true & pred).sum()),
        "cm_high_pred_low": int((true & ~pred).sum()),
        "cm_high_pred_high": int((true & pred).sum()),
    }


def time_score(t_user: float, t_min: float, t_max: float) -> float:
    """S_time = (T_max - T_user) / (T_max - T_min) * 100, clipped to [0, 100].

    The organisers derive T_min / T_max from the baseline's time (thresholds 2/3 T_baseline and
    2 T_baseline, three cases not published); pass the values they announce. The clip (faster than T_min
    -> 100, slower than T_max -> 0) is our reading of "min-max normalisation". Divide by 100 to combine it
    with S_seg and S_cls, which lie in [0, 1].
    """
    if t_max <= t_min:
        raise ValueError(f"T_max ({t_max}) must be larger than T_min ({t_min}).")
    return float(np.clip((t_max - t_user) / (t_max - t_min), 0.0, 1.0) * 100.0)


def csv2026_score_table(
    case_scores: Sequence[Mapping[str, float]],
    pred_cls: Sequence[int] | np.ndarray,
    true_cls: Sequence[int] | np.ndarray,
    time_ms: Sequence[float] | None = None,
) -> dict[str, float]:
    """Aggregate per-case scores into the challenge's table.

    Returns the mean over cases of every :data:`CASE_KEYS` entry (``seg_score`` is S_seg), the F1 scores of
    :func:`f1_scores`, the risk confusion matrix of :func:`confusion_matrix`, ``score`` = 0.4 F1_high_risk + 0.4 S_seg, ``score_macro`` = 0.4 F1_macro + 0.4 S_seg,
    ``num_cases`` and, when ``time_ms`` is given, ``time_ms`` = mean inference time per case in ms.

    Args:
        case_scores: one dict per case from :func:`case_segmentation_scores`.
        pred_cls: predicted risk class per case (same order).
        true_cls: true risk class per case.
        time_ms: inference time per case in milliseconds, measured by the caller.
    """
    n = len(case_scores)
    if n == 0:
        raise ValueError("no cases to score.")
    if len(pred_cls) != n or len(true_cls) != n:
        raise ValueError(f"got {n} segmentation cases but {len(pred_cls)} predicted / {len(true_cls)} true classes.")
    table: dict[str, float] = {}
    for key in CASE_KEYS:
        missing = [i for i, case in enumerate(case_scores) if key not in case]
        if missing:
            raise ValueError(f"case scores {missing} lack the entry {key!r}.")
        table[key] = float(np.mean([case[key] for case in case_scores]))
    table.update(f1_scores(pred_cls, true_cls))
    table.update(confusion_matrix(pred_cls, true_cls))
    table["score"] = 0.4 * table["f1_high_risk"] + 0.4 * table["seg_score"]
    table["score_macro"] = 0.4 * table["f1_macro"] + 0.4 * table["seg_score"]
    table["num_cases"] = n
    if time_ms is not None:
        if len(time_ms) != n:
            raise ValueError(f"got {len(time_ms)} inference times for {n} cases.")
        table["time_ms"] = float(np.mean(time_ms))
    return table


def format_score_table(table: Mapping[str, float]) -> str:
    """Render a table from :func:`csv2026_score_table` as readable text."""
    lines = [
        f"CSV 2026 local score ({int(table['num_cases'])} cases)",
        f"{'view':<6} {'class':<7} {'DSC':>7} {'NSD':>7} {'S_v,c':>7}",
    ]
    for view in VIEWS:
        for name in CLASSES:
            dsc, nsd, score = (table[f"{view}_{name}_{m}"] for m in ("dsc", "nsd", "score"))
            lines.append(f"{view:<6} {name:<7} {dsc:7.4f} {nsd:7.4f} {score:7.4f}")
        lines.append(f"{view:<6} {'S_v':<7} {'':>7} {'':>7} {table[f'{view}_score']:7.4f}")
    lines += [
        f"S_seg                  {table['seg_score']:7.4f}",
        f"F1 high risk {table['f1_high_risk']:.4f} | F1 low risk {table['f1_low_risk']:.4f} "
        f"| macro-F1 {table['f1_macro']:.4f}",
        f"risk confusion matrix   {'pred low':>9} {'pred high':>9}",
        f"  true low              {table['cm_low_pred_low']:>9d} {table['cm_low_pred_high']:>9d}",
        f"  true high             {table['cm_high_pred_low']:>9d} {table['cm_high_pred_high']:>9d}",
        f"score = 0.4 F1_high_risk + 0.4 S_seg = {table['score']:.4f}",
        f"score_macro = 0.4 macro-F1 + 0.4 S_seg = {table['score_macro']:.4f}",
    ]
    if "time_ms" in table:
        lines.append(f"mean inference time per case: {table['time_ms']:.1f} ms")
    return "\n".join(lines)


def score_prediction_folder(
    pred_dir: str | os.PathLike,
    datalist: Sequence[Mapping[str, Any]],
    case_ms: Mapping[str, float] | None = None,
    suffix: str = "_pred",
    tolerance: float = 3.0,
    empty_score: float = 0.0,
) -> dict[str, Any]:
    """Score submission files ``{case}{suffix}.h5`` (0/1/2 masks, ``cls``) against the cases' label files.

    This is how the organisers score a submission: at each case's original resolution, from the files.
    A case without a prediction file counts as an all-background, low-risk prediction (as a missing
    submission would) and is listed under ``missing_predictions``.

    Args:
        pred_dir: folder of the prediction files.
        datalist: items with ``"case"`` and ``"label"`` (the ``NNNN_label.h5`` path).
        case_ms: inference time per case in ms (e.g. ``CaseInferenceWorkflow.report.case_ms``).
        suffix: file name suffix of the prediction files.
        tolerance: NSD tolerance in pixels.
        empty_score: DSC of a class absent from both prediction and reference (see :func:`dice`).
    """
    stored_to_class = {0: 0, 128: CLASSES["plaque"], 255: CLASSES["vessel"]}
    case_scores, pred_cls, true_cls, missing = [], [], [], []
    for item in datalist:
        label_path = Path(item["label"])
        with h5py.File(label_path, "r") as f:
            gt = {v: read_h5_dataset(f, label_path, f"{v}_mask") for v in VIEWS}
            true_cls.append(int(read_h5_dataset(f, label_path, "cls", expected_ndim=0)[0]))
        for view, mask in gt.items():
            unknown = sorted(set(np.unique(mask).tolist()) - set(stored_to_class))
            if unknown:
                raise ValueError(f"{label_path}: {view}_mask has values {unknown}; expected 0/128/255")
            gt[view] = np.vectorize(stored_to_class.get, otypes=[np.uint8])(mask)
        pred_path = Path(pred_dir) / f"{item['case']}{suffix}.h5"
        if pred_path.is_file():
            with h5py.File(pred_path, "r") as f:
                pred = {v: read_h5_dataset(f, pred_path, f"{v}_mask") for v in VIEWS}
                pred_cls.append(int(read_h5_dataset(f, pred_path, "cls", expected_ndim=0)[0]))
            for view in VIEWS:
                if pred[view].shape != gt[view].shape:
                    raise ValueError(
                        f"{pred_path}: {view}_mask has shape {pred[view].shape}, the label {gt[view].shape}"
                    )
        else:
            missing.append(str(item["case"]))
            pred = {v: np.zeros_like(gt[v]) for v in VIEWS}
            pred_cls.append(0)
        case_scores.append(
            case_segmentation_scores(pred["long"], pred["trans"], gt["long"], gt["trans"], tolerance, empty_score)
        )
    times = None
    if case_ms is not None:
        times = [case_ms[str(item["case"])] for item in datalist if str(item["case"]) in case_ms]
        times = times if len(times) == len(datalist) else None
    table: dict[str, Any] = csv2026_score_table(case_scores, pred_cls, true_cls, times)
    table["missing_predictions"] = missing
    return table


def write_score_report(table: Mapping[str, Any], path: str | os.PathLike) -> str:
    """Print the readable table, save ``table`` as JSON at ``path`` (atomically) and return the text."""
    text = format_score_table(table)
    if table.get("missing_predictions"):
        text += f"\nno prediction (scored as background, low risk): {', '.join(table['missing_predictions'])}"
    print(text, flush=True)
    write_text_atomic(path, json.dumps(dict(table), indent=2))
    return text


class CSV2026Metric(Metric):
    """Ignite metric giving the CSV 2026 local score of a validation epoch.

    For MONAI's ``SupervisedEvaluator`` with ``decollate=False`` and
    ``prepare_batch=engines.prepare_batch.PrepareBatchMultiTarget(target_keys=("label", "cls"))``: the
    transformed output is ``(pred, target)`` with ``pred`` the network output (B, 2C+1, H, W) laid out as
    ``networks.magnet.split_views_output`` expects and ``target = {"label": (B, 2, H, W) class indices
    [long, trans], "cls": (B, 1)}``. Masks are the argmax of each view's logits, the risk class is
    ``sigmoid(logit) >= cls_threshold``. Scores are computed at the resolution the evaluator produces.

    ``compute()`` returns ``score`` = 0.4 F1_high_risk + 0.4 S_seg (usable as MONAI's key metric). When
    attached, every entry of the full table (:func:`csv2026_score_table`) is also written to
    ``engine.state.metrics[f"{name}/{entry}"]`` and the table is kept as ``self.table``.

    Distributed: per-case scores are gathered with ``ignite.distributed.all_gather``, which needs the same
    number of cases on every process (a ``DistributedSampler`` pads to that, so padded duplicates count twice).

    Args:
        cls_threshold: probability threshold of the high-risk class.
        num_classes: segmentation classes per view (background included).
        tolerance: NSD tolerance in pixels.
        empty_score: DSC of a class absent from both prediction and reference.
        output_transform: maps ``engine.state.output`` to ``(pred, target)``.
        device: where the gathered tensors live (a CUDA device under NCCL).
    """

    def __init__(
        self,
        cls_threshold: float = 0.5,
        num_classes: int = 3,
        tolerance: float = 3.0,
        empty_score: float = 0.0,
        output_transform: Callable = from_engine(["pred", "label"]),
        device: str | torch.device = torch.device("cpu"),
    ) -> None:
        self.cls_threshold = cls_threshold
        self.num_classes = num_classes
        self.tolerance = tolerance
        self.empty_score = empty_score
        self.table: dict[str, float] = {}
        super().__init__(output_transform=output_transform, device=device, skip_unrolling=True)

    @reinit__is_reduced
    def reset(self) -> None:
        self._case_scores: list[list[float]] = []
        self._pred_cls: list[int] = []
        self._true_cls: list[int] = []

    @reinit__is_reduced
    def update(self, output: Sequence[Any]) -> None:
        # imported here so the numpy scoring above works without the network package
        from networks.magnet import split_views_output

        pred, target = output
        if not isinstance(target, Mapping) or "label" not in target or "cls" not in target:
            raise ValueError(
                "CSV2026Metric needs targets {'label': (B, 2, H, W), 'cls': (B, 1)} "
                "(use engines.prepare_batch.PrepareBatchMultiTarget(target_keys=('label', 'cls')))."
            )
        pred = convert_to_tensor(pred, track_meta=False).detach()
        labels = convert_to_tensor(target["label"], track_meta=False).detach().cpu()
        long_logits, trans_logits, cls_logit = split_views_output(pred, num_classes=self.num_classes)
        if labels.ndim != 4 or labels.shape[1] != 2 or labels.shape[2:] != long_logits.shape[2:]:
            raise ValueError(
                f"target 'label' must be (B, 2, H, W) matching the prediction's {tuple(long_logits.shape[2:])}, "
                f"got {tuple(labels.shape)}."
            )
        true_cls = convert_to_tensor(target["cls"], track_meta=False).detach().cpu().reshape(-1)
        if true_cls.numel() != labels.shape[0]:
            raise ValueError(f"target 'cls' has {true_cls.numel()} values for a batch of {labels.shape[0]}.")
        pred_long = long_logits.argmax(dim=1).cpu().numpy()
        pred_trans = trans_logits.argmax(dim=1).cpu().numpy()
        pred_cls = (torch.sigmoid(cls_logit.float()) >= self.cls_threshold).cpu()
        labels_np = labels.numpy()
        for b in range(labels.shape[0]):
            scores = case_segmentation_scores(
                pred_long[b], pred_trans[b], labels_np[b, 0], labels_np[b, 1], self.tolerance, self.empty_score
            )
            self._case_scores.append([scores[key] for key in CASE_KEYS])
        self._pred_cls += [int(v) for v in pred_cls.tolist()]
        self._true_cls += [int(round(float(v))) for v in true_cls.tolist()]

    def compute(self) -> float:
        if not self._case_scores:
            raise NotComputableError("CSV2026Metric must have at least one case before it can be computed.")
        local = torch.tensor(
            [row + [p, t] for row, p, t in zip(self._case_scores, self._pred_cls, self._true_cls)],
            dtype=torch.float64,
            device=self._device,
        )
        rows = idist.all_gather(local).cpu().numpy()
        k = len(CASE_KEYS)
        case_scores = [dict(zip(CASE_KEYS, row[:k].tolist())) for row in rows]
        self.table = csv2026_score_table(case_scores, rows[:, k].astype(int), rows[:, k + 1].astype(int))
        return self.table["score"]

    def completed(self, engine: Engine, name: str) -> None:
        """Store the local score under ``name`` and every table entry under ``f"{name}/{entry}"``."""
        engine.state.metrics[name] = self.compute()
        for key, value in self.table.items():
            engine.state.metrics[f"{name}/{key}"] = value
