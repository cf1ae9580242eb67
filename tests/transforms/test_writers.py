"""The writer base and the bundle writers: ``{case}{suffix}{extension}``, atomic, no overwrite unless asked."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from transforms.png import SaveGreyPNGd
from transforms.writers import CaseWriterd, SaveH5d, SaveOverlayd


def test_save_h5_writes_one_file_per_case_with_the_dataset_names_and_dtype(tmp_path):
    data = {"case": "0003", "long": torch.ones(4, 5), "trans": np.zeros((4, 5)), "cls": torch.tensor(1.0)}
    writer = SaveH5d(["long", "trans", "cls"], tmp_path, dataset_names=["long_mask", "trans_mask", "cls"])
    out = writer(data)
    assert out["long"] is data["long"]
    with h5py.File(tmp_path / "0003_pred.h5") as f:
        assert sorted(f) == ["cls", "long_mask", "trans_mask"]
        assert f["long_mask"].dtype == np.uint8 and f["long_mask"][()].sum() == 20 and f["cls"][()] == 1
    with pytest.raises(FileExistsError, match="0003_pred.h5"):
        writer(data)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_save_overlay_puts_the_pairs_side_by_side(tmp_path):
    image = torch.rand(1, 6, 8)
    label = torch.zeros(1, 12, 16, dtype=torch.uint8)
    label[0, :4, :4] = 1
    SaveOverlayd(["image", "image"], ["label", "label"], tmp_path)({"case": "a", "image": image, "label": label})
    with Image.open(tmp_path / "a_overlay.png") as picture:
        assert picture.mode == "RGB" and picture.size == (2 * 16 + 4, 12)


def test_a_writer_names_its_files_after_the_case():
    class Probe(CaseWriterd):
        extension = ".txt"

    probe = Probe("x", "out", suffix="_s")
    assert probe.output_path("c").as_posix() == "out/c_s.txt"
    assert probe.output_path("c", suffix="", folder="elsewhere").as_posix() == "elsewhere/c.txt"
    with pytest.raises(NotImplementedError, match="Probe"):
        probe({"case": "c", "x": 1})


def test_save_grey_png_writes_one_file_per_key(tmp_path):
    data = {"case": "7", "mask": torch.ones(1, 4, 4), "edge": torch.zeros(1, 4, 4)}
    writer = SaveGreyPNGd(["mask", "edge"], tmp_path, suffix=["_mask", "_edge"])
    assert [p.name for p in writer.output_paths("7")] == ["7_mask.png", "7_edge.png"]
    writer(data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["7_edge.png", "7_mask.png"]
    with pytest.raises(ValueError, match="distinct suffixes"):
        SaveGreyPNGd(["mask", "edge"], tmp_path)


def test_a_writer_that_fails_half_way_leaves_no_file(tmp_path):
    data = {"case": "7", "mask": torch.ones(1, 4, 4), "edge": torch.ones(2, 4, 4)}  # edge: not one picture
    with pytest.raises(ValueError, match="7_edge.png"):
        SaveGreyPNGd(["mask", "edge"], tmp_path, suffix=["_mask", "_edge"])(data)
    assert list(tmp_path.iterdir()) == [], "the mask written first must not be left alone"
