"""UNet / UNet++ / dilated UNet++ of the retinal edema recipe: sizes, output packing, export."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SliceInferer

from networks.unet_plus_plus import DilatedBottleneck, UNet, UNetPlusPlus, seg_det_probabilities, split_seg_det_output

TINY = (4, 8, 16, 32, 64)


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(
    "factory, expected, readme",
    [
        (lambda: UNet(), 2_466_151, 2.47e6),
        (lambda: UNetPlusPlus(), 2_953_027, 2.95e6),
        (lambda: UNetPlusPlus(dilated=True), 5_315_395, 5.32e6),
    ],
)
def test_parameter_counts_match_reference(factory, expected, readme):
    count = n_params(factory())
    assert count == expected
    assert abs(count - readme) / readme < 0.03


def test_detection_head_is_the_only_difference_without_it():
    assert n_params(UNet()) - n_params(UNet(num_det_classes=0)) == 256 * 3 + 3


@pytest.mark.parametrize("net_cls, kwargs", [(UNet, {}), (UNetPlusPlus, {}), (UNetPlusPlus, {"dilated": True})])
def test_packed_output_and_split(net_cls, kwargs):
    net = net_cls(features=TINY, **kwargs).eval()
    out = net(torch.randn(2, 3, 32, 48))
    assert out.shape == (2, 7, 32, 48)
    seg, det = split_seg_det_output(out, num_classes=4)
    assert seg.shape == (2, 4, 32, 48) and det.shape == (2, 3)
    # the detection logits are constant over the image
    assert torch.equal(out[:, 4:], det[:, :, None, None].expand(2, 3, 32, 48))


def test_without_detection_head_returns_segmentation_only():
    for net in (UNet(features=TINY, num_det_classes=0), UNetPlusPlus(features=TINY, num_det_classes=0)):
        assert net.eval()(torch.randn(1, 3, 16, 16)).shape == (1, 4, 16, 16)


def test_deep_supervision_off_builds_one_head():
    net = UNetPlusPlus(features=TINY, deep_supervision=False).eval()
    assert len(net.heads) == 1
    assert net(torch.randn(1, 3, 16, 32)).shape == (1, 7, 16, 32)


def test_deep_supervision_averages_the_four_heads():
    net = UNetPlusPlus(features=TINY, num_det_classes=0).eval()
    nodes = {}
    for name in ("up01", "up02", "up03", "up04"):
        getattr(net, name).register_forward_hook(lambda m, i, o, name=name: nodes.__setitem__(name, o))
    out = net(torch.randn(1, 3, 16, 16))
    heads = [net.heads[k](nodes[n]) for k, n in enumerate(("up01", "up02", "up03", "up04"))]
    torch.testing.assert_close(out, sum(heads) / 4)


def test_dilated_bottleneck_sums_input_and_cascade():
    block = DilatedBottleneck(8).eval()
    x = torch.randn(1, 8, 16, 16)
    x1 = block.convs[0](x)
    x2 = block.convs[1](x1)
    x3 = block.convs[2](x2)
    x4 = block.convs[3](x3)
    torch.testing.assert_close(block(x), x + x1 + x2 + x3 + x4)
    assert [c.conv.dilation for c in block.convs] == [(1, 1), (2, 2), (4, 4), (8, 8)]


def test_encoder_has_batchnorm_and_decoder_has_none():
    net = UNetPlusPlus(features=TINY)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.encoder.blocks[0].modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.up04.modules())
    up = net.up04.up.deconv
    assert isinstance(up, torch.nn.ConvTranspose2d)
    assert (up.kernel_size, up.stride, up.padding) == ((4, 4), (2, 2), (1, 1))


@pytest.mark.parametrize("net_cls, kwargs", [(UNet, {}), (UNetPlusPlus, {"dilated": True})])
def test_torchscript_script_and_trace_match_eager(net_cls, kwargs):
    net = net_cls(features=TINY, **kwargs).eval()
    x = torch.randn(1, 3, 32, 32)
    expected = net(x)
    torch.testing.assert_close(torch.jit.script(net)(x), expected)
    torch.testing.assert_close(torch.jit.trace(net, x)(x), expected)


def test_gradients_reach_segmentation_and_detection():
    net = UNetPlusPlus(features=TINY)
    net(torch.randn(2, 3, 16, 16)).sum().backward()
    assert net.det.conv.weight.grad is not None and net.heads[0].weight.grad is not None


def test_slice_inferer_over_a_stacked_cube():
    net = UNet(features=TINY).eval()
    cube = torch.randn(1, 3, 5, 16, 32)  # (B, neighbour channels, slices, H, W)
    with torch.no_grad():
        out = SliceInferer(roi_size=(16, 32), sw_batch_size=2, spatial_dim=0)(cube, net)
        seg, det = split_seg_det_output(out, num_classes=4)
        direct = net(cube[0].permute(1, 0, 2, 3))
    assert out.shape == (1, 7, 5, 16, 32) and seg.shape == (1, 4, 5, 16, 32) and det.shape == (1, 3, 5)
    torch.testing.assert_close(det[0].T, split_seg_det_output(direct)[1], rtol=1e-4, atol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="five"):
        UNet(features=(4, 8, 16))
    with pytest.raises(ValueError, match="output"):
        split_seg_det_output(torch.zeros(2, 3, 4, 4), num_classes=4)


def test_probabilities_of_the_packed_output():
    out = torch.randn(2, 7, 3, 4, 5)  # a cube from SliceInferer
    probs = seg_det_probabilities(out)
    assert probs.shape == out.shape
    torch.testing.assert_close(probs[:, :4].sum(1), torch.ones(2, 3, 4, 5))
    torch.testing.assert_close(probs[:, 4:], torch.sigmoid(out[:, 4:]))
    torch.testing.assert_close(probs[:, :4], torch.softmax(out[:, :4], 1))
    with pytest.raises(ValueError, match="network output"):
        seg_det_probabilities(torch.zeros(2, 3, 4, 4))
