"""Flip TTA: the 4 distinct flips equal ttach's 8 variants (flips x rot 0/180), generic in dims and inferers."""

from __future__ import annotations

import itertools

import pytest
import torch
from monai.inferers import SlidingWindowInferer

from inferers import FlipTTAInferer


def asymmetric_net(spatial_dims: int) -> torch.nn.Module:
    conv = torch.nn.Conv2d if spatial_dims == 2 else torch.nn.Conv3d
    torch.manual_seed(1)
    return torch.nn.Sequential(conv(1, 3, 3, padding=1), torch.nn.Tanh(), conv(3, 2, 5, padding=2)).eval()


def ttach_eight_variants(x: torch.Tensor, net: torch.nn.Module) -> torch.Tensor:
    """ttach Compose[VerticalFlip, HorizontalFlip, Rotate90([0, 180])], merge "mean", written out literally."""
    outputs = []
    for vflip, hflip, angle in itertools.product((False, True), (False, True), (0, 180)):
        y = x
        y = torch.flip(y, [2]) if vflip else y
        y = torch.flip(y, [3]) if hflip else y
        y = torch.rot90(y, k=angle // 90, dims=(2, 3))
        y = net(y)
        y = torch.rot90(y, k=-angle // 90, dims=(2, 3))  # de-augment in reverse order
        y = torch.flip(y, [3]) if hflip else y
        y = torch.flip(y, [2]) if vflip else y
        outputs.append(y)
    return torch.stack(outputs).mean(0)


def test_four_distinct_flips_equal_the_seeds_eight_variants():
    net, x = asymmetric_net(2), torch.rand(2, 1, 12, 20)
    inferer = FlipTTAInferer()
    assert inferer.variants(2) == [(), (0,), (1,), (0, 1)]
    with torch.no_grad():
        torch.testing.assert_close(inferer(x, net), ttach_eight_variants(x, net))
        # listing the 8 variants explicitly (each distinct flip twice) gives the same
        eight = FlipTTAInferer(flips=[(), (0, 1), (0,), (1,), (1,), (0,), (0, 1), ()])
        torch.testing.assert_close(eight(x, net), ttach_eight_variants(x, net))
        assert not torch.allclose(inferer(x, net), net(x))  # the network is not flip-invariant
        torch.testing.assert_close(FlipTTAInferer(batch_variants=True)(x, net), ttach_eight_variants(x, net))


def test_3d_mirroring_and_axis_choice():
    net, x = asymmetric_net(3), torch.rand(1, 1, 6, 8, 10)
    with torch.no_grad():
        dims = [[a + 2 for a in variant] for variant in FlipTTAInferer().variants(3)]
        expected = torch.stack([torch.flip(net(torch.flip(x, d)), d) for d in dims]).mean(0)
        torch.testing.assert_close(FlipTTAInferer()(x, net), expected)
        assert len(FlipTTAInferer().variants(3)) == 8
        assert FlipTTAInferer(axes=(2,)).variants(3) == [(), (2,)]
        torch.testing.assert_close(FlipTTAInferer(flips=[()])(x, net), net(x))


def test_wraps_a_sliding_window_inferer_and_merges_by_max():
    net, x = asymmetric_net(2), torch.rand(1, 1, 24, 24)
    sliding = SlidingWindowInferer(roi_size=(16, 16), overlap=0.5)
    with torch.no_grad():
        merged = FlipTTAInferer(sliding)(x, net)
        maximum = FlipTTAInferer(merge="max")(x, net)
        flipped = [torch.flip(net(torch.flip(x, d)), d) for d in ([], [2], [3], [2, 3])]
    assert merged.shape == (1, 2, 24, 24)
    torch.testing.assert_close(maximum, torch.stack(flipped).amax(0))


def test_bad_settings_and_outputs_are_refused():
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="out of range"):
        FlipTTAInferer(flips=[(2,)])(x, asymmetric_net(2))
    with pytest.raises(ValueError, match="merge"):
        FlipTTAInferer(merge="median")
    with pytest.raises(ValueError, match="dense outputs"):
        FlipTTAInferer()(x, torch.nn.AdaptiveAvgPool2d(1))
