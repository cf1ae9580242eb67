"""CSN encoder: mmaction2 parameter counts and key names, feature maps and reductions, loading mmaction2 weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from networks.encoders import ENCODERS, build_encoder, load_encoder_weights
from networks.encoders.csn import CSN_VARIANTS, CSNEncoder, csn_encoder

TINY = {"base_channels": 4, "stage_blocks": (1, 2, 1, 1)}


def _recognizer_checkpoint(path: Path, backbone: CSNEncoder, num_classes: int = 5) -> Path:
    """Write ``backbone``'s weights as an mmaction2 recognizer checkpoint: ``backbone.`` prefix plus ``cls_head``."""
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    state["cls_head.fc_cls.weight"] = torch.randn(num_classes, backbone.out_channels[-1])
    state["cls_head.fc_cls.bias"] = torch.zeros(num_classes)
    torch.save({"meta": {"epoch": 58}, "state_dict": state}, path)
    return path


def _randomise_norm_statistics(encoder: CSNEncoder) -> CSNEncoder:
    """Give every BatchNorm non-trivial running statistics so that loading them is visible in eval outputs."""
    generator = torch.Generator().manual_seed(0)
    for module in encoder.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return encoder


@pytest.mark.parametrize(
    ("variant", "count"), [("ir_csn_50", 12_311_552), ("ir_csn_152", 28_883_968), ("ip_csn_152", 32_196_992)]
)
def test_parameter_counts_match_mmaction2(variant: str, count: int) -> None:
    encoder = csn_encoder(variant)
    assert sum(p.numel() for p in encoder.parameters()) == count
    assert encoder.out_channels == (64, 256, 512, 1024, 2048)
    assert encoder.reductions == ((1, 2, 2), (1, 4, 4), (2, 8, 8), (4, 16, 16), (8, 32, 32))


def test_mmaction2_key_names_and_layout() -> None:
    ir_state = csn_encoder("ir_csn_50").state_dict()
    assert next(iter(ir_state)) == "conv1.conv.weight"  # the loader adapts the first key as the input conv
    ir_keys = set(ir_state)
    expected = {
        "conv1.conv.weight",
        "conv1.bn.weight",
        "conv1.bn.bias",
        "conv1.bn.running_mean",
        "conv1.bn.running_var",
        "conv1.bn.num_batches_tracked",
        "layer1.0.conv1.conv.weight",
        "layer1.0.conv1.bn.weight",
        "layer1.0.conv2.0.conv.weight",  # mmaction2 wraps the depthwise conv in an nn.Sequential
        "layer1.0.conv2.0.bn.running_var",
        "layer1.0.conv3.conv.weight",
        "layer1.0.conv3.bn.bias",
        "layer1.0.downsample.conv.weight",
        "layer1.0.downsample.bn.weight",
        "layer2.3.conv3.bn.num_batches_tracked",
        "layer3.5.conv2.0.conv.weight",
        "layer4.0.downsample.bn.running_mean",
        "layer4.2.conv3.conv.weight",
    }
    assert expected <= ir_keys
    assert "layer1.1.downsample.conv.weight" not in ir_keys  # only a stage's first block projects
    assert not any(".conv2.1." in k for k in ir_keys)

    ip = csn_encoder("ip_csn_152")
    ip_keys = set(ip.state_dict())
    assert {"layer3.35.conv2.0.conv.weight", "layer3.35.conv2.1.conv.weight", "layer2.7.conv3.bn.bias"} <= ip_keys
    assert ip.layer1[0].conv2[0].conv.weight.shape == (64, 64, 1, 1, 1)  # the interaction-preserving 1x1x1
    assert ip.layer1[0].conv2[1].conv.weight.shape == (64, 1, 3, 3, 3)  # depthwise
    assert isinstance(ip.layer1[0].conv2[0].activate, torch.nn.Identity)


def test_stride_sits_in_the_depthwise_conv_and_shortcut() -> None:
    encoder = CSNEncoder(**TINY)
    block = encoder.layer2[0]
    assert block.conv1.conv.stride == (1, 1, 1)
    assert block.conv2[0].conv.stride == (2, 2, 2)
    assert block.downsample.conv.stride == (2, 2, 2)
    assert encoder.conv1.conv.kernel_size == (3, 7, 7) and encoder.conv1.conv.stride == (1, 2, 2)
    assert all(m.eps == 1e-3 and m.momentum == 0.1 for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm3d))


@pytest.mark.parametrize("mode", ["ir", "ip"])
def test_tiny_feature_shapes_follow_reductions(mode: str) -> None:
    encoder = build_encoder("csn", variant="ir_csn_50", bottleneck_mode=mode, **TINY).eval()
    assert ENCODERS["csn"] is csn_encoder
    shape = (16, 64, 64)
    with torch.no_grad():
        features = encoder(torch.rand(1, 3, *shape))
    assert encoder.out_channels == (4, 16, 32, 64, 128)
    assert encoder.reductions == ((1, 2, 2), (1, 4, 4), (2, 8, 8), (4, 16, 16), (8, 32, 32))
    assert [tuple(f.shape) for f in features] == [
        (1, c, *(n // r for n, r in zip(shape, red))) for c, red in zip(encoder.out_channels, encoder.reductions)
    ]


def test_custom_strides_and_channels() -> None:
    encoder = CSNEncoder(in_channels=1, temporal_strides=(1, 1, 2, 1), **TINY)
    assert encoder.reductions == ((1, 2, 2), (1, 4, 4), (1, 8, 8), (2, 16, 16), (2, 32, 32))
    features = encoder(torch.rand(1, 1, 8, 64, 64))
    assert features[-1].shape == (1, 128, 4, 2, 2)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown CSN variant"):
        csn_encoder("ir_csn_9000")
    with pytest.raises(ValueError, match="bottleneck_mode"):
        CSNEncoder(bottleneck_mode="xy", **TINY)
    with pytest.raises(ValueError, match="equal length"):
        CSNEncoder(stage_blocks=(1, 1), base_channels=4)
    assert set(CSN_VARIANTS) == {"ir_csn_50", "ir_csn_152", "ip_csn_152"}
    with pytest.raises(ValueError, match=r"\(B, 3, D, H, W\).*\[1, 1, 8, 32, 32\]"):
        CSNEncoder(**TINY)(torch.rand(1, 1, 8, 32, 32))


@pytest.mark.parametrize("mode", ["ir", "ip"])
def test_load_mmaction2_recognizer_checkpoint(tmp_path: Path, mode: str) -> None:
    source = _randomise_norm_statistics(CSNEncoder(bottleneck_mode=mode, **TINY)).eval()
    path = _recognizer_checkpoint(tmp_path / f"{mode}csn_kinetics400.pth", source)
    target = build_encoder("csn", bottleneck_mode=mode, **TINY).eval()
    load_encoder_weights(target, path)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value)
    volume = torch.rand(1, 3, 8, 32, 32)
    with torch.no_grad():
        for a, b in zip(target(volume), source(volume)):
            torch.testing.assert_close(a, b)


def test_load_plain_backbone_state_dict(tmp_path: Path) -> None:
    source = CSNEncoder(**TINY)
    path = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), path)
    target = CSNEncoder(**TINY)
    load_encoder_weights(target, str(path))
    torch.testing.assert_close(target.layer3[0].conv2[0].conv.weight, source.layer3[0].conv2[0].conv.weight)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    ir_checkpoint = _recognizer_checkpoint(tmp_path / "ircsn.pth", CSNEncoder(bottleneck_mode="ir", **TINY))
    with pytest.raises(ValueError, match=r"ircsn\.pth.*missing keys.*conv2\.1\.bn"):
        load_encoder_weights(CSNEncoder(bottleneck_mode="ip", **TINY), ir_checkpoint)

    wider = _recognizer_checkpoint(tmp_path / "wider.pth", CSNEncoder(base_channels=8, stage_blocks=(1, 2, 1, 1)))
    with pytest.raises(ValueError, match=r"wider\.pth.*shape mismatch"):
        load_encoder_weights(CSNEncoder(**TINY), wider)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"garbage\.pth"):
        load_encoder_weights(CSNEncoder(**TINY), garbage)

    with pytest.raises(FileNotFoundError, match=r"absent\.pth"):
        load_encoder_weights(CSNEncoder(**TINY), tmp_path / "absent.pth")
