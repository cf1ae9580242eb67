"""CCF BDCI 2021 angioma segmentation: Dice per image, and the rank-1 solution's ablation as one evaluation.

The challenge scores the Dice of the submitted {0, 255} mask against the label at the image's own size, averaged
over the images. The rank-1 README reports how each inference trick adds to it (fold 1, Dice %): single model
86.91 (+DA/+EDA, training tricks) -> + TTA 89.05 -> + RSIP 89.20 -> + EMF 89.52 -> 5-fold ensemble 90.32 (the
leaderboard). :func:`run_ablation` computes those inference rows on any labelled images in one pass, sharing the
network outputs between rows (the single model's TTA run serves three rows):

==================  ======================================================================================
row                 prediction
==================  ======================================================================================
single model        ``sigmoid(model_k(x))`` resized back, thresholded
+ TTA               ``sigmoid(mean of the 8 flip/rot180 variants of model_k)`` (:class:`inferers.FlipTTAInferer`)
+ RSIP              and connected components of at most 50 px removed (8-connected, MONAI RemoveSmallObjectsd)
+ EMF               and the 19 x 19 edge median filter (:class:`transforms.postprocessing.EdgeMedianFilterd`)
ensemble            mean over all fold models of their TTA probabilities, then RSIP and EMF (the submission)
==================  ======================================================================================

Each row adds to the one above, as in the README. Dice uses MONAI's ``compute_dice`` on the binary masks
(an image whose label and prediction are both empty scores 1).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer, SimpleInferer
from monai.metrics import compute_dice
from monai.utils import convert_to_tensor
from tqdm import tqdm

from engines.inference import root_cause_message
from transforms.angioma import angioma_postprocessing
from formats.png import fit_mask_to_image, read_mask_png
from utils.atomic import write_text_atomic

__all__ = ["AblationTable", "dice_score", "format_ablation_table", "run_ablation", "write_ablation_report"]

logger = logging.getLogger(__name__)

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


def run_ablation(
    datalist: Sequence[Mapping[str, Any]],
    models: Sequence[torch.nn.Module],
    preprocessing: Callable[[dict], dict],
    restore: Callable[[dict], dict],
    tta_inferer: Inferer,
    inferer: Inferer | None = None,
    threshold: float = 0.5,
    min_size: int = 51,
    median_window: int = 19,
    single_model: int = 0,
    device: str | torch.device = "cpu",
    amp: bool = False,
    image_key: str = "image",
    label_key: str = "label",
    case_key: str = "case",
    pred_key: str = "pred",
    progress: bool = True,
) -> AblationTable:
    """Dice per image of the README's ablation rows (see the module doc) on labelled images.

    Args:
        datalist: items with ``image_key`` and ``label_key`` (PNG paths) and ``case_key``.
        models: the fold models (distinct modules, see :func:`networks.ensemble.load_fold_models`).
        preprocessing: the inference transforms; ``data[image_key]`` must keep the original size in its meta.
        restore: brings ``data[pred_key]`` (probabilities at the network size) back to the image's size
            (the bundle's ``Invertd``).
        tta_inferer: the test-time augmentation around ``inferer`` (:class:`inferers.FlipTTAInferer`).
        inferer: how a model is run without TTA (default the whole image at once).
        threshold: probability threshold of the masks.
        min_size: RSIP: components with fewer pixels are removed (51 = "at most 50 px").
        median_window: EMF window width.
        single_model: index in ``models`` of the single model of the first four rows.
        device: where the models run.
        amp: autocast (float16 on CUDA, bfloat16 on the CPU).
        progress: show a progress bar.

    An image that cannot be read or predicted is logged with its name and the error, kept in ``failed``, and the
    others go on.
    """
    if not models:
        raise ValueError("run_ablation needs at least one model")
    if not 0 <= single_model < len(models):
        raise ValueError(f"single_model {single_model} is not an index of the {len(models)} models")
    device = torch.device(device)
    inferer = inferer if inferer is not None else SimpleInferer()
    rsip = angioma_postprocessing(pred_key, min_size=min_size, median_window=1)
    emf = angioma_postprocessing(pred_key, min_size=0, median_window=median_window)
    table = AblationTable()
    table.labels = {
        SINGLE: f"single model (#{single_model})",
        TTA: "+ TTA (8-way flips)",
        RSIP: f"+ RSIP (components of <= {min_size - 1} px removed)",
        EMF: f"+ EMF ({median_window} x {median_window} median)",
        ENSEMBLE: f"{len(models)}-model ensemble (+ TTA, RSIP, EMF)",
    }
    for model in models:
        model.to(device).eval()
    autocast = (
        torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)
        if amp
        else nullcontext()
    )
    for index, item in enumerate(tqdm(datalist, desc="ablation", unit="image", disable=not progress)):
        case = str(item.get(case_key, f"image {index}"))
        try:
            data = preprocessing(dict(item))
            image = data[image_key]
            shape = tuple(int(s) for s in image.meta["spatial_shape"])
            label = fit_mask_to_image(read_mask_png(item[label_key]), shape, item[label_key])
            x = convert_to_tensor(image, track_meta=False).unsqueeze(0).to(device)
            with torch.inference_mode(), autocast:
                single = torch.sigmoid(inferer(x, models[single_model]).float())[0]
                tta = [torch.sigmoid(tta_inferer(x, model).float())[0] for model in models]
            probabilities = {SINGLE: single, TTA: tta[single_model], ENSEMBLE: torch.stack(tta).mean(0)}
            restored = {step: restore({**data, pred_key: p.cpu()})[pred_key] for step, p in probabilities.items()}
            binary = {step: (torch.as_tensor(r) >= threshold).float() for step, r in restored.items()}
            masks = {SINGLE: binary[SINGLE], TTA: binary[TTA]}
            masks[RSIP] = rsip({pred_key: binary[TTA]})[pred_key]
            masks[EMF] = emf({pred_key: masks[RSIP]})[pred_key]
            ensemble = binary[ENSEMBLE]
            masks[ENSEMBLE] = emf(rsip({pred_key: ensemble}))[pred_key]
            scores = {step: dice_score(torch.as_tensor(m)[0], label) for step, m in masks.items()}
        except Exception as error:  # noqa: BLE001 - one bad image must not stop the evaluation of the others
            message = root_cause_message(error)
            logger.error("image %s failed: %s", case, message)
            table.failed[case] = message
            continue
        for step, value in scores.items():
            table.dice[step][case] = value
    return table
