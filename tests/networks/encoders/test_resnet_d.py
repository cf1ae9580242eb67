"""ResNet-D encoder: timm parameter counts and key names, FUGC feature taps, loading timm-named checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from networks.encoders import build_encoder, check_encoder, load_encoder_weights
from networks.encoders.pvt_v2 import PVTv2Encoder
from networks.encoders.resnet_d import RESNET_D_VARIANTS, ResNetDEncoder, resnet_d_encoder

TINY = {"layers": (1, 2, 1, 1), "widths": (8, 16, 24, 32), "stem_width": 4}
ODD_SIZE = (67, 85)


def _timm_checkpoint(path: Path, source: ResNetDEncoder, wrapper: str | None = "state_dict") -> Path:
    """Write ``source``'s weights under timm's key names plus the classifier ``fc``, as timm saves ``resnet*d``."""
    state = dict(source.state_dict())
    state.update({"fc.weight": torch.randn(1000, source.out_channels[-1]), "fc.bias": torch.zeros(1000)})
    torch.save({wrapper: state} if wrapper else state, path)
    return path


def _randomise_batch_norms(encoder: ResNetDEncoder) -> ResNetDEncoder:
    """Non-trivial BN statistics and affine weights, so that a wrong or skipped layer changes the features."""
    for module in encoder.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
    return encoder


def test_resnet34d_parameter_count_matches_timm() -> None:
    encoder = resnet_d_encoder("resnet34d")
    assert sum(p.numel() for p in encoder.parameters()) == 21_303_904  # timm resnet34d 21,816,904 minus fc
    assert encoder.out_channels == (64, 64, 128, 256, 512)
    assert encoder.reductions == ((2, 2), (2, 2), (4, 4), (8, 8), (16, 16))  # max-pool skipped as in the FUGC 2025 7th-place solution


@pytest.mark.parametrize(
    ("variant", "timm_total", "fc"), [("resnet18d", 11_708_744, 513_000), ("resnet50d", 25_576_264, 2_049_000)]
)
def test_other_variants_match_timm(variant: str, timm_total: int, fc: int) -> None:
    encoder = resnet_d_encoder(variant)
    assert sum(p.numel() for p in encoder.parameters()) == pytest.approx(timm_total - fc, rel=0.01)


@pytest.mark.parametrize("stem_pool", [False, True])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_fugc_taps_on_an_odd_sized_input(stem_pool: bool, in_channels: int) -> None:
    encoder = ResNetDEncoder(in_channels=in_channels, stem_pool=stem_pool, **TINY).eval()
    with torch.no_grad():
        features = encoder(torch.rand(2, in_channels, *ODD_SIZE))
    assert [f.shape[1] for f in features] == list(encoder.out_channels) == [8, 8, 16, 24, 32]
    expected = (2, 4, 8, 16, 32) if stem_pool else (2, 2, 4, 8, 16)
    assert [r[0] for r in encoder.reductions] == list(expected)
    for feature, reduction in zip(features, encoder.reductions):  # every stride rounds up
        assert tuple(feature.shape[2:]) == tuple(math.ceil(s / r) for s, r in zip(ODD_SIZE, reduction))


def test_stem_tap_is_act1_and_not_overwritten_in_place() -> None:
    encoder = _randomise_batch_norms(ResNetDEncoder(**TINY)).eval()
    image = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        stem = encoder(image)[0]
        torch.testing.assert_close(stem, torch.relu(encoder.bn1(encoder.conv1(image))))


def test_bottleneck_registry_and_variant_table() -> None:
    encoder = build_encoder("resnet_d", variant="resnet50d", in_channels=2, **TINY)
    assert check_encoder(encoder) is encoder and encoder.spatial_dims == 2
    assert encoder.out_channels == (8, 32, 64, 96, 128)  # bottleneck stages output 4 x their width
    assert encoder(torch.rand(2, 2, 32, 32))[-1].shape == (2, 128, 2, 2)
    keys = set(encoder.state_dict())
    # layer1 changes the width at stride 1: a projection shortcut with no pooling (timm's Identity at .0)
    assert {"layer1.0.downsample.1.weight", "layer1.0.downsample.2.weight", "layer1.0.conv3.weight"} <= keys
    assert isinstance(encoder.layer1[0].downsample[0], torch.nn.Identity)
    assert RESNET_D_VARIANTS["resnet34d"] == {"block": "basic", "layers": (3, 4, 6, 3)}
    with pytest.raises(ValueError, match="unknown ResNet-D variant"):
        resnet_d_encoder("resnet34")
    with pytest.raises(ValueError, match="four stages"):
        ResNetDEncoder(layers=(1, 1, 1), widths=(8, 16, 24))


def test_timm_key_names() -> None:
    encoder = ResNetDEncoder(**TINY)
    keys = set(encoder.state_dict())
    expected = {  # timm 1.0 resnet.py, stem_type="deep", avg_down=True
        "conv1.0.weight",
        "conv1.1.weight",
        "conv1.1.running_var",
        "conv1.3.weight",
        "conv1.4.bias",
        "conv1.6.weight",
        "bn1.weight",
        "bn1.num_batches_tracked",
        "layer1.0.conv1.weight",
        "layer1.0.bn1.weight",
        "layer1.0.conv2.weight",
        "layer1.0.bn2.bias",
        "layer2.0.downsample.1.weight",
        "layer2.0.downsample.2.running_mean",
        "layer2.1.conv2.weight",
        "layer4.0.downsample.2.weight",
    }
    assert expected <= keys
    assert not any(k.startswith(("conv1.2", "conv1.5", "layer1.0.downsample")) or ".downsample.0." in k for k in keys)
    pool = encoder.layer2[0].downsample[0]  # the ResNet-D shortcut: average pool, then a stride-1 1x1 conv
    assert isinstance(pool, torch.nn.AvgPool2d) and pool.ceil_mode and not pool.count_include_pad
    assert encoder.layer2[0].downsample[1].stride == (1, 1)
    assert [m.out_channels for m in encoder.conv1 if isinstance(m, torch.nn.Conv2d)] == [4, 4, 8]


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
def test_load_timm_checkpoint_drops_fc(tmp_path: Path, wrapper: str | None) -> None:
    source = _randomise_batch_norms(ResNetDEncoder(**TINY)).eval()
    path = _timm_checkpoint(tmp_path / "resnet34d.pth", source, wrapper)
    target = build_encoder("resnet_d", **TINY).eval()
    load_encoder_weights(target, path)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value, msg=key)
    image = torch.rand(1, 3, *ODD_SIZE)
    with torch.no_grad():
        for a, b in zip(target(image), source(image)):
            torch.testing.assert_close(a, b)


def test_remap_unwraps_and_drops_fc() -> None:
    state = dict(ResNetDEncoder(**TINY).state_dict())
    wrapped = {"model": {**state, "fc.weight": torch.zeros(10, 32), "fc.bias": torch.zeros(10)}, "epoch": 3}
    assert ResNetDEncoder(**TINY).remap_pretrained_keys(wrapped).keys() == state.keys()


def test_rgb_checkpoint_into_grey_encoder_sums_the_stem(tmp_path: Path) -> None:
    rgb = _randomise_batch_norms(ResNetDEncoder(in_channels=3, **TINY)).eval()
    grey = ResNetDEncoder(in_channels=1, **TINY).eval()
    load_encoder_weights(grey, _timm_checkpoint(tmp_path / "rgb.pth", rgb))
    torch.testing.assert_close(grey.conv1[0].weight, rgb.conv1[0].weight.sum(dim=1, keepdim=True))


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"garbage\.pth"):
        load_encoder_weights(ResNetDEncoder(**TINY), garbage)

    pvt = tmp_path / "pvt_v2_b1.pth"  # the other FUGC encoder's weights
    torch.save(PVTv2Encoder(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), num_heads=(1, 2, 3, 4)).state_dict(), pvt)
    with pytest.raises(ValueError, match=r"pvt_v2_b1\.pth.*missing keys.*unexpected keys"):
        load_encoder_weights(ResNetDEncoder(**TINY), pvt)

    basic = _timm_checkpoint(tmp_path / "resnet18d.pth", ResNetDEncoder(**TINY))
    with pytest.raises(ValueError, match=r"resnet18d\.pth.*(missing keys|shape mismatch)"):
        load_encoder_weights(ResNetDEncoder(block="bottleneck", **TINY), basic)

    with pytest.raises(FileNotFoundError, match=r"absent\.pth"):
        load_encoder_weights(ResNetDEncoder(**TINY), tmp_path / "absent.pth")


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_torchscript_matches_eager(block: str) -> None:
    encoder = _randomise_batch_norms(ResNetDEncoder(block=block, **TINY)).eval()
    scripted = torch.jit.script(encoder)
    image = torch.rand(1, 3, *ODD_SIZE)
    with torch.no_grad():
        for a, b in zip(scripted(image), encoder(image)):
            torch.testing.assert_close(a, b)
