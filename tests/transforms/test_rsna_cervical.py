"""RSNA cervical spine stage-1 preprocessing: the memory-mapped cache (hits, invalidation, interrupted writes),
the arrays' geometry and normalisation, and the stage-1 pipelines built from their JSON config."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Resize

import transforms.rsna_cervical as rsna
from data.rsna_cervical import load_rsna_cervical_datalist, read_segmentation
from data.synthetic.cervical_spine_ct_fracture import generate
from formats.dicom import read_dicom_series

SIZE = 16

# The stage-1 pipelines as a bundle config lists them (the bundle's train.json uses the same entries with
# "spatial_size": 256, "crop_slices": 64).
PIPELINES = """
{
    "spatial_size": 16,
    "z_step": 2,
    "crop_slices": 64,
    "cache_dir": null,
    "stage1_keys": ["image", "segmentation"],
    "preprocess": {
        "_target_": "transforms.rsna_cervical.PreprocessStudyd",
        "cache_dir": "@cache_dir",
        "spatial_size": "@spatial_size",
        "z_step": "@z_step"
    },
    "in_plane_augmentation": [
        {
            "_target_": "RandAffined", "keys": "@stage1_keys", "prob": 0.5,
            "rotate_range": "$numpy.deg2rad(20.0)", "translate_range": "$[0.1 * @spatial_size] * 2",
            "scale_range": [0.1, 0.1], "mode": ["bilinear", "nearest"], "padding_mode": "zeros"
        },
        {"_target_": "RandFlipd", "keys": "@stage1_keys", "prob": 0.5, "spatial_axis": 0},
        {
            "_target_": "OneOf",
            "transforms": [
                {
                    "_target_": "RandGridDistortiond", "keys": "@stage1_keys", "prob": 0.2, "num_cells": 5,
                    "distort_limit": 0.1, "mode": ["bilinear", "nearest"], "padding_mode": "zeros"
                },
                {
                    "_target_": "Rand2DElasticd", "keys": "@stage1_keys", "prob": 0.2,
                    "spacing": "$[@spatial_size] * 2", "magnitude_range": [0.0, 0.0],
                    "scale_range": [0.42, 0.42], "shear_range": [0.42, 0.42],
                    "translate_range": "$[0.13 * @spatial_size] * 2",
                    "mode": ["bilinear", "nearest"], "padding_mode": "zeros"
                }
            ]
        }
    ],
    "train_transforms": {
        "_target_": "Compose",
        "transforms": [
            "@preprocess",
            {"_target_": "RandSpatialCropd", "keys": "@stage1_keys", "roi_size": [-1, -1, "@crop_slices"], "random_size": false},
            {"_target_": "SpatialPadd", "keys": "@stage1_keys", "spatial_size": [-1, -1, "@crop_slices"], "method": "end"},
            {"_target_": "DivisiblePadd", "keys": "@stage1_keys", "k": [1, 1, 16], "method": "end"},
            {"_target_": "transforms.spatial.InPlaned", "keys": "@stage1_keys", "slice_axis": 2, "transforms": "@in_plane_augmentation"},
            {"_target_": "EnsureTyped", "keys": "@stage1_keys", "track_meta": false},
            {"_target_": "CastToTyped", "keys": "segmentation", "dtype": "$torch.long"}
        ]
    },
    "val_transforms": {
        "_target_": "Compose",
        "transforms": [
            "@preprocess",
            {"_target_": "DivisiblePadd", "keys": "@stage1_keys", "k": [1, 1, 16], "method": "end"},
            {"_target_": "EnsureTyped", "keys": "@stage1_keys", "track_meta": false},
            {"_target_": "CastToTyped", "keys": "segmentation", "dtype": "$torch.long", "allow_missing_keys": true}
        ]
    }
}
"""


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Three synthetic studies of 32 x 32 x 32 (two with label maps), in the RSNA layout."""
    root = tmp_path_factory.mktemp("rsna")
    generate(root, cases=3, seed=5, size=32, slices=32, test_cases=0, segmented_fraction=0.67)
    items, skipped = load_rsna_cervical_datalist(root)
    assert not skipped and sum("segmentation" in i for i in items) == 2
    return items


def _load(item, cache_dir, **kwargs):
    kwargs.setdefault("spatial_size", SIZE)
    return rsna.load_preprocessed_study(item["image"], item.get("segmentation"), cache_dir, **kwargs)


def _no_dicom(*args, **kwargs):
    raise AssertionError("DICOM decoded although the cache entry is valid")


def test_second_read_is_a_memory_mapped_cache_hit(studies, tmp_path, monkeypatch):
    item = studies[0]
    first = _load(item, tmp_path)
    assert not first["cache_hit"]
    monkeypatch.setattr(rsna, "read_dicom_series", _no_dicom)
    second = _load(item, tmp_path)
    assert second["cache_hit"] and isinstance(second["image"], np.memmap) and isinstance(second["label"], np.memmap)
    assert np.array_equal(second["image"], first["image"]) and np.array_equal(second["label"], first["label"])
    entry = rsna.cache_entry_dir(tmp_path, item["study"], SIZE, 2)
    assert sorted(p.name for p in entry.iterdir()) == ["entry.json", "image.npy", "label.npy"]
    second["image"][0, 0, 0] += 1.0  # copy-on-write: a write never reaches the file
    assert np.array_equal(np.load(entry / "image.npy"), first["image"])


def test_default_cache_dir_is_beside_the_dataset(studies):
    item = studies[2]
    assert rsna.default_cache_dir(item["image"]) == rsna.Path(item["image"]).resolve().parents[1] / "preprocessed"


def test_changed_file_or_parameters_rebuild(studies, tmp_path):
    item = studies[1]
    assert not _load(item, tmp_path)["cache_hit"]
    assert _load(item, tmp_path)["cache_hit"]
    dicom = sorted(rsna.Path(item["image"]).glob("*.dcm"))[3]
    stat = dicom.stat()
    os.utime(dicom, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    try:
        assert not _load(item, tmp_path)["cache_hit"]
        assert _load(item, tmp_path)["cache_hit"]
        assert not _load(item, tmp_path, z_step=1)["cache_hit"]  # another setting, another entry
        assert not _load(item, tmp_path, spatial_size=8)["cache_hit"]
        assert _load(item, tmp_path)["cache_hit"]  # the first setting's entry is untouched
        without_label = rsna.load_preprocessed_study(item["image"], None, tmp_path, spatial_size=SIZE)
        assert not without_label["cache_hit"] and without_label["label"] is None
    finally:
        os.utime(dicom, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.parametrize("damage", ["no_entry", "truncated_image", "bad_json"])
def test_half_written_entry_is_rebuilt(studies, tmp_path, damage):
    item = studies[0]
    reference = np.array(_load(item, tmp_path)["image"])
    entry = rsna.cache_entry_dir(tmp_path, item["study"], SIZE, 2)
    if damage == "no_entry":  # killed after writing the arrays, before entry.json
        (entry / "entry.json").unlink()
    elif damage == "truncated_image":
        data = (entry / "image.npy").read_bytes()
        (entry / "image.npy").write_bytes(data[: len(data) // 2])
    else:
        (entry / "entry.json").write_text('{"key": ')
    rebuilt = _load(item, tmp_path)
    assert not rebuilt["cache_hit"] and np.array_equal(rebuilt["image"], reference)
    assert _load(item, tmp_path)["cache_hit"]


def test_arrays_follow_the_reference_preprocessing(studies, tmp_path):
    item = studies[0]
    volume, affine, _ = read_dicom_series(item["image"])
    out = _load(item, tmp_path)
    image, label = np.asarray(out["image"]), np.asarray(out["label"])
    assert image.shape == label.shape == (SIZE, SIZE, 16) and image.dtype == np.float32 and label.dtype == np.uint8
    assert abs(image.mean()) < 1e-4 and abs(image.std() - 1) < 1e-3
    kept = volume[:, :, 1::2]  # 32 slices: the top slice (index 31) and every second one below it
    resized = Resize((SIZE, SIZE, -1), mode="trilinear")(torch.as_tensor(kept, dtype=torch.float32)[None])[0].numpy()
    assert np.allclose(image * out["std"] + out["mean"], resized, atol=1e-2)
    # the new grid's affine maps the kept voxels onto the same world points as the original grid
    assert np.allclose(out["affine"] @ [0, 0, 15, 1], affine @ [(32 / SIZE - 1) / 2, (32 / SIZE - 1) / 2, 31, 1])
    full_labels = read_segmentation(item["segmentation"], affine, volume.shape)
    assert set(np.unique(label)) <= set(range(8)) and np.array_equal(label, full_labels[::2, ::2, 1::2])
    hu = image * out["std"] + out["mean"]
    assert hu[label > 0].mean() > 250 > hu[label == 0].mean()  # vertebrae are bone: the map lies on the image


def test_transform_gives_channel_first_meta_tensors(studies, tmp_path):
    out = rsna.PreprocessStudyd(cache_dir=tmp_path, spatial_size=SIZE)(dict(studies[0]))
    assert out["image"].shape == out["segmentation"].shape == (1, SIZE, SIZE, 16)
    assert out["image"].meta["filename_or_obj"] == studies[0]["image"] and out["label"] == studies[0]["label"]
    assert torch.allclose(out["image"].affine, torch.as_tensor(out["segmentation"].affine))
    unlabelled = rsna.PreprocessStudyd(cache_dir=tmp_path, spatial_size=SIZE)(dict(studies[2]))
    assert "segmentation" not in unlabelled
    with pytest.raises(KeyError, match="series folder"):
        rsna.PreprocessStudyd(cache_dir=tmp_path)({"segmentation": "x"})


def _pipelines(tmp_path, **overrides):
    parser = ConfigParser(json.loads(PIPELINES))
    parser["imports"] = ["$import numpy", "$import torch"]
    parser["cache_dir"] = str(tmp_path)
    for key, value in overrides.items():
        parser[key] = value
    return parser.get_parsed_content("train_transforms"), parser.get_parsed_content("val_transforms")


def test_pipelines_from_json(studies, tmp_path, monkeypatch):
    train, val = _pipelines(tmp_path)
    train.set_random_state(0)
    out = train(dict(studies[0]))  # 16 slices after [::2], shorter than the 64-slice crop: padded at the end
    assert out["image"].shape == out["segmentation"].shape == (1, SIZE, SIZE, 64)
    assert out["image"].dtype == torch.float32 and out["segmentation"].dtype == torch.long
    assert torch.all(out["image"][..., 16:] == 0) and torch.all(out["segmentation"][..., 16:] == 0)
    assert out["segmentation"].max() > 0
    monkeypatch.setattr(rsna, "read_dicom_series", _no_dicom)  # the training epoch filled the cache
    checked = val(dict(studies[0]))
    assert checked["image"].shape == (1, SIZE, SIZE, 16) and checked["segmentation"].max() > 0
    short, _ = _pipelines(tmp_path, crop_slices=12)
    assert short(dict(studies[0]))["image"].shape == (1, SIZE, SIZE, 16)  # 12-slice crop padded to 16


def _slices_first(item, tmp_path):
    data = rsna.PreprocessStudyd(cache_dir=tmp_path / "cache", spatial_size=SIZE)(dict(item))
    from monai.transforms import Transposed

    return Transposed(["image", "segmentation"], [0, 3, 2, 1])(data)


def test_label_map_writer_round_trips_onto_the_preprocessed_grid(studies, tmp_path):
    import nibabel as nib

    item = next(i for i in studies if "segmentation" in i)
    data = _slices_first(item, tmp_path)
    data["vertebrae"] = data["segmentation"]
    rsna.SaveVertebraMapd(output_dir=tmp_path / "out")(data)
    written = nib.load(str(tmp_path / "out" / f"{item['study']}_vertebrae.nii.gz"))
    cached = _load(item, tmp_path / "cache")
    np.testing.assert_array_equal(np.asarray(written.dataobj), cached["label"])
    np.testing.assert_allclose(written.affine, cached["affine"])
    meta = json.loads((tmp_path / "out" / f"{item['study']}_vertebrae.json").read_text())
    z, y, x = np.nonzero(np.asarray(data["vertebrae"][0]) == 2)
    assert meta["boxes"]["2"] == [int(z.min()), int(y.min()), int(x.min()), int(z.max()) + 1, int(y.max()) + 1, int(x.max()) + 1]
    assert meta["shape_zyx"] == list(data["vertebrae"].shape[1:])
    with pytest.raises(FileExistsError):
        rsna.SaveVertebraMapd(output_dir=tmp_path / "out")(data)


def test_rows_and_overlay_writers(studies, tmp_path):
    from PIL import Image

    item = next(i for i in studies if "segmentation" in i)
    data = _slices_first(item, tmp_path)
    data.update(vertebrae=data["segmentation"], fracture=np.linspace(0.1, 0.8, 8, dtype=np.float32),
                vertebra_probabilities={2: 0.9, 5: 0.1})  # fmt: skip
    rsna.SaveFractureRowsd(output_dir=tmp_path)(data)
    assert (tmp_path / f"{item['study']}_fracture.csv").read_text().count("\n") == 9
    rsna.SaveSpineOverlayd(output_dir=tmp_path, scale=3)(data)
    picture = np.asarray(Image.open(tmp_path / f"{item['study']}_overlay.png"))
    depth, rows, cols = data["image"].shape[1:]
    assert picture.shape == (depth * 3 + 14, (rows + cols) * 3 + 4, 3)
    assert picture[14:].std() > 10  # image and tinted labels, not a blank canvas


def test_label_map_lies_on_the_bone_for_reversed_and_monochrome1_series(tmp_path):
    """Image and label map stay aligned through the preprocessing whatever the file order and photometry: the
    synthetic label map (stored with its rows flipped, as the RSNA maps) covers the bright bone, slice by slice,
    in a plain series, a reversed-file-order one and a reversed MONOCHROME1 one."""
    root = tmp_path / "rsna"
    generate(root, cases=3, seed=3, size=32, slices=32, test_cases=0, segmented_fraction=1.0,
             monochrome1_fraction=0.34, reversed_fraction=0.67)  # fmt: skip
    items, _ = load_rsna_cervical_datalist(root)
    first_files = [sorted((root / "train_images" / i["study"]).glob("*.dcm"), key=lambda p: int(p.stem))[0] for i in items]
    photometry = [b"MONOCHROME1" in path.read_bytes() for path in first_files]
    assert any(photometry) and not all(photometry)
    for item in items:
        out = _load(item, tmp_path / "cache", spatial_size=32)
        hu = np.asarray(out["image"]) * out["std"] + out["mean"]
        label = np.asarray(out["label"])
        bone = label > 0
        assert hu[bone].mean() > 300 > hu[~bone].mean(), item["study"]
        for k in np.flatnonzero(bone.any(axis=(0, 1))):  # per slice: a flip or slice shift would miss the bone
            assert hu[..., k][bone[..., k]].mean() > hu[..., k][~bone[..., k]].mean() + 200, (item["study"], k)
        # bone voxels the map misses are rare: the brightest voxels lie inside the map
        bright = hu > np.percentile(hu, 99.5)
        assert bone[bright].mean() > 0.8, item["study"]
