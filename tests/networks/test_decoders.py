"""N-D UNet decoder pieces, the segmentation model's encode/decode, and the decoders' layout checks."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from networks.decoders import LinkNetDecoder, UNetDecoder, UpsampleConv
from networks.encoders import build_encoder
from networks.segmentation import SegmentationModel


class StandInEncoder(nn.Module):
    """Follows the encoder contract with average pooling + 1x1 convs: maps of any channels and strides."""

    def __init__(self, in_channels: int, channels: Sequence[int], reductions: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.spatial_dims = len(reductions[0])
        self.out_channels = tuple(channels)
        self.reductions = tuple(tuple(r) for r in reductions)
        conv = nn.Conv3d if self.spatial_dims == 3 else nn.Conv2d
        self.convs = nn.ModuleList(conv(in_channels, c, kernel_size=1) for c in channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        pool = F.avg_pool3d if self.spatial_dims == 3 else F.avg_pool2d
        return [conv(pool(x, r, r, ceil_mode=True)) for conv, r in zip(self.convs, self.reductions)]

    def remap_pretrained_keys(self, state):
        return dict(state)


def test_rsna_spine_decoder_2plus1d_on_an_anisotropic_3d_encoder():
    # ir-CSN-50 layout (selimsef/rsna_cervical_fracture zoo/unet3d.py) with small widths: stem stride (1, 2, 2)
    reductions = ((1, 2, 2), (1, 4, 4), (2, 8, 8), (4, 16, 16), (8, 32, 32))
    encoder = StandInEncoder(1, (8, 16, 24, 32, 40), reductions)
    decoder = UNetDecoder(
        encoder.out_channels,
        encoder.reductions,
        decoder_channels=(16, 12, 8, 6),  # the RSNA 2022 solution's 256, 128, 64, 40
        spatial_dims=3,
        upsample="nearest",
        conv_before_concat=True,
        block="conv2plus1d",
        norm=None,
        act="relu",
        bias=True,
    )
    head = nn.Sequential(UpsampleConv(3, 6, 5, scale_factor=(1, 2, 2)), nn.Conv3d(5, 8, kernel_size=1))
    model = SegmentationModel(encoder, decoder, head).eval()
    assert [b.scale for b in decoder.blocks] == [[2.0, 2.0, 2.0]] * 3 + [[1.0, 2.0, 2.0]]
    convs = [m for m in decoder.modules() if isinstance(m, nn.Conv3d)]
    assert {tuple(c.kernel_size) for c in convs} == {(1, 3, 3), (3, 1, 1)}
    assert not any(isinstance(m, nn.BatchNorm3d) for m in model.modules())
    first = decoder.blocks[0]
    assert (first.up_conv[0].conv.in_channels, first.convs[0].conv.in_channels) == (40, 16 + 32)
    assert isinstance(head[0].conv.conv, nn.Conv3d) and head[0].conv.conv.kernel_size == (3, 3, 3)
    with torch.no_grad():
        out = model(torch.rand(1, 1, 16, 64, 64))
    assert out.shape == (1, 8, 16, 64, 64)


def test_fugc_decoder_projection_align_corners_and_full_resolution_last_stage():
    # PVT-v2-b1 skips (apuomline/FUGC2025_7th_solution): patch embed and stage 0 both at H/4, small widths
    encoder = StandInEncoder(3, (8, 8, 16, 24, 32), ((4, 4), (4, 4), (8, 8), (16, 16), (32, 32)))
    decoder = UNetDecoder(
        encoder.out_channels,
        encoder.reductions,
        decoder_channels=(24, 16, 8, 8),  # each stage to its skip's width
        output_reduction=(1, 1),
        upsample="bilinear",
        align_corners=True,
        project_to_skip=True,
        act="leakyrelu",
    )
    model = SegmentationModel(encoder, decoder, nn.Conv2d(8, 3, kernel_size=3, padding=1)).eval()
    last = decoder.blocks[-1]
    assert (last.scale, last.skip_scale) == ([4.0, 4.0], [4.0, 4.0])  # both inputs upsampled to full size
    assert last.project.conv.kernel_size == (1, 1) and last.project.conv.out_channels == 8
    assert isinstance(last.convs.conv_0.adn.A, nn.LeakyReLU)
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 96)).shape == (2, 3, 64, 96)
        assert model(torch.rand(1, 3, 68, 100)).shape == (1, 3, 68, 100)  # sizes not divisible by 32


def test_encode_decode_lets_a_method_perturb_the_features():
    encoder = build_encoder("resnet", variant="resnet18", widen_factor=0.125)
    decoder = UNetDecoder(encoder.out_channels, encoder.reductions, (32, 16, 8, 8))
    model = SegmentationModel(encoder, decoder, nn.Conv2d(8, 2, 1)).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        features = model.encode(x)
        torch.testing.assert_close(model.decode(features), model(x))
        perturbed = model.decode([F.dropout2d(f, 0.5, training=True) for f in features])
    assert perturbed.shape == (2, 2, 32, 32) and not torch.allclose(perturbed, model(x))
    assert decoder.output_reduction == (2, 2)


def test_layout_mismatches_raise_with_expected_and_received_values():
    encoder = build_encoder("convnext", variant="atto", depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))
    other = UNetDecoder((8, 16, 32, 48), encoder.reductions, (32, 16, 8))
    with pytest.raises(ValueError, match=r"channels \(8, 16, 32, 48\).*gives channels \(8, 16, 32, 64\)"):
        SegmentationModel(encoder, other)
    with pytest.raises(ValueError, match="expected 3 decoder_channels"):
        UNetDecoder(encoder.out_channels, encoder.reductions, (32, 16))
    with pytest.raises(ValueError, match=r"stride \(6, 6\) is not an integer multiple of stride \(4, 4\)"):
        UNetDecoder((8, 16), ((4, 4), (6, 6)), (8,))
    with pytest.raises(ValueError, match="expected reductions with 3 axes"):
        UNetDecoder(encoder.out_channels, encoder.reductions, (32, 16, 8), spatial_dims=3)
    with pytest.raises(ValueError, match="3-D only"):
        UNetDecoder(encoder.out_channels, encoder.reductions, (32, 16, 8), block="conv2plus1d")
    with pytest.raises(ValueError, match="'trilinear' does not apply to spatial_dims=2"):
        UNetDecoder(encoder.out_channels, encoder.reductions, (32, 16, 8), upsample="trilinear")
    with pytest.raises(ValueError, match=r"LinkNetDecoder needs encoder maps at strides \(\(2, 2\)"):
        LinkNetDecoder(encoder.out_channels, encoder.reductions)
    decoder = UNetDecoder(encoder.out_channels, encoder.reductions, (32, 16, 8))
    features = encoder(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="expects 4 encoder maps, got 3"):
        decoder(features[1:])


@pytest.mark.parametrize("family, kwargs", [
    ("convnext", {"variant": "atto", "depths": (1, 1, 1, 1), "dims": (8, 16, 32, 64)}),
    ("efficientnet", {"variant": "b0"}),
    ("resnet", {"variant": "resnet18", "widen_factor": 0.125}),
    ("resnet", {"variant": "resnet18", "widen_factor": 0.125, "spatial_dims": 3}),
    ("unet", {"features": (4, 8, 16)}),
    ("unet", {"features": (4, 8), "spatial_dims": 3}),
    ("csn", {"variant": "ir_csn_50", "base_channels": 4, "stage_blocks": (1, 1, 1, 1)}),
    ("csn", {"variant": "ip_csn_152", "base_channels": 4, "stage_blocks": (1, 1, 1, 1)}),
    ("pvt_v2", {"variant": "b0", "depths": (1, 1, 1, 1), "dims": (8, 16, 40, 64)}),
    ("resnet_d", {"variant": "resnet34d", "layers": (1, 1, 1, 1), "widths": (8, 16, 32, 64), "stem_width": 4}),
])
def test_registered_encoders_return_maps_at_their_reductions(family, kwargs):
    encoder = build_encoder(family, in_channels=1, **kwargs).eval()
    size = (32, 64, 32)[: encoder.spatial_dims]
    with torch.no_grad():
        features = encoder(torch.rand(1, 1, *size))
    assert [tuple(f.shape[1:]) for f in features] == [
        (c, *(s // r for s, r in zip(size, red))) for c, red in zip(encoder.out_channels, encoder.reductions)
    ]


def test_unknown_encoder_names_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown encoder 'vgg'.*'convnext', 'csn', 'efficientnet', 'pvt_v2', 'resnet', 'resnet_d', 'unet'"):
        build_encoder("vgg")
