"""Self-training with automatic pseudo-label selection (FUGC 2025 bundle, stage 2).

The FUGC 2025 7th-place solution (apuomline/FUGC2025_7th_solution, README) predicted the unlabelled images with
its UniMatch models, picked the good pseudo-labels BY HAND, retrained fully supervised on labelled + picked
images, and repeated. Here a measured rule replaces the hand. Each unlabelled image is predicted by every
stage-1 network on the image and on its horizontal flip (flipped back): ``K`` probability maps. The pseudo-label
is the argmax of their mean, and three scores in [0, 1] say how trustworthy it is:

* ``confidence``: mean, over the pseudo-label's lip pixels, of the mean probability of the chosen class (0 when
  no lip is predicted);
* ``agreement``: mean Dice (over both lips) of each of the ``K`` member predictions with the pseudo-label, i.e.
  agreement between the two networks and between flipped views;
* ``plausibility``: the anatomy of a transvaginal cervix view, both lips present and each one connected: the
  product over both lips of the fraction of its pixels in its largest 8-connected component (0 when a lip is
  missing).

``score = confidence * agreement * plausibility``. A pseudo-label is kept when its score reaches ``min_score``;
of those, at most the best ``top_fraction`` of all the images predicted are kept. Both are bundle config values.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.ndimage import label as connected_components
from torch import nn

from engines.inference import CaseInferenceWorkflow
from formats.png import read_grey_png, save_png_atomic
from metrics.fugc import dice_per_class
from utils.atomic import write_text_atomic

__all__ = [
    "PSEUDO_LABEL_DIR",
    "FlipViewProbabilities",
    "PseudoLabelSelection",
    "pseudo_label_scores",
    "select_cases",
    "selected_datalist",
    "selection_quality",
]

logger = logging.getLogger(__name__)

PSEUDO_LABEL_DIR = "pseudo_labels"


class FlipViewProbabilities(nn.Module):
    """Softmax probabilities of every model on ``x`` and on its horizontal flip (flipped back).

    ``forward(x: (B, Cin, H, W)) -> (B, K, C, H, W)`` with ``K = 2 * len(models)``: model 0 plain, model 0
    flipped, model 1 plain, ...
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(models) == 0:
            raise ValueError("FlipViewProbabilities needs at least one model")
        self.models = nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = []
        for model in self.models:
            views.append(model(x).softmax(1))
            views.append(model(x.flip(-1)).softmax(1).flip(-1))
        return torch.stack(views, dim=1)


def _largest_component_fraction(mask: np.ndarray) -> float:
    components, count = connected_components(mask, structure=np.ones((3, 3), bool))
    if count == 0:
        return 0.0
    sizes = np.bincount(components.ravel())[1:]
    return float(sizes.max() / sizes.sum())


def pseudo_label_scores(member_probabilities: Any) -> tuple[np.ndarray, dict[str, float]]:
    """The pseudo-label ``(H, W)`` uint8 and its scores (module doc) from ``K`` member probability maps
    ``(K, C, H, W)`` (class 0 background, 1 anterior lip, 2 posterior lip)."""
    probabilities = torch.as_tensor(member_probabilities).float()
    if probabilities.ndim != 4 or probabilities.shape[1] != 3:
        raise ValueError(f"expected member probabilities (K, 3, H, W), got {tuple(probabilities.shape)}")
    mean = probabilities.mean(0)
    chosen, pseudo = mean.max(0)
    pseudo_np = pseudo.numpy().astype(np.uint8)
    lips = pseudo_np > 0
    confidence = float(chosen.numpy()[lips].mean()) if lips.any() else 0.0
    members = probabilities.argmax(1).numpy()
    agreement = float(np.mean([np.mean(list(dice_per_class(m, pseudo_np).values())) for m in members]))
    plausibility = float(np.prod([_largest_component_fraction(pseudo_np == c) for c in (1, 2)]))
    scores = {"confidence": confidence, "agreement": agreement, "plausibility": plausibility}
    scores["score"] = confidence * agreement * plausibility
    return pseudo_np, scores


def select_cases(scores: Mapping[str, float], min_score: float, top_fraction: float) -> list[str]:
    """Cases whose score reaches ``min_score``, best first, at most ``floor(top_fraction * len(scores))``.

    Raises:
        ValueError: ``top_fraction`` outside [0, 1].
    """
    if not 0 <= top_fraction <= 1:
        raise ValueError(f"top_fraction must be in [0, 1], got {top_fraction}")
    ranked = sorted((case for case, s in scores.items() if s >= min_score), key=lambda c: -scores[c])
    return ranked[: int(top_fraction * len(scores))]


class PseudoLabelSelection:
    """Predict ``datalist`` with ``models``, score each pseudo-label and keep the best (module doc).

    Writes, under ``output_dir``: ``pseudo_labels/<case>.png`` for every pseudo-label (class indices 0..2, as
    the challenge's labels) and ``selection.json`` with every case's scores, whether it was kept, the rule and
    the kept items (``"selected"``: ``{"case", "image", "label"}``, what :func:`selected_datalist` returns). An
    unreadable image is reported by name and skipped (:class:`engines.inference.CaseInferenceWorkflow`).

    Args:
        models: the stage-1 networks (loaded, e.g. :func:`networks.ensemble.load_fold_models`).
        datalist: unlabelled items ``{"case", "image"}``.
        preprocessing: dictionary transform giving ``"image"`` as the networks take it.
        output_dir: see above.
        min_score: smallest score kept.
        top_fraction: largest fraction of the images kept.
        device: where the networks run.
        precision, auto_cpu_precision, backend, auto_cpu_backend: how they run, as in
            :class:`engines.inference.CaseInferenceWorkflow` (the bundle's inference settings).
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        datalist: Sequence[dict],
        preprocessing: Callable[[dict], dict],
        output_dir: str | os.PathLike,
        min_score: float = 0.8,
        top_fraction: float = 0.5,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        auto_cpu_precision: str = "bf16+channels_last",
        backend: str = "torch",
        auto_cpu_backend: str = "torch",
    ) -> None:
        self.network = FlipViewProbabilities(models)
        self.datalist = list(datalist)
        self.preprocessing = preprocessing
        self.output_dir = Path(output_dir)
        self.min_score = min_score
        self.top_fraction = top_fraction
        self.device = device
        self.precision = precision
        self.auto_cpu_precision = auto_cpu_precision
        self.backend = backend
        self.auto_cpu_backend = auto_cpu_backend
        self.cases: dict[str, dict[str, Any]] = {}
        self._pseudo: dict[str, np.ndarray] = {}

    def _score(self, data: dict) -> dict:
        case = str(data["case"])
        self._pseudo[case], scores = pseudo_label_scores(data["pred"].cpu())
        self.cases[case] = {"image": str(data["image"].meta["filename_or_obj"]), **scores}
        return data

    def run(self) -> dict[str, Any]:
        """Predict, score, select and write; return the content of ``selection.json``."""
        self.cases, self._pseudo = {}, {}
        workflow = CaseInferenceWorkflow(
            self.datalist, self.preprocessing, self.network, self._score, device=self.device, precision=self.precision,
            auto_cpu_precision=self.auto_cpu_precision, backend=self.backend, auto_cpu_backend=self.auto_cpu_backend,
            raise_on_failure=False,
        )  # fmt: skip
        report = workflow.run()
        kept = select_cases({c: v["score"] for c, v in self.cases.items()}, self.min_score, self.top_fraction)
        for case, pseudo in self._pseudo.items():
            save_png_atomic(self.output_dir / PSEUDO_LABEL_DIR / f"{case}.png", pseudo)
        selected = [
            {"case": c, "image": self.cases[c]["image"], "label": str(self.output_dir / PSEUDO_LABEL_DIR / f"{c}.png")}
            for c in kept
        ]
        for case, entry in self.cases.items():
            entry["kept"] = case in kept
        content = {
            "min_score": self.min_score,
            "top_fraction": self.top_fraction,
            "num_predicted": len(self.cases),
            "num_kept": len(kept),
            "failed": [vars(f) for f in report.failed],
            "cases": self.cases,
            "selected": selected,
        }
        write_text_atomic(self.output_dir / "selection.json", json.dumps(content, indent=2))
        logger.info(
            "kept %d of %d pseudo-labels (score >= %s, top %s)",
            len(kept), len(self.cases), self.min_score, self.top_fraction,
        )
        return content


def selected_datalist(selection_path: str | os.PathLike) -> list[dict[str, str]]:
    """The kept items ``{"case", "image", "label"}`` of a ``selection.json``."""
    return json.loads(Path(selection_path).read_text())["selected"]


def selection_quality(selection_path: str | os.PathLike, truth_dir: str | os.PathLike) -> dict[str, Any]:
    """Dice (mean of both lips) against the truth ``truth_dir/<case>.png`` of the kept and of the dropped
    pseudo-labels of a ``selection.json``: does the rule keep the better ones? (The demo data keep the truth of
    their unlabelled images in ``hidden_labels/``.)

    Returns:
        ``{"kept": {"num", "dice"}, "dropped": {"num", "dice"}}`` (``dice`` None for an empty group).
    """
    selection_path = Path(selection_path)
    content = json.loads(selection_path.read_text())
    groups: dict[str, list[float]] = {"kept": [], "dropped": []}
    for case, entry in content["cases"].items():
        pseudo = read_grey_png(selection_path.parent / PSEUDO_LABEL_DIR / f"{case}.png")
        truth = read_grey_png(Path(truth_dir) / f"{case}.png")
        dice = float(np.mean(list(dice_per_class(pseudo, truth).values())))
        groups["kept" if entry["kept"] else "dropped"].append(dice)
    return {k: {"num": len(v), "dice": float(np.mean(v)) if v else None} for k, v in groups.items()}
