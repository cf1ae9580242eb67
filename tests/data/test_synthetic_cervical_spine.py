"""Synthetic cervical spine CT demo: RSNA layout, real DICOM read back with the right geometry, labels and HU."""

from __future__ import annotations

import argparse
import csv
import locale

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import center_of_mass

from data.rsna_cervical import load_rsna_cervical_datalist, load_rsna_cervical_test_datalist, read_segmentation
from data.synthetic.cervical_spine_ct_fracture import add_arguments, generate
from formats.dicom import read_dicom_series


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("cspine_demo")
    generate(root, cases=4, seed=3, size=40, slices=40, test_cases=1, monochrome1_fraction=0.25)
    return root


def test_layout_series_and_labels(demo):
    items, skipped = load_rsna_cervical_datalist(demo)
    assert len(items) == 4 and skipped == []
    assert len(load_rsna_cervical_test_datalist(demo)[0]) == 1
    with open(demo / "train.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["StudyInstanceUID", "patient_overall", "C1", "C2", "C3", "C4", "C5", "C6", "C7"]
    overall = [item["label"][0] for item in items]
    assert 0 < sum(overall) < 4  # fractured and intact studies
    seen = {"MONOCHROME1": 0, "reversed": 0, "segmented": 0}
    for item in items:
        volume, affine, meta = read_dicom_series(item["image"])
        assert volume.shape == (40, 40, 40) and volume.dtype == np.int16
        assert volume.min() >= -1024 and 700 < volume.max() < 3072
        assert nib.aff2axcodes(affine) == ("L", "P", "S") and meta["study_uid"] == item["study"]
        seen["MONOCHROME1"] += meta["photometric"] == "MONOCHROME1"
        seen["reversed"] += not meta["instance_numbers_decrease"]
        if "segmentation" in item:
            seen["segmented"] += 1
            assert nib.aff2axcodes(nib.load(item["segmentation"]).affine) == ("L", "A", "S")  # as RSNA's files
            labels = read_segmentation(item["segmentation"], affine, volume.shape)
            assert set(np.unique(labels)) == set(range(8))  # T1 (8) mapped to background
            assert volume[labels > 0].mean() > 300 > volume[labels[:, ::-1] > 0].mean()
            heights = [center_of_mass(labels == v)[2] for v in range(1, 8)]
            assert np.all(np.diff(heights) < 0)  # C1 on top, C7 lowest (k runs feet to head)
    assert all(seen.values()), seen


def test_deterministic_and_options_parse(tmp_path, demo):
    generate(tmp_path / "again", cases=1, seed=3, size=40, slices=40, test_cases=0)
    uid = "1.2.826.0.1.3680043.10000"
    first = read_dicom_series(demo / "train_images" / uid)[0]
    assert np.array_equal(first, read_dicom_series(tmp_path / "again" / "train_images" / uid)[0])
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    options = vars(parser.parse_args(["--size", "48", "--slices", "60", "--monochrome1-fraction", "0"]))
    assert options["size"] == 48 and options["slices"] == 60 and options["monochrome1_fraction"] == 0.0


def test_writing_dicom_leaves_the_process_locale_as_it_was(tmp_path):
    before = locale.setlocale(locale.LC_ALL)
    generate(tmp_path, cases=1, seed=0, size=32, slices=32, test_cases=0)
    assert locale.setlocale(locale.LC_ALL) == before  # ITK's GDCM writer sets "C" (ASCII text decoding) otherwise
