"""The file formats' own functions beyond the dictionary transforms' tests (tests/transforms)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from formats.errors import CaseReadError
from formats.h5 import read_h5, write_h5_atomic
from formats.nifti import write_nifti_atomic
from formats.oct import read_oct_cube, read_oct_prediction, write_oct_cube, write_oct_prediction
from formats.png import save_rgb_png_atomic


def test_read_h5_returns_the_checked_datasets_and_names_the_file(tmp_path):
    path = tmp_path / "0001.h5"
    write_h5_atomic(path, {"img": np.ones((3, 4), np.uint8), "cls": np.uint8(1)})
    arrays = read_h5(path, ["img", "cls"], [2, 0])
    assert arrays["img"].shape == (3, 4) and arrays["cls"].shape == (1,)
    with pytest.raises(CaseReadError, match="0001.h5: dataset 'mask' not found"):
        read_h5(path, ["mask"], [2])
    with pytest.raises(CaseReadError, match="file not found"):
        read_h5(tmp_path / "none.h5", ["img"], [2])


def test_nifti_keeps_dtype_and_axes(tmp_path):
    volume = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_nifti_atomic(tmp_path / "v.nii.gz", volume)
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "v.nii.gz").dataobj), volume)
    with pytest.raises(FileExistsError):
        write_nifti_atomic(tmp_path / "v.nii.gz", volume)


def test_oct_cube_and_prediction_round_trip(tmp_path):
    cube = np.random.default_rng(0).integers(0, 255, (3, 5, 4), dtype=np.uint8)
    np.testing.assert_array_equal(read_oct_cube(write_oct_cube(tmp_path / "c.img", cube), expected_slices=3), cube)
    labels = np.zeros((3, 5, 4), np.uint8)
    labels[1, 2, 3] = 2
    detection = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]], np.float32)
    write_oct_prediction(tmp_path / "pred", "c", labels, detection)
    assert (tmp_path / "pred" / "c_det.csv").read_text().splitlines()[0] == "slice,REA,SRF,PED"
    read_labels, read_det = read_oct_prediction(tmp_path / "pred", "c")
    np.testing.assert_array_equal(read_labels, labels)
    np.testing.assert_allclose(read_det, detection, atol=1e-6)


def test_rgb_png_refuses_a_grey_array(tmp_path):
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        save_rgb_png_atomic(tmp_path / "x.png", np.zeros((4, 4), np.uint8))


def test_oct_cube_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    cube = np.zeros((4, 5, 4), np.uint8)
    real_save = Image.Image.save

    def save_three(image, path, *args, **kwargs):
        if str(path).endswith("4.bmp"):
            raise OSError("disk full")
        return real_save(image, path, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_three)
    with pytest.raises(OSError, match="disk full"):
        write_oct_cube(tmp_path / "c.img", cube)
    assert list(tmp_path.iterdir()) == [], "no cube of 3 slices may be left"
    monkeypatch.undo()
    write_oct_cube(tmp_path / "c.img", cube)
    with pytest.raises(FileExistsError, match="c.img"):
        write_oct_cube(tmp_path / "c.img", cube)
    write_oct_cube(tmp_path / "c.img", cube[:2], overwrite=True)
    assert sorted(p.name for p in (tmp_path / "c.img").iterdir()) == ["1.bmp", "2.bmp"]


def test_oct_prediction_is_both_files_or_neither(tmp_path):
    (tmp_path / "c_det.csv").write_text("an older run")
    with pytest.raises(FileExistsError, match="c_det.csv"):
        write_oct_prediction(tmp_path, "c", np.zeros((2, 3, 4), np.uint8), np.zeros((2, 3), np.float32))
    assert [p.name for p in tmp_path.iterdir()] == ["c_det.csv"]
