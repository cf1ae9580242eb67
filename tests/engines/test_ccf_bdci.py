"""The README ablation rows, on hand-made images and models with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose, EnsureTyped, Invertd
from PIL import Image

from engines.ccf_bdci import fold_model_paths, run_ablation
from formats.png import save_png_atomic
from inferers.flip_tta import FlipTTAInferer
from metrics.ccf_bdci import STEPS, dice_score, write_ablation_report
from transforms.postprocessing import EdgeMedianFilterd

SIZE = 64


class Threshold(torch.nn.Module):
    """Logit +10 where the image is bright, -10 elsewhere: predicts exactly the bright pixels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 20 * (x - 0.5)


class Undecided(torch.nn.Module):
    """Logit 0 everywhere: probability 0.5, foreground at the threshold 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


@pytest.fixture
def case(tmp_path):
    """A square lesion that the image shows with a 16-px bright speck beside it; the label is the square."""
    image = np.zeros((SIZE, SIZE), np.uint8)
    image[10:40, 10:40] = 255
    image[50:54, 50:54] = 255
    label = np.zeros_like(image)
    label[10:40, 10:40] = 255
    Image.fromarray(np.repeat(image[..., None], 3, axis=-1), mode="RGB").save(tmp_path / "img.png")
    save_png_atomic(tmp_path / "label.png", label)
    return {"case": "a", "image": str(tmp_path / "img.png"), "label": str(tmp_path / "label.png")}, label


def _ablation(items, models, **kwargs):
    parser = ConfigParser()
    bundle = Path(__file__).resolve().parents[2] / "bundles" / "angioma_ultrasound_segmentation"
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["image_size"] = SIZE
    preprocessing = parser.get_parsed_content("preprocessing")
    restore = Compose([EnsureTyped("pred", track_meta=True), Invertd("pred", preprocessing, "image", nearest_interp=False)])
    return run_ablation(items, models, preprocessing, restore, FlipTTAInferer(), progress=False, **kwargs)


def test_rows_add_tta_small_component_removal_median_and_the_ensemble(case):
    item, label = case
    table = _ablation([item], [Threshold(), Undecided()])
    square_and_speck = 2 * 900 / (900 + 916)
    assert table.dice["single model"]["a"] == pytest.approx(square_and_speck)
    assert table.dice["+ TTA"]["a"] == pytest.approx(square_and_speck)  # a pixel-wise model is flip-invariant
    assert table.dice["+ RSIP"]["a"] == 1.0  # the 16-px speck is removed, the square kept
    smoothed = EdgeMedianFilterd("m", window=19)({"m": (label[None] > 0).astype(np.float32)})["m"][0]
    assert table.dice["+ EMF"]["a"] == pytest.approx(dice_score(smoothed, label))  # its corners are rounded
    # mean of the probabilities: 0.75 on the bright pixels, 0.25 elsewhere -> the same masks as the single model
    assert table.dice["ensemble"]["a"] == table.dice["+ EMF"]["a"]
    assert table.labels["ensemble"].startswith("2-model ensemble")


def test_single_model_index_threshold_and_switched_off_steps(case):
    item, _ = case
    table = _ablation([item], [Threshold(), Undecided()], single_model=1, max_size=0, median_window=1)
    whole_image = 2 * 900 / (SIZE * SIZE + 900)  # p = 0.5 >= threshold everywhere
    for step in ("single model", "+ TTA", "+ RSIP", "+ EMF"):
        assert table.dice[step]["a"] == pytest.approx(whole_image)
    with pytest.raises(ValueError, match="not an index"):
        _ablation([item], [Threshold()], single_model=1)


def test_a_bad_image_is_named_after_the_table_of_the_others(case, tmp_path, capsys):
    item, _ = case
    missing = {"case": "gone", "image": str(tmp_path / "gone.png"), "label": item["label"]}
    table = _ablation([item, missing], [Threshold()])
    assert table.cases == ["a"] and "gone.png" in table.failed["gone"]
    with pytest.raises(RuntimeError, match="gone.png"):
        write_ablation_report(table, tmp_path / "ablation.json")
    printed = capsys.readouterr().out
    assert "single model (#0)" in printed and "FAILED gone" in printed
    saved = json.loads((tmp_path / "ablation.json").read_text())
    assert [row["step"] for row in saved["rows"]] == list(STEPS) and saved["num_images"] == 1


def test_fold_model_paths_name_every_missing_model_and_the_folds_that_have_one(tmp_path):
    for fold in (0, 3):
        (tmp_path / f"fold{fold}" / "models").mkdir(parents=True)
        (tmp_path / f"fold{fold}" / "models" / "model.pt").write_bytes(b"")
    (tmp_path / "fold1" / "models").mkdir(parents=True)  # trained, but no model yet
    expected = [str(tmp_path / f"fold{fold}" / "models" / "model.pt") for fold in (3, 0)]
    assert fold_model_paths(tmp_path, [3, 0]) == expected
    with pytest.raises(FileNotFoundError) as missing:
        fold_model_paths(tmp_path, [0, 1, 2, 3, 4])
    message = str(missing.value)
    assert "3 of the 5 fold models" in message
    for fold in (1, 2, 4):
        assert str(tmp_path / f"fold{fold}" / "models" / "model.pt") in message
    assert '--folds "[0, 3]"' in message and "--model_paths" in message
    with pytest.raises(FileNotFoundError, match="no fold has a model there"):
        fold_model_paths(tmp_path / "elsewhere", [0])
    with pytest.raises(ValueError, match="folds is empty"):
        fold_model_paths(tmp_path, [])
