"""ConvNeXt encoder: feature shapes, timm parameter count and key names, loading timm checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from networks.checkpoint import adapt_input_conv_weight
from networks.encoders import build_encoder, load_encoder_weights
from networks.encoders.convnext import CONVNEXT_VARIANTS, ConvNeXtEncoder, convnext_encoder

TINY = {"depths": (1, 1, 1, 1), "dims": (8, 16, 32, 64)}


def _fake_timm_checkpoint(path: Path, source: ConvNeXtEncoder, wrapper: str | None = "state_dict") -> Path:
    """Write ``source``'s weights under timm's key names plus a classifier head, as timm would save them."""
    state = dict(source.state_dict())
    width = source.out_channels[-1]
    state.update(
        {
            "head.norm.weight": torch.ones(width),
            "head.norm.bias": torch.zeros(width),
            "head.fc.weight": torch.randn(1000, width),
            "head.fc.bias": torch.zeros(1000),
        }
    )
    torch.save({wrapper: state} if wrapper else state, path)
    return path


def test_nano_parameter_count_matches_timm() -> None:
    encoder = convnext_encoder("nano")
    assert sum(p.numel() for p in encoder.parameters()) == pytest.approx(14_951_280, rel=0.01)
    assert encoder.out_channels == (80, 160, 320, 640)
    assert encoder.reductions == ((4, 4), (8, 8), (16, 16), (32, 32)) and encoder.spatial_dims == 2
    assert build_encoder("convnext", variant="nano").state_dict().keys() == encoder.state_dict().keys()


@pytest.mark.parametrize("in_channels", [1, 3, 5])
@pytest.mark.parametrize("size", [(64, 64), (72, 104)])
def test_feature_shapes(in_channels: int, size: tuple[int, int]) -> None:
    encoder = ConvNeXtEncoder(in_channels=in_channels, **TINY)
    feats = encoder(torch.rand(2, in_channels, *size))
    assert [tuple(f.shape) for f in feats] == [
        (2, c, size[0] // s, size[1] // s) for c, s in zip(TINY["dims"], (4, 8, 16, 32))
    ]


def test_linear_mlp_and_drop_path_variant_runs() -> None:
    encoder = ConvNeXtEncoder(in_channels=2, conv_mlp=False, drop_path_rate=0.2, ls_init_value=None, **TINY).train()
    feats = encoder(torch.rand(2, 2, 64, 64))
    assert feats[-1].shape == (2, 64, 2, 2)
    assert "stages.0.blocks.0.gamma" not in encoder.state_dict()
    assert encoder.stages[0].blocks[0].mlp.fc1.weight.ndim == 2  # nn.Linear, as timm without conv_mlp


def test_variant_table() -> None:
    assert CONVNEXT_VARIANTS["nano"] == {"depths": (2, 2, 8, 2), "dims": (80, 160, 320, 640), "conv_mlp": True}
    assert convnext_encoder("atto", in_channels=1).out_channels == (40, 80, 160, 320)
    with pytest.raises(ValueError, match="unknown ConvNeXt variant"):
        convnext_encoder("gigantic")


def test_timm_key_names() -> None:
    keys = set(ConvNeXtEncoder(**TINY).state_dict())
    expected = {
        "stem.0.weight",
        "stem.0.bias",
        "stem.1.weight",
        "stem.1.bias",
        "stages.0.blocks.0.conv_dw.weight",
        "stages.0.blocks.0.norm.weight",
        "stages.0.blocks.0.mlp.fc1.weight",
        "stages.0.blocks.0.mlp.fc2.bias",
        "stages.0.blocks.0.gamma",
        "stages.1.downsample.0.weight",
        "stages.1.downsample.1.weight",
        "stages.3.blocks.0.gamma",
    }
    assert expected <= keys
    assert not any(k.startswith("stages.0.downsample") for k in keys)  # timm's stage 0 has no downsample


def test_load_into_one_channel_encoder_sums_rgb_stem(tmp_path: Path) -> None:
    rgb = ConvNeXtEncoder(in_channels=3, **TINY).eval()
    path = _fake_timm_checkpoint(tmp_path / "convnext.pth", rgb)
    grey = ConvNeXtEncoder(in_channels=1, **TINY).eval()
    load_encoder_weights(grey, path)

    torch.testing.assert_close(grey.stem[0].weight, rgb.stem[0].weight.sum(dim=1, keepdim=True))
    torch.testing.assert_close(grey.stages[2].blocks[0].mlp.fc1.weight, rgb.stages[2].blocks[0].mlp.fc1.weight)
    image = torch.rand(1, 1, 64, 64)
    with torch.no_grad():  # a grey image seen as R = G = B gives the same features
        for a, b in zip(grey(image), rgb(image.expand(-1, 3, -1, -1))):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("wrapper", [None, "model"])
def test_load_plain_or_model_wrapped_state_dict(tmp_path: Path, wrapper: str | None) -> None:
    source = ConvNeXtEncoder(in_channels=3, **TINY)
    path = _fake_timm_checkpoint(tmp_path / "convnext.pth", source, wrapper=wrapper)
    target = ConvNeXtEncoder(in_channels=3, **TINY)
    load_encoder_weights(target, str(path))
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value)


def test_adapt_input_conv_repeats_and_rescales() -> None:
    weight = torch.randn(4, 3, 2, 2)
    five = adapt_input_conv_weight(weight, 5)
    torch.testing.assert_close(five, torch.cat([weight, weight[:, :2]], dim=1) * 0.6)
    torch.testing.assert_close(adapt_input_conv_weight(weight, 1), weight.sum(dim=1, keepdim=True))
    assert adapt_input_conv_weight(weight, 3) is weight


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    source = ConvNeXtEncoder(in_channels=3, **TINY)
    state = dict(source.state_dict())
    del state["stages.1.downsample.1.weight"]
    missing = tmp_path / "missing_key.pth"
    torch.save(state, missing)
    with pytest.raises(ValueError, match=r"missing_key\.pth.*stages\.1\.downsample\.1\.weight"):
        load_encoder_weights(ConvNeXtEncoder(**TINY), missing)

    other = _fake_timm_checkpoint(tmp_path / "wider.pth", ConvNeXtEncoder(depths=(1, 1, 1, 1), dims=(8, 16, 32, 48)))
    with pytest.raises(ValueError, match=r"wider\.pth.*shape mismatch"):
        load_encoder_weights(ConvNeXtEncoder(**TINY), other)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"garbage\.pth"):
        load_encoder_weights(ConvNeXtEncoder(**TINY), garbage)

    with pytest.raises(FileNotFoundError, match=r"absent\.pth"):
        load_encoder_weights(ConvNeXtEncoder(**TINY), tmp_path / "absent.pth")
