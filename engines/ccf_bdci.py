"""CCF BDCI 2021 angioma segmentation: the rank-1 solution's inference ablation as one evaluation workflow.

The rank-1 README reports how each inference trick adds to the Dice (see
bundles/angioma_ultrasound_segmentation/docs/README.md); :func:`run_ablation` computes those rows
(:data:`metrics.ccf_bdci.STEPS`) on any labelled images in one pass of
:class:`engines.inference.CaseInferenceWorkflow`, sharing the network outputs between rows (the single model's TTA
run serves three rows):

==================  ======================================================================================
row                 prediction
==================  ======================================================================================
single model        ``sigmoid(model_k(x))`` resized back, thresholded
+ TTA               ``sigmoid(mean of the 8 flip/rot180 variants of model_k)`` (:class:`inferers.FlipTTAInferer`)
+ RSIP              and connected components of at most 50 px removed (8-connected, RemoveSmallComponentsd)
+ EMF               and the 19 x 19 edge median filter (:class:`transforms.postprocessing.EdgeMedianFilterd`)
ensemble            mean over all fold models of their TTA probabilities, then RSIP and EMF (the submission)
==================  ======================================================================================

Each row adds to the one above, as in the README. The scores are :func:`metrics.ccf_bdci.dice_score` at the image's
own size; an image that cannot be read or predicted is reported by the workflow and the others go on.

:func:`fold_model_paths` gives the bundle's inference its fold models, naming every missing one at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.inferers import Inferer, SimpleInferer

from engines.inference import CaseInferenceWorkflow
from formats.png import fit_mask_to_image, read_mask_png
from metrics.ccf_bdci import EMF, ENSEMBLE, RSIP, SINGLE, TTA, AblationTable, dice_score
from transforms.angioma import angioma_postprocessing

__all__ = ["AblationPredictor", "AblationScorer", "fold_model_paths", "run_ablation"]


def fold_model_paths(runs_dir: str | Path, folds: Sequence[int], filename: str = "models/model.pt") -> list[str]:
    """The best model of each fold in ``folds``: ``runs_dir/fold{k}/filename``, as training writes them.

    Raises:
        FileNotFoundError: some are missing; the message names every missing file, the folds that have a model
            under ``runs_dir`` and how to select them (``--folds``) or other checkpoints (``--model_paths``).
    """
    if not folds:
        raise ValueError("folds is empty: name at least one fold model, e.g. --folds \"[0]\"")
    paths = [Path(runs_dir) / f"fold{k}" / filename for k in folds]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        pattern = re.compile(r"fold(\d+)")
        found = sorted(
            int(match.group(1))
            for path in Path(runs_dir).glob(f"fold*/{filename}")
            if (match := pattern.fullmatch(path.relative_to(runs_dir).parts[0]))
        )
        hint = (
            f"the folds with a model there are {found}: use them with --folds \"{found}\""
            if found
            else "no fold has a model there: train the folds first (scripts/train_folds.py) or set --runs_dir"
        )
        raise FileNotFoundError(
            f"{len(missing)} of the {len(paths)} fold models of folds {list(folds)} under {runs_dir} are missing: "
            f"{', '.join(missing)}; {hint}, or give checkpoints with --model_paths"
        )
    return [str(path) for path in paths]


class AblationPredictor(torch.nn.Module):
    """The probabilities the ablation rows need, from one input: ``(B, 3 * C, H, W)``.

    Channel blocks: the single model without TTA, the single model with TTA, the mean over all models of their TTA
    probabilities (each the sigmoid of ``C`` logit channels).

    Args:
        models: the fold models (distinct modules, see :func:`networks.ensemble.load_fold_models`).
        tta_inferer: the test-time augmentation around ``inferer`` (:class:`inferers.FlipTTAInferer`).
        inferer: how a model is run without TTA.
        single_model: index in ``models`` of the single model.
    """

    def __init__(
        self, models: Sequence[torch.nn.Module], tta_inferer: Inferer, inferer: Inferer, single_model: int = 0
    ) -> None:
        super().__init__()
        if not models:
            raise ValueError("run_ablation needs at least one model")
        if not 0 <= single_model < len(models):
            raise ValueError(f"single_model {single_model} is not an index of the {len(models)} models")
        self.models = torch.nn.ModuleList(models)
        self.tta_inferer = tta_inferer
        self.inferer = inferer
        self.single_model = single_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = torch.sigmoid(self.inferer(x, self.models[self.single_model]).float())
        tta = [torch.sigmoid(self.tta_inferer(x, model).float()) for model in self.models]
        return torch.cat([single, tta[self.single_model], torch.stack(tta).mean(0)], dim=1)


class AblationScorer:
    """Postprocessing of :class:`AblationPredictor`'s output: each row's mask at the image's size, scored.

    The Dice of every row of ``data[case_key]`` goes into ``table`` only when all rows are scored.

    Args:
        table: where the scores go.
        restore: brings ``data[pred_key]`` (probabilities at the network size) back to the image's size.
        threshold: probability threshold of the masks.
        max_size: RSIP: components of at most this many pixels are removed.
        median_window: EMF window width.
        image_key: the preprocessed image, whose meta ``spatial_shape`` is the size on disk.
        label_key: the label PNG's path (left as is by the preprocessing).
    """

    def __init__(
        self,
        table: AblationTable,
        restore: Callable[[dict], dict],
        threshold: float = 0.5,
        max_size: int = 50,
        median_window: int = 19,
        image_key: str = "image",
        label_key: str = "label",
        case_key: str = "case",
        pred_key: str = "pred",
    ) -> None:
        self.table = table
        self.restore = restore
        self.threshold = threshold
        self.rsip = angioma_postprocessing(pred_key, max_size=max_size, median_window=1)
        self.emf = angioma_postprocessing(pred_key, max_size=0, median_window=median_window)
        self.image_key = image_key
        self.label_key = label_key
        self.case_key = case_key
        self.pred_key = pred_key

    def _mask(self, data: Mapping[str, Any], probabilities: torch.Tensor) -> torch.Tensor:
        restored = self.restore({**data, self.pred_key: probabilities.cpu()})[self.pred_key]
        return (torch.as_tensor(restored) >= self.threshold).float()

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        shape = tuple(int(s) for s in data[self.image_key].meta["spatial_shape"])
        label_path = data[self.label_key]
        label = fit_mask_to_image(read_mask_png(label_path), shape, label_path)
        single, tta, ensemble = torch.chunk(data[self.pred_key], 3, dim=0)
        key = self.pred_key
        masks = {SINGLE: self._mask(data, single), TTA: self._mask(data, tta)}
        masks[RSIP] = self.rsip({key: masks[TTA]})[key]
        masks[EMF] = self.emf({key: masks[RSIP]})[key]
        masks[ENSEMBLE] = self.emf(self.rsip({key: self._mask(data, ensemble)}))[key]
        scores = {step: dice_score(torch.as_tensor(mask)[0], label) for step, mask in masks.items()}
        for step, value in scores.items():
            self.table.dice[step][str(data[self.case_key])] = value
        return data


def run_ablation(
    datalist: Sequence[Mapping[str, Any]],
    models: Sequence[torch.nn.Module],
    preprocessing: Callable[[dict], dict],
    restore: Callable[[dict], dict],
    tta_inferer: Inferer,
    inferer: Inferer | None = None,
    threshold: float = 0.5,
    max_size: int = 50,
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
        max_size: RSIP: components of at most this many pixels are removed.
        median_window: EMF window width.
        single_model: index in ``models`` of the single model of the first four rows.
        device: where the models run.
        amp: autocast (float16 on CUDA, bfloat16 on the CPU).
        progress: show a progress bar.

    An image that cannot be read or predicted is logged with its name and the error, kept in ``failed``, and the
    others go on.
    """
    inferer = inferer if inferer is not None else SimpleInferer()
    predictor = AblationPredictor(models, tta_inferer, inferer, single_model)
    table = AblationTable()
    table.labels = {
        SINGLE: f"single model (#{single_model})",
        TTA: "+ TTA (8-way flips)",
        RSIP: f"+ RSIP (components of <= {max_size} px removed)",
        EMF: f"+ EMF ({median_window} x {median_window} median)",
        ENSEMBLE: f"{len(models)}-model ensemble (+ TTA, RSIP, EMF)",
    }
    scorer = AblationScorer(
        table, restore, threshold, max_size, median_window, image_key, label_key, case_key, pred_key
    )
    items = [{**item, case_key: str(item.get(case_key, f"image {index}"))} for index, item in enumerate(datalist)]
    workflow = CaseInferenceWorkflow(
        items,
        preprocessing,
        predictor,
        scorer,
        device=device,
        amp=amp,
        image_key=image_key,
        pred_key=pred_key,
        case_key=case_key,
        raise_on_failure=False,
        progress=progress,
    )
    report = workflow.run()
    table.failed = {failure.case: failure.error for failure in report.failed}
    return table
