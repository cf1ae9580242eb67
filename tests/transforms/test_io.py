"""HDF5 case reading/writing and label-code checks: round trips and a clear error for every bad input."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import MapLabelValued

from formats.errors import CaseReadError
from formats.h5 import write_h5_atomic
from transforms.io import LoadH5d
from transforms.label import CheckLabelValuesd


def _case(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "0007.h5"
    write_h5_atomic(path, arrays)
    return path


def test_round_trip_images_and_scalars(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    long_img = rng.integers(0, 256, (12, 10), dtype=np.uint8)
    trans_img = rng.integers(0, 256, (9, 11), dtype=np.uint8)
    path = _case(tmp_path, long_img=long_img, trans_img=trans_img, cls=np.uint8(1), score=np.array([0.25]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0007.h5"]  # no temporary file left behind
    with h5py.File(path) as f:
        assert f["long_img"].dtype == np.uint8 and f["cls"].shape == ()

    out = LoadH5d("image", datasets=("long_img", "trans_img"))({"image": str(path), "case": "0007"})
    assert out["case"] == "0007"
    for key, array in (("long_img", long_img), ("trans_img", trans_img)):
        assert isinstance(out[key], MetaTensor)
        assert out[key].shape == (1, *array.shape) and out[key].dtype == torch.float32
        np.testing.assert_array_equal(out[key][0].numpy(), array)
        assert out[key].meta["filename_or_obj"] == str(path)
        assert out[key].meta["h5_dataset"] == key
        assert tuple(out[key].meta["spatial_shape"]) == array.shape

    scalars = LoadH5d("label", datasets=("cls", "score"), output_keys=("risk", "s"), expected_ndim=0)({"label": path})
    assert scalars["risk"].shape == (1,) and scalars["risk"].dtype == torch.float32 and scalars["risk"].item() == 1
    assert scalars["s"].shape == (1,) and scalars["s"].item() == 0.25


def test_per_dataset_ndim_and_missing_key(tmp_path: Path) -> None:
    path = _case(tmp_path, mask=np.zeros((4, 5), np.uint8), cls=np.uint8(0))
    out = LoadH5d("label", datasets=("mask", "cls"), expected_ndim=(2, 0))({"label": path})
    assert out["mask"].shape == (1, 4, 5) and out["cls"].shape == (1,)
    assert LoadH5d("label", datasets="mask", allow_missing_keys=True)({"other": 1}) == {"other": 1}
    with pytest.raises(ValueError, match="one file"):
        LoadH5d(("image", "label"), datasets=("mask",))


def test_write_refuses_to_overwrite_when_asked(tmp_path: Path) -> None:
    path = _case(tmp_path, a=np.zeros(3))
    with pytest.raises(FileExistsError):
        write_h5_atomic(path, {"a": np.ones(3)}, overwrite=False)
    write_h5_atomic(path, {"a": np.ones(3)})
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["a"][()], np.ones(3))


@pytest.mark.parametrize(
    "arrays, datasets, ndim, match",
    [
        ({"long_img": np.zeros((4, 4), np.uint8)}, ("trans_img",), 2, r"'trans_img' not found; the file has .'long"),
        ({"long_img": np.zeros((4, 4, 3), np.uint8)}, ("long_img",), 2, r"'long_img' should have 2 dimensions"),
        ({"cls": np.zeros(2, np.uint8)}, ("cls",), 0, r"'cls' should be a scalar"),
        ({"long_img": np.full((4, 4), np.nan, np.float32)}, ("long_img",), 2, r"'long_img' has 16 NaN/inf"),
        ({"long_img": np.array([[1.0, np.inf]])}, ("long_img",), 2, r"'long_img' has 1 NaN/inf"),
        ({"long_img": np.zeros((0, 4), np.uint8)}, ("long_img",), 2, r"'long_img' is empty"),
        ({"long_img": np.array([b"ab", b"cd"])}, ("long_img",), 1, r"non-numeric"),
    ],
)
def test_bad_datasets_name_file_and_key(tmp_path: Path, arrays, datasets, ndim, match) -> None:
    path = _case(tmp_path, **arrays)
    with pytest.raises(CaseReadError, match=match) as error:
        LoadH5d("image", datasets=datasets, expected_ndim=ndim)({"image": path})
    assert str(path) in str(error.value)
    assert error.value.path == str(path) and error.value.key == datasets[0]


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    loader = LoadH5d("image", datasets=("long_img",))
    missing = tmp_path / "0001.h5"
    with pytest.raises(CaseReadError, match="0001.h5: file not found"):
        loader({"image": missing})
    corrupt = tmp_path / "0002.h5"
    corrupt.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(CaseReadError, match="0002.h5: not a readable HDF5 file") as error:
        loader({"image": corrupt})
    assert isinstance(error.value, ValueError) and error.value.path == str(corrupt)
    with pytest.raises(CaseReadError, match="expected the path"):
        loader({"image": None})


def test_label_codes_checked_and_mapped_both_ways(tmp_path: Path) -> None:
    stored = np.array([[0, 128, 255], [255, 128, 0]], np.uint8)
    path = _case(tmp_path, long_mask=stored)
    d = LoadH5d("label", datasets=("long_mask",))({"label": path})
    d = CheckLabelValuesd("long_mask", allowed=(0, 128, 255))(d)
    to_classes = MapLabelValued("long_mask", orig_labels=(0, 128, 255), target_labels=(0, 1, 2))
    to_stored = MapLabelValued("long_mask", orig_labels=(0, 1, 2), target_labels=(0, 128, 255))
    classes = to_classes(d)
    np.testing.assert_array_equal(classes["long_mask"][0].numpy(), [[0, 1, 2], [2, 1, 0]])
    np.testing.assert_array_equal(to_stored(classes)["long_mask"][0].numpy(), stored)


def test_unknown_label_value_names_the_file(tmp_path: Path) -> None:
    path = _case(tmp_path, long_mask=np.array([[0, 128, 255, 1, 254]], np.uint8))
    d = LoadH5d("label", datasets=("long_mask",))({"label": path})
    with pytest.raises(CaseReadError, match=r"0007.h5: 'long_mask' has label values 1, 254 outside") as error:
        CheckLabelValuesd("long_mask", allowed=(0, 128, 255))(d)
    assert error.value.key == "long_mask"
