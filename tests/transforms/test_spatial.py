"""Spatial helpers: the elastic control grid equivalent to a scipy-style elastic field."""

from __future__ import annotations

from monai.data import MetaTensor
from monai.transforms import RandAffined, RandFlipd, RandGridDistortiond
import numpy as np
import pytest
import torch

from transforms.spatial import elastic_control_grid, InPlaned

def test_elastic_control_grid_matches_the_fields_rms_and_scales_with_the_resolution():
    spacing, magnitude = elastic_control_grid(alpha=10.0, sigma=6.0)
    assert spacing == 12 and magnitude == pytest.approx((0.2714, 0.2714), abs=1e-4)  # sub-pixel jitter at 512
    half_spacing, half_magnitude = elastic_control_grid(alpha=10.0, sigma=6.0, scale=0.5)
    assert half_spacing == 6 and half_magnitude[0] == pytest.approx(magnitude[0] / 2)
    assert elastic_control_grid(alpha=1.0, sigma=0.1, scale=0.25)[0] == 1  # never below one pixel


def _volume(slices=5):
    plane = torch.rand(1, 12, 10)
    return plane[..., None].repeat(1, 1, 1, slices)  # (1, X, Y, Z): every slice the same


def test_one_draw_for_all_slices():
    keys = ["image", "label"]
    transform = InPlaned(
        keys,
        [
            RandAffined(
                keys, prob=1.0, rotate_range=0.5, translate_range=(2, 2), scale_range=(0.1, 0.1),
                mode=["bilinear", "nearest"],
            ),
            RandGridDistortiond(keys, prob=1.0, num_cells=3, distort_limit=0.2, mode=["bilinear", "nearest"]),
        ],
    ).set_random_state(3)
    image = _volume()
    label = (image > 0.5).to(torch.uint8)
    out = transform({"image": image, "label": label})
    assert out["image"].shape == image.shape and out["label"].shape == label.shape
    assert not torch.allclose(out["image"], image)
    for k in range(1, image.shape[-1]):  # identical slices stay identical: the same parameters for each
        assert torch.equal(out["image"][..., k], out["image"][..., 0])
        assert torch.equal(out["label"][..., k], out["label"][..., 0])
    assert set(torch.unique(out["label"]).tolist()) <= {0, 1}


def test_flip_of_the_first_axis_flips_every_slice_and_keeps_metadata():
    volume = torch.rand(1, 6, 4, 3)
    image = MetaTensor(volume, affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])), meta={"filename_or_obj": "x"})
    out = InPlaned("image", [RandFlipd("image", prob=1.0, spatial_axis=0)])({"image": image})["image"]
    assert torch.equal(out.as_tensor(), volume.flip(1))
    assert out.meta["filename_or_obj"] == "x" and torch.equal(out.affine, image.affine)


def test_slice_axis_and_seeding():
    volume = torch.rand(2, 4, 5, 6)
    flipped = InPlaned("image", [RandFlipd("image", prob=1.0, spatial_axis=1)], slice_axis=0)({"image": volume})
    assert torch.equal(flipped["image"], volume.flip(3))  # plane (Y, Z): its second axis is Z
    runs = [InPlaned("image", [RandAffined("image", prob=1.0, rotate_range=1.0)]).set_random_state(7) for _ in range(2)]
    assert torch.equal(runs[0]({"image": volume})["image"], runs[1]({"image": volume})["image"])
    with pytest.raises(ValueError, match="slice_axis"):
        InPlaned("image", [], slice_axis=3)
    with pytest.raises(ValueError, match="one spatial shape"):
        InPlaned(["a", "b"], [])({"a": np.zeros((1, 2, 2, 2)), "b": np.zeros((1, 2, 2, 3))})
