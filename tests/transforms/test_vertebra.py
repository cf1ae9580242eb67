"""Per-vertebra crops, windows, both visibility rules and the target recomputation: hand-made volumes and the
real TPTBox lumbar CT with its vertebra labels."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import ConcatItemsd

from transforms.vertebra import (
    ClassifyVertebraed,
    RandChooseVertebrad,
    VertebraCropd,
    ZeroHiddenTargetsd,
    label_box,
    slice_windows,
    vertebra_summary,
)


def _study(z_range=(5, 10), y_range=(2, 5), x_range=(3, 7), depth=20, side=8, value=1):
    """Label map (1, depth, side, side) with one box, image (1, depth, 2 side, 2 side) whose slice z holds z."""
    label = torch.zeros(1, depth, side, side)
    label[0, slice(*z_range), slice(*y_range), slice(*x_range)] = value
    image = torch.arange(depth, dtype=torch.float32)[None, :, None, None].expand(1, depth, 2 * side, 2 * side)
    return {"image": image.clone(), "label": label, "vertebra": value, "case": "hand"}


def test_label_box_and_slice_windows_by_hand():
    label = np.zeros((6, 5, 5))
    label[1:3, 2, 1:4] = 4
    assert label_box(label, 4) == (1, 2, 1, 3, 3, 4)
    assert label_box(label, 5) is None
    assert slice_windows(5, 10, 8) == [(4, 12)]  # centred: (8 - 5) // 2 = 1 slice before
    assert slice_windows(1, 6, 8) == [(0, 8)]  # centred start clipped at 0
    assert slice_windows(2, 14, 8) == [(2, 10), (6, 14)]  # longer: first and last 8
    assert slice_windows(2, 10, 8) == [(2, 10)]
    rng = np.random.RandomState(0)
    starts = {slice_windows(5, 10, 8, rng)[0][0] for _ in range(200)}
    assert starts == {2, 3, 4, 5}  # random start in [max(10 - 8, 0), 5]
    long_starts = {slice_windows(2, 14, 8, rng)[0][0] for _ in range(200)}
    assert long_starts == set(range(2, 7))


def test_crop_geometry_by_hand():
    # box y 2..5, x 3..7 at label resolution; margin 1 -> y 1..6, x 2..8 (clipped); image x2 -> 10 x 12 px,
    # longest side to 16 -> 13 x 16, padded to 16 x 16 with 1 row above and 2 below; window [4, 12)
    out = VertebraCropd(num_slices=8, margin=1, spatial_size=16, smooth=0)(_study())
    assert len(out) == 1
    image, label = out[0]["image"], out[0]["label"]
    assert image.shape == label.shape == (1, 8, 16, 16) and image.dtype == torch.float32
    for k in range(8):
        torch.testing.assert_close(image[0, k, 1:14], torch.full((13, 16), 4.0 + k))
    assert image[0, :, 0].abs().sum() == 0 and image[0, :, 14:].abs().sum() == 0
    # the vertebra is inside slices 1..5 of the window (z 5..9) and nowhere else
    assert label[0, 1:6].amax() == 1 and label[0, [0, 6, 7]].amax() == 0
    assert out[0]["visible_fraction"][0] == pytest.approx(1.0)
    assert out[0]["case"] == "hand" and out[0]["vertebra"] == 1


def test_window_beyond_the_volume_is_padded_with_zero_slices():
    out = VertebraCropd(num_slices=8, margin=0, spatial_size=16)(_study(z_range=(17, 20)))
    image = out[0]["image"][0]
    # centred start 17 - (8 - 3) // 2 = 15: slices 15..19, then 3 empty ones
    assert [float(image[k].max()) for k in range(8)] == [15, 16, 17, 18, 19, 0, 0, 0]


def test_long_vertebra_gives_first_and_last_windows_in_validation_and_one_in_training():
    study = _study(z_range=(2, 14))
    val = VertebraCropd(num_slices=8, margin=0, spatial_size=16)(study)
    assert [float(c["image"][0, 0].max()) for c in val] == [2.0, 6.0]
    train = VertebraCropd(num_slices=8, margin=0, spatial_size=16, random_window=True)
    train.set_random_state(0)
    starts = {float(train(study)[0]["image"][0, 0].max()) for _ in range(40)}
    assert starts <= set(map(float, range(2, 7))) and len(starts) > 1


def test_visibility_same_resolution_and_seed_rule_by_hand():
    # vertebra 1 at z 8..10; vertebra 2 fills the rest of the in-plane square 2..6 over all 20 slices
    study = _study(z_range=(8, 11), y_range=(2, 6), x_range=(2, 6))
    study["label"][0, :, 2:6, 2:6] = torch.where(study["label"][0, :, 2:6, 2:6] == 1, 1.0, 2.0)
    kwargs = dict(num_slices=8, margin=8, spatial_size=32, labels=(1, 2), smooth=0)
    # centred window [6, 14): vertebra 2 is visible there only
    total_2 = int((study["label"] == 2).sum())
    visible_2 = int((study["label"][0, 6:14] == 2).sum())
    same = VertebraCropd(**kwargs)(study)[0]["visible_fraction"]
    np.testing.assert_allclose(same, [1.0, visible_2 / total_2], rtol=1e-6)
    # seed rule: counted after x2 nearest upsampling (8 -> 16 px) and the resize to 32 px: 4 x 4 = 16 pixels
    # per label voxel, against totals at label resolution
    seed = VertebraCropd(visibility="seed", **kwargs)(study)[0]["visible_fraction"]
    np.testing.assert_allclose(seed, 16 * same, rtol=1e-6)
    with pytest.raises(ValueError, match="visibility"):
        VertebraCropd(visibility="other")


def test_zero_hidden_targets_and_overall():
    zero = ZeroHiddenTargetsd(keys="target", threshold=0.3, target_indices=(1, 2, 3))
    out = zero({"target": torch.tensor([1.0, 1.0, 0.0, 1.0]), "visible_fraction": np.array([0.29, 0.9, 0.3])})
    assert out["target"].tolist() == [1.0, 0.0, 0.0, 1.0]
    out = zero({"target": torch.tensor([1.0, 1.0, 0.0, 0.0]), "visible_fraction": np.array([0.1, 0.9, 0.9])})
    assert out["target"].tolist() == [0.0, 0.0, 0.0, 0.0]  # the only fracture is hidden: overall negative
    with pytest.raises(ValueError, match="visible_fraction"):
        zero({"target": torch.zeros(4), "visible_fraction": np.zeros(2)})


def test_choose_vertebra_eligibility_and_fractured_probability():
    label = torch.zeros(1, 10, 10, 10)
    label[0, :5] = 1    # 500 voxels: not eligible (needs > 512 with the default)
    label[0, 5:] = 2    # 500
    label[0, 5:, :, 0] = 3
    label_big = torch.zeros(1, 30, 10, 10)
    label_big[0, :10], label_big[0, 10:20], label_big[0, 20:] = 1, 2, 3  # 1000 voxels each
    target = torch.tensor([1.0, 0.0, 1.0, 0.0, 0, 0, 0, 0])  # C2 fractured
    choose = RandChooseVertebrad(keys="label", fractured_prob=0.7)
    choose.set_random_state(0)
    picks = np.array([choose({"label": label_big, "target": target})["vertebra"] for _ in range(2000)])
    assert set(picks) == {1, 2, 3} and abs((picks == 2).mean() - 0.7) < 0.04
    always = RandChooseVertebrad(keys="label", fractured_prob=0.0)
    all_fractured = torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0])
    assert always({"label": label_big, "target": all_fractured})["vertebra"] in (1, 2, 3)
    with pytest.raises(ValueError, match="case s1: no vertebra"):
        choose({"label": label, "target": target, "case": "s1"})


def _tptbox(real_samples):
    """The real CT and vertebra map (P-I-R) as (1, Z, Y, X) with Z = inferior axis, cropped to 72 x 72 in plane."""
    folder = real_samples / "spine_ct_tptbox"
    ct = np.asarray(nib.load(folder / "sub-ct_label-22_ct.nii.gz").dataobj).astype(np.float32)
    seg = np.asarray(nib.load(folder / "sub-ct_seg-vert_label-22_msk.nii.gz").dataobj).astype(np.float32)
    ct, seg = (np.transpose(a, (1, 0, 2))[None, :, :72, :72] for a in (ct, seg))
    return torch.from_numpy(ct.copy()), torch.from_numpy(seg.copy())


def test_real_lumbar_ct_crop_and_visibility(real_samples):
    ct, seg = _tptbox(real_samples)
    coarse = seg[:, :, ::2, ::2]  # the label map on a grid twice as coarse, as the reference's 256 vs 512 px
    study = {"image": (ct + 1000) / 1000, "label": coarse, "vertebra": 22}
    crop = VertebraCropd(num_slices=40, margin=4, spatial_size=64, labels=(21, 22, 23), smooth=0)
    (item,) = crop(study)
    assert item["image"].shape == item["label"].shape == (1, 40, 64, 64)
    assert set(item["label"].unique().tolist()) <= {0.0, 21.0, 22.0, 23.0} and (item["label"] == 22).any()
    # on the coarse map L3 spans slices 6..40 (35 < 40): centred window [4, 44); each level's visible fraction
    lab = coarse[0].numpy()
    z1, y1, x1, z2, y2, x2 = label_box(lab, 22)
    assert (z1, z2) == (6, 41)
    box = lab[4:44, max(y1 - 4, 0):y2 + 4, max(x1 - 4, 0):x2 + 4]
    expected = [(box == v).sum() / (lab == v).sum() for v in (21, 22, 23)]
    np.testing.assert_allclose(item["visible_fraction"], expected, rtol=1e-6)
    assert expected[1] == 1.0 and 0.3 < expected[0] < 1.0 and 0.3 < expected[2] < 1.0
    # the image channel holds bone where the vertebra is (CT above ~200 HU inside L3's mask on average)
    assert item["image"][item["label"] == 22].mean() > 1.2
    # the 3-channel classifier input
    stacked = ConcatItemsd(keys=["image", "image", "label"], name="image")(item)["image"]
    assert stacked.shape == (3, 40, 64, 64)


def test_real_lumbar_ct_seed_rule_inflates_visibility_and_keeps_hidden_neighbours(real_samples):
    ct, seg = _tptbox(real_samples)
    study = {"image": ct, "label": seg[:, :, ::2, ::2], "vertebra": 22,
             "target": torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])}  # [overall, L2, L3, L4, another level]
    kwargs = dict(num_slices=8, margin=4, spatial_size=64, labels=(21, 22, 23))
    zero = ZeroHiddenTargetsd(keys="target", target_indices=(1, 2, 3), threshold=0.3)
    # validation windows of the long L3 (slices 6..40): [6, 14) and [33, 41); L4 (from slice 26) is not in the first
    same = VertebraCropd(**kwargs)(study)
    seed = VertebraCropd(visibility="seed", **kwargs)(study)
    assert len(same) == len(seed) == 2
    first_same, first_seed = same[0]["visible_fraction"], seed[0]["visible_fraction"]
    assert first_same[2] == 0.0 and np.all(first_same < 0.3)
    # seed: counted at about (2 x 64 / 72) ** 2 px per label voxel, over the whole L3 range: all "visible"
    assert np.all(first_seed[:2] > 2.5 * first_same[:2]) and np.all(first_seed > 0.3)
    assert zero(same[0])["target"].tolist() == [0.0, 0.0, 0.0, 0.0, 0.0]  # nothing fractured is in view
    assert zero(seed[0])["target"].tolist() == [1.0, 1.0, 1.0, 1.0, 0.0]  # the reference rule keeps every target


def test_vertebra_summary_counts_and_boxes_by_hand():
    label = np.zeros((4, 5, 6), dtype=np.uint8)
    label[1:3, 2:4, 1:5] = 2
    label[0, 0, 0] = 7
    summary = vertebra_summary(label)
    assert summary == {"voxels": {"2": 16, "7": 1}, "boxes": {"2": [1, 2, 1, 3, 4, 5], "7": [0, 0, 0, 1, 1, 1]}}


def _spine_study(vertebrae: dict[int, tuple[slice, slice, slice]]) -> dict:
    label = torch.zeros(1, 20, 16, 16)
    for value, box in vertebrae.items():
        label[(0, *box)] = value
    return {"study": "s", "image_full": torch.randn(1, 20, 32, 32), "vertebrae": label}


class _ByVertebra:
    """A 'classifier' that reads the crop's label channel: probability 0.1 * (largest label value) everywhere."""

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        assert batch.shape[1:] == (3, 8, 16, 16)
        return (0.1 * batch[:, 2].flatten(1).amax(1))[:, None].repeat(1, 8)


def _classify(**kwargs) -> ClassifyVertebraed:
    crop = VertebraCropd(image_key="image_full", label_key="vertebrae", num_slices=8, margin=1, spatial_size=16)
    return ClassifyVertebraed(_ByVertebra(), crop, prior=[0.05] * 8, **kwargs)


def test_classify_takes_the_maximum_over_the_crops_of_each_found_vertebra():
    data = _spine_study({2: (slice(2, 6), slice(4, 8), slice(4, 8)), 5: (slice(10, 13), slice(4, 8), slice(4, 8))})
    out = _classify(clip=(0.01, 0.99))(data)
    np.testing.assert_allclose(out["fracture"], [0.5] * 8, atol=1e-6)
    assert out["vertebra_probabilities"] == pytest.approx({2: 0.2, 5: 0.5})
    assert out["warnings"] == []


def test_classify_gives_the_prior_and_a_warning_when_no_vertebra_is_found(caplog):
    data = _spine_study({3: (slice(2, 3), slice(4, 5), slice(4, 5))})  # one voxel: below min_voxels
    out = _classify(min_voxels=5)(data)
    np.testing.assert_allclose(out["fracture"], [0.05] * 8)
    assert out["vertebra_probabilities"] == {} and "no cervical vertebra" in out["warnings"][0]
    assert "no cervical vertebra" in caplog.text


def test_classify_needs_a_validation_crop_and_a_full_prior():
    crop = VertebraCropd(image_key="image_full", label_key="vertebrae", random_window=True)
    with pytest.raises(ValueError, match="validation-mode"):
        ClassifyVertebraed(_ByVertebra(), crop, prior=[0.1] * 8)
    with pytest.raises(ValueError, match="prior"):
        _ = ClassifyVertebraed(_ByVertebra(), VertebraCropd(), prior=[0.1] * 7)
