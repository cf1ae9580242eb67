"""DICOM series reading (order, HU, MONOCHROME1, bad inputs, real JPEG 2000) and label-map reorientation."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from data.synthetic.cervical_spine_ct_fracture import _nifti_like_rsna, write_dicom_series
from formats.dicom import LPS_TO_RAS, read_dicom_series, read_label_map
from formats.errors import CaseReadError

REAL_SERIES = Path(__file__).resolve().parents[1] / "data" / "real" / "ct_dicom_series"
SPACING = np.array([0.8, 0.8, 2.5])
ORIGIN = np.array([-10.0, -20.0, -300.0])


def _volume() -> np.ndarray:
    """An asymmetric (12 columns, 10 rows, 6 slices) HU volume: every voxel distinct, even values."""
    return (np.arange(12 * 10 * 6).reshape(12, 10, 6) * 2 - 600).astype(np.int16)


def _write(folder: Path, hu: np.ndarray | None = None, **kwargs) -> np.ndarray:
    hu = _volume() if hu is None else hu
    write_dicom_series(folder, hu, ORIGIN, SPACING, kwargs.pop("study_uid", "1.2.3.4"), **kwargs)
    return hu


def _expected_affine(hu_shape=(12, 10, 6)) -> np.ndarray:
    lps = np.eye(4)
    lps[:3, :3] = np.diag(SPACING)
    lps[:3, 3] = ORIGIN
    return LPS_TO_RAS @ lps


@pytest.mark.parametrize("reverse_files", [False, True])
def test_slices_ordered_by_position_not_file_name(tmp_path, reverse_files):
    hu = _write(tmp_path / "s", reverse_files=reverse_files)
    files = sorted((tmp_path / "s").glob("*.dcm"))
    names = np.random.default_rng(1).permutation(len(files))
    for path, n in zip(files, names):
        path.rename(path.with_name(f"tmp{n}.dcm"))
    volume, affine, meta = read_dicom_series(tmp_path / "s")
    assert volume.dtype == np.int16 and np.array_equal(volume, hu)
    assert np.allclose(affine, _expected_affine(), atol=1e-3)
    assert np.allclose(meta["spacing"], SPACING, atol=1e-4)
    assert meta["instance_numbers_decrease"] is (not reverse_files)
    assert np.all(np.diff(meta["slice_positions"]) > 0)


@pytest.mark.parametrize(("intercept", "slope"), [(0.0, 1.0), (-1024.0, 1.0), (-1000.0, 2.0)])
def test_hounsfield_rescale(tmp_path, intercept, slope):
    hu = _write(tmp_path / "s", intercept=intercept, slope=slope)
    volume, _, meta = read_dicom_series(tmp_path / "s")
    assert np.array_equal(volume, hu)
    assert meta["rescale_intercept"][0] == intercept and meta["rescale_slope"][0] == slope


def test_monochrome1_is_read_bone_bright(tmp_path):
    hu = _write(tmp_path / "s", monochrome1=True)
    assert b"MONOCHROME1 " in (tmp_path / "s" / "1.dcm").read_bytes()
    volume, _, meta = read_dicom_series(tmp_path / "s")
    assert meta["photometric"] == "MONOCHROME1" and np.array_equal(volume, hu)


def _message(folder, match) -> CaseReadError:
    with pytest.raises(CaseReadError, match=match) as info:
        read_dicom_series(folder)
    return info.value


def test_empty_folder_and_corrupt_file(tmp_path):
    (tmp_path / "empty").mkdir()
    assert _message(tmp_path / "empty", "no DICOM files").path == str(tmp_path / "empty")
    _write(tmp_path / "s")
    (tmp_path / "s" / "3.dcm").write_bytes(b"not a dicom file" * 40)
    assert _message(tmp_path / "s", r"3\.dcm: not a readable DICOM").path.endswith("3.dcm")


def test_two_series_in_one_folder(tmp_path):
    _write(tmp_path / "s")
    _write(tmp_path / "other", study_uid="9.8.7")
    shutil.copy(tmp_path / "other" / "2.dcm", tmp_path / "s" / "extra.dcm")
    _message(tmp_path / "s", "2 series in one folder.*1.2.3.4.1.*9.8.7.1")


def test_missing_slice(tmp_path):
    _write(tmp_path / "s")
    (tmp_path / "s" / "3.dcm").unlink()
    _message(tmp_path / "s", "missing slice.*gap 5.00 mm.*median spacing 2.50")


def test_inconsistent_slice_size(tmp_path):
    _write(tmp_path / "s")
    (tmp_path / "s" / "1.dcm").unlink()  # the top slice, replaced by a larger one at the same position
    top = ORIGIN + np.array([0, 0, 5 * SPACING[2]])
    write_dicom_series(tmp_path / "big", np.zeros((14, 10, 1), np.int16), top, SPACING, "1.2.3.4")
    shutil.copy(tmp_path / "big" / "1.dcm", tmp_path / "s" / "1.dcm")
    _message(tmp_path / "s", r"1\.dcm: slice size \(14, 10\)")


def _asymmetric_labels(shape=(12, 10, 6)) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    labels[1:4, 2:3, 1] = 1  # a bar along i at one slice
    labels[8, 1:7, 4] = 2  # a bar along j at another
    labels[10, 8, 0:5] = 3  # a bar along k
    return labels


def test_label_map_orientation_from_headers(tmp_path):
    labels, affine = _asymmetric_labels(), _expected_affine()
    variants = {
        "rsna.nii": _nifti_like_rsna(labels, affine),  # rows reversed (LAS), as the RSNA segmentations
        "ras.nii.gz": nib.as_closest_canonical(nib.Nifti1Image(labels, affine)),
        "kji.nii": nib.Nifti1Image(labels.transpose(2, 1, 0).copy(), affine[:, [2, 1, 0, 3]]),
    }
    for name, image in variants.items():
        nib.save(image, tmp_path / name)
        assert np.array_equal(read_label_map(tmp_path / name, affine, labels.shape), labels), name
    assert not np.array_equal(np.asarray(variants["rsna.nii"].dataobj), labels)  # the file really is flipped


def test_label_map_shape_or_grid_mismatch(tmp_path):
    affine = _expected_affine()
    nib.save(nib.Nifti1Image(_asymmetric_labels((12, 10, 5)), affine), tmp_path / "short.nii")
    with pytest.raises(CaseReadError, match=r"short\.nii: shape \(12, 10, 5\).*\(12, 10, 6\)"):
        read_label_map(tmp_path / "short.nii", affine, (12, 10, 6))
    shifted = affine.copy()
    shifted[2, 3] += 10.0
    nib.save(nib.Nifti1Image(_asymmetric_labels(), shifted), tmp_path / "shifted.nii")
    with pytest.raises(CaseReadError, match=r"shifted\.nii: its grid does not coincide"):
        read_label_map(tmp_path / "shifted.nii", affine, (12, 10, 6))
    nib.save(nib.Nifti1Image(np.zeros((12, 10, 6, 2), np.uint8), affine), tmp_path / "two_volumes.nii")
    with pytest.raises(CaseReadError, match=r"two_volumes\.nii: expected a 3-D label map, got shape \(12, 10, 6, 2\)"):
        read_label_map(tmp_path / "two_volumes.nii", affine, (12, 10, 6))
    nib.save(nib.Nifti1Image(_asymmetric_labels()[..., None], affine), tmp_path / "trailing.nii")
    assert np.array_equal(read_label_map(tmp_path / "trailing.nii", affine, (12, 10, 6)), _asymmetric_labels())


def test_real_jpeg2000_series_and_its_flipped_label_map():
    volume, affine, meta = read_dicom_series(REAL_SERIES, pattern="CT.*")
    assert volume.shape == (512, 512, 4) and volume.dtype == np.int16
    assert volume.min() == -1024 and 1000 < volume.max() < 3072  # air and bone in HU (RescaleIntercept -1024)
    assert np.allclose(meta["spacing"], (0.9765625, 0.9765625, 2.0))
    assert nib.aff2axcodes(affine) == ("L", "P", "S")
    labels = read_label_map(next(REAL_SERIES.glob("*.nii.gz")), affine, volume.shape)
    spine = (labels >= 26) & (labels <= 50)  # TotalSegmentator v2 vertebrae
    assert spine.sum() > 1000
    assert volume[spine].mean() > 150 > volume[spine[:, ::-1]].mean()  # aligned: bone; row-flipped: not
