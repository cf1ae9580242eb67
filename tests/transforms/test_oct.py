"""Reading OCT cube folders, their errors and the slice pipeline (synthetic and real B-scans)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, MapLabelValued, NormalizeIntensityd, RandFlipd, ScaleIntensityRanged
from PIL import Image

from networks.unet_plus_plus import UNetPlusPlus, split_seg_det_output
from formats.errors import CaseReadError
from formats.oct import LABEL_TO_CLASS, prediction_paths, read_grey_bscan, read_oct_cube, read_oct_prediction
from transforms.oct import LoadOCTCubed, SaveOCTPredictiond
from transforms.utility import StackNeighbourSlicesd


def write_cube(folder: Path, cube: np.ndarray, start: int = 1, ext: str = ".bmp") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n, img in enumerate(cube, start=start):
        Image.fromarray(img).save(folder / f"{n}{ext}")
    return folder


def ramp_cube(slices: int = 12, h: int = 8, w: int = 4) -> np.ndarray:
    """Slice s filled with the value 10 * s, so the slice order can be read off the values."""
    return np.repeat((10 * np.arange(slices, dtype=np.uint8))[:, None, None], h * w, axis=1).reshape(slices, h, w)


def label_cube(slices: int = 4, h: int = 8, w: int = 4) -> np.ndarray:
    lab = np.zeros((slices, h, w), dtype=np.uint8)
    lab[1, :2, :2] = 255
    lab[2, 4:, :] = 191
    lab[2, 0, 0] = 128
    return lab


def test_slices_are_read_in_numeric_order(tmp_path):
    cube = ramp_cube(12)
    folder = write_cube(tmp_path / "P0001_cube_z.img", cube)
    (folder / "Thumbs.db").write_bytes(b"not a slice")
    loaded = LoadOCTCubed("image")({"image": str(folder)})["image"]
    assert loaded.dtype == np.uint8 and loaded.shape == (12, 8, 4)
    np.testing.assert_array_equal(loaded, cube)  # 10.bmp after 9.bmp, not after 1.bmp


def test_labels_are_checked_and_mapped(tmp_path):
    image = write_cube(tmp_path / "c.img", ramp_cube(4))
    label = write_cube(tmp_path / "c_labelMark", label_cube())
    load = LoadOCTCubed(["image", "label"], label_keys="label", expected_slices=4)
    d = load({"case": "c", "image": str(image), "label": str(label)})
    mapped = MapLabelValued("label", list(LABEL_TO_CLASS), list(LABEL_TO_CLASS.values()), dtype=np.uint8)(d)["label"]
    assert mapped.dtype == np.uint8
    assert mapped[1, 0, 0] == 1 and mapped[2, 5, 0] == 2 and mapped[2, 0, 0] == 3 and mapped[0].max() == 0


def test_gap_in_numbering_names_cube_and_slice(tmp_path):
    folder = write_cube(tmp_path / "gap.img", ramp_cube(5))
    (folder / "3.bmp").unlink()
    with pytest.raises(CaseReadError, match=r"gap\.img.*missing slice 3\.bmp"):
        read_oct_cube(folder)


def test_fewer_slices_than_expected(tmp_path):
    folder = write_cube(tmp_path / "short.img", ramp_cube(5))
    with pytest.raises(CaseReadError, match=r"short\.img: 5 slices .*expected 128"):
        LoadOCTCubed("image", expected_slices=128)({"image": folder})


def test_numbering_must_start_at_one(tmp_path):
    folder = write_cube(tmp_path / "zero.img", ramp_cube(3), start=0)
    with pytest.raises(CaseReadError, match=r"zero\.img: slices are numbered from 1, found 0\.bmp"):
        read_oct_cube(folder)


def test_non_numeric_slice_name(tmp_path):
    folder = write_cube(tmp_path / "named.img", ramp_cube(2))
    shutil.copy(folder / "1.bmp", folder / "1 (copy).bmp")
    with pytest.raises(CaseReadError, match=r"named\.img: slice 1 \(copy\)\.bmp"):
        read_oct_cube(folder)


def test_mismatched_slice_size_names_the_slice(tmp_path):
    folder = write_cube(tmp_path / "size.img", ramp_cube(3))
    Image.fromarray(np.zeros((8, 6), np.uint8)).save(folder / "2.bmp")
    with pytest.raises(CaseReadError, match=r"size\.img: slice 2\.bmp is 8x6"):
        read_oct_cube(folder)


def test_unknown_label_grey_value_names_the_slice(tmp_path):
    lab = label_cube()
    lab[3, 0, 0] = 200
    folder = write_cube(tmp_path / "c_labelMark", lab)
    with pytest.raises(CaseReadError, match=r"c_labelMark: label slice 4\.bmp has grey values 200"):
        LoadOCTCubed("label", label_keys="label")({"label": folder})


def test_unreadable_slice_names_the_slice(tmp_path):
    folder = write_cube(tmp_path / "broken.img", ramp_cube(3))
    (folder / "2.bmp").write_bytes(b"BM garbage")
    with pytest.raises(CaseReadError, match=r"broken\.img: slice 2\.bmp cannot be read"):
        read_oct_cube(folder)


def test_sixteen_bit_slice_is_refused(tmp_path):
    folder = write_cube(tmp_path / "deep.img", ramp_cube(2), ext=".png")
    Image.fromarray(np.full((8, 4), 1000, np.uint16)).save(folder / "2.png")
    with pytest.raises(CaseReadError, match=r"deep\.img: slice 2\.png has image mode I;16"):
        read_oct_cube(folder)


def test_image_and_label_cubes_must_match(tmp_path):
    image = write_cube(tmp_path / "c.img", ramp_cube(5))
    label = write_cube(tmp_path / "c_labelMark", label_cube(4))
    with pytest.raises(CaseReadError, match="do not match"):
        LoadOCTCubed(["image", "label"], label_keys="label")({"image": image, "label": label})


def test_missing_folder(tmp_path):
    with pytest.raises(CaseReadError, match="not found"):
        read_oct_cube(tmp_path / "nothing.img")


def slice_pipeline(train: bool) -> Compose:
    """The recipe's per-slice chain: 2.5D stack, [0, 1] scaling, normalisation, horizontal flip."""
    transforms = [
        StackNeighbourSlicesd(["image", "label"], radius=[1, 0]),
        ScaleIntensityRanged("image", a_min=0, a_max=255, b_min=0.0, b_max=1.0),
        NormalizeIntensityd("image", subtrahend=0.1437, divisor=0.0979),
    ]
    if train:
        transforms.append(RandFlipd(["image", "label"], prob=1.0, spatial_axis=1))
    return Compose(transforms)


def test_slice_pipeline_normalises_and_flips_width():
    cube = np.zeros((3, 4, 6), np.uint8)
    cube[:, :, 0] = 255
    label = np.zeros_like(cube)
    label[1, :, 0] = 1
    d = slice_pipeline(train=False)({"image": cube, "label": label, "slice": 1})
    assert float(d["image"][0, 0, 0]) == pytest.approx((1 - 0.1437) / 0.0979, rel=1e-4)
    assert float(d["image"][0, 0, 1]) == pytest.approx(-0.1437 / 0.0979, rel=1e-4)
    flipped = slice_pipeline(train=True)({"image": cube, "label": label, "slice": 1})
    assert flipped["image"].shape == (3, 4, 6)
    torch.testing.assert_close(torch.as_tensor(flipped["image"]), torch.as_tensor(d["image"]).flip(-1))
    assert flipped["label"][0, :, -1].tolist() == [1, 1, 1, 1]


def real_cube(real_samples: Path, dest: Path, threshold_masks: bool) -> tuple[Path, Path]:
    """Four real Duke DME B-scans (496 x 768) as a challenge-named cube: 1.bmp..4.bmp and fluid masks."""
    src = real_samples / "retina_duke_dme_oct"
    names = ["img_1.png", "img_2.png", "img_5.png", "img_7.png"]
    image_dir, label_dir = dest / "DUKE_cube_z.img", dest / "DUKE_cube_z_labelMark"
    image_dir.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    for n, name in enumerate(names, start=1):
        Image.open(src / "image" / name).save(image_dir / f"{n}.bmp")
        mask = np.asarray(Image.open(src / "mask" / name).convert("L"))
        if threshold_masks:
            mask = np.where(mask > 0, 255, 0).astype(np.uint8)  # fluid -> the REA grey code
        Image.fromarray(mask).save(label_dir / f"{n}.bmp")
    return image_dir, label_dir


def test_real_bscans_through_loader_stacking_and_network(real_samples, tmp_path):
    image_dir, label_dir = real_cube(real_samples, tmp_path, threshold_masks=True)
    load = Compose(
        [
            LoadOCTCubed(["image", "label"], label_keys="label", expected_slices=4),
            MapLabelValued("label", list(LABEL_TO_CLASS), list(LABEL_TO_CLASS.values()), dtype=np.uint8),
        ]
    )
    cube = load({"case": "DUKE", "image": str(image_dir), "label": str(label_dir)})
    assert cube["image"].shape == (4, 496, 768) and set(np.unique(cube["label"])) == {0, 1}
    item = slice_pipeline(train=True)({**cube, "slice": 0})
    assert item["image"].shape == (3, 496, 768) and item["label"].shape == (1, 496, 768)
    net = UNetPlusPlus(features=(4, 8, 16, 32, 64)).eval()
    with torch.no_grad():
        out = net(torch.as_tensor(item["image"])[None].float())
    seg, det = split_seg_det_output(out)
    assert seg.shape == (1, 4, 496, 768) and det.shape == (1, 3) and torch.isfinite(out).all()


def test_real_masks_with_antialiased_values_are_rejected(real_samples, tmp_path):
    image_dir, label_dir = real_cube(real_samples, tmp_path, threshold_masks=False)
    with pytest.raises(CaseReadError, match=r"DUKE_cube_z_labelMark: label slice 1\.bmp has grey values 253"):
        LoadOCTCubed(["image", "label"], label_keys="label")({"image": image_dir, "label": label_dir})


def packed_probabilities(slices: int = 3, h: int = 4, w: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(7, S, H, W) probabilities whose argmax in slice s is class s % 4, with a distinct detection row per slice."""
    probs = np.full((7, slices, h, w), 0.1, np.float32)
    labels = np.zeros((slices, h, w), np.uint8)
    for s in range(slices):
        labels[s] = s % 4
        labels[s, 0, 0] = (s + 1) % 4  # a pixel that tells rows from columns and slices apart
    for c in range(4):
        probs[c][labels == c] = 0.7
    det = np.stack([np.linspace(0.1, 0.9, slices) + 0.01 * k for k in range(3)], axis=1).astype(np.float32)
    probs[4:] = det.T[:, :, None, None]
    return probs, labels, det


def test_prediction_is_written_as_nifti_and_csv_in_slice_order(tmp_path):
    probs, labels, det = packed_probabilities()
    SaveOCTPredictiond(tmp_path)({"case": "cube_a", "pred": torch.as_tensor(probs)})
    seg_path, det_path = prediction_paths(tmp_path, "cube_a")
    volume = np.asarray(nib.load(seg_path).dataobj)
    assert volume.dtype == np.uint8 and volume.shape == (5, 4, 3)  # (x = column, y = row, z = slice)
    for s in range(3):
        np.testing.assert_array_equal(volume[:, :, s].T, labels[s])
    assert det_path.read_text().splitlines()[:2] == ["slice,REA,SRF,PED", "1,0.100000,0.110000,0.120000"]
    read_labels, read_det = read_oct_prediction(tmp_path, "cube_a")
    np.testing.assert_array_equal(read_labels, labels)
    np.testing.assert_allclose(read_det, det, atol=1e-6)
    assert not list(tmp_path.glob(".*tmp*"))


def test_fusion_and_members_go_to_their_own_folders_and_nothing_is_overwritten(tmp_path):
    probs, labels, _ = packed_probabilities()
    other = probs.copy()
    other[:4] = other[[1, 0, 2, 3]]  # swaps background and REA
    save = SaveOCTPredictiond(tmp_path, variants=["fusion", "unet"])
    save({"case": "c", "pred": np.concatenate([probs, other])})
    np.testing.assert_array_equal(read_oct_prediction(tmp_path / "fusion", "c")[0], labels)
    swapped = read_oct_prediction(tmp_path / "unet", "c")[0]
    np.testing.assert_array_equal(swapped == 1, labels == 0)
    with pytest.raises(FileExistsError):
        save({"case": "c", "pred": np.concatenate([probs, other])})
    with pytest.raises(ValueError, match="cube c: expected 2 group"):
        SaveOCTPredictiond(tmp_path, variants=["fusion", "unet"], overwrite=True)({"case": "c", "pred": probs})


def test_missing_or_inconsistent_prediction_files_name_the_cube(tmp_path):
    with pytest.raises(CaseReadError, match="cube nope: prediction .*nope_seg.nii.gz not found"):
        read_oct_prediction(tmp_path, "nope")
    probs, _, _ = packed_probabilities()
    SaveOCTPredictiond(tmp_path)({"case": "c", "pred": probs})
    prediction_paths(tmp_path, "c")[1].write_text("slice,REA,SRF,PED\n1,0.5,0.5,0.5\n")
    with pytest.raises(CaseReadError, match="cube c: .* has 1 slice rows"):
        read_oct_prediction(tmp_path, "c")


def test_an_existing_detection_table_stops_the_whole_cube(tmp_path):
    probs, _, _ = packed_probabilities()
    save = SaveOCTPredictiond(tmp_path, variants=["fusion", "unet"])
    assert [p.relative_to(tmp_path).as_posix() for p in save.output_paths("c")] == [
        "fusion/c_seg.nii.gz", "fusion/c_det.csv", "unet/c_seg.nii.gz", "unet/c_det.csv"
    ]  # fmt: skip
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "c_det.csv").write_text("an older run")
    with pytest.raises(FileExistsError, match="c_det.csv"):
        save({"case": "c", "pred": np.concatenate([probs, probs])})
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.*")) == ["unet/c_det.csv"]


def test_a_cube_missing_its_last_slices_is_refused_unless_allowed(tmp_path, caplog):
    folder = write_cube(tmp_path / "cut.img", ramp_cube(5))
    expected = r"cut\.img: 5 slices \(1\.bmp\.\.5\.bmp\), expected 8 \(allow_fewer_slices"
    with pytest.raises(CaseReadError, match=expected):
        LoadOCTCubed("image", expected_slices=8)({"image": folder})
    with caplog.at_level("WARNING", logger="formats.oct"):
        cube = LoadOCTCubed("image", expected_slices=8, allow_fewer_slices=True)({"image": folder})["image"]
    assert cube.shape[0] == 5 and "cut.img: 5 slices" in caplog.text
    with pytest.raises(CaseReadError, match="expected 4"):
        LoadOCTCubed("image", expected_slices=4, allow_fewer_slices=True)({"image": folder})


def test_jpeg_bytes_named_bmp_and_colour_slices(tmp_path, caplog):
    folder = write_cube(tmp_path / "c.img", ramp_cube(2))
    rgb = np.stack([ramp_cube(2)[1]] * 3, -1)
    rgb[0, 0] = [255, 0, 0]
    Image.fromarray(rgb).save(folder / "2.bmp")
    with caplog.at_level("WARNING", logger="formats.oct"):
        assert read_oct_cube(folder).shape == (2, 8, 4)
    assert "1 colour slice(s) converted" in caplog.text
    with pytest.raises(CaseReadError, match=r"slice 2\.bmp is colour \(RGB channels differ at 1 pixels\)"):
        read_oct_cube(folder, colour_to_grey=False)
    Image.fromarray(ramp_cube(2)[0]).save(folder / "1.bmp", format="JPEG")
    with pytest.raises(CaseReadError, match=r"slice 1\.bmp holds a JPEG image, not a BMP"):
        read_oct_cube(folder)


def test_anti_aliased_label_slices_name_the_setting_and_map_on_request(tmp_path):
    label = label_cube()
    label[1, 0, 2] = 253
    folder = write_cube(tmp_path / "x_labelMark", label)
    expected = r"label slice 2\.bmp has grey values 253 that are no code.*nearest_label_code"
    with pytest.raises(CaseReadError, match=expected):
        LoadOCTCubed("label", label_keys="label")({"label": folder})
    mapped = LoadOCTCubed("label", label_keys="label", nearest_code=True)({"label": folder})["label"]
    assert mapped[1, 0, 2] == 255


def test_sixteen_bit_bscans_are_rescaled_by_their_range_not_clipped(tmp_path):
    scan = np.linspace(1000, 41000, 32, dtype=np.uint16).reshape(4, 8)
    Image.fromarray(scan).save(tmp_path / "deep.png")
    grey = read_grey_bscan(tmp_path / "deep.png")
    assert grey.dtype == np.uint8 and grey.min() == 0 and grey.max() == 255
    assert len(np.unique(grey)) == 32, "clipping at 255 would make most values equal"
