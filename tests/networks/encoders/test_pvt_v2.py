"""PVT-v2 encoder: timm parameter counts and key names, FUGC feature taps, loading timm-named checkpoints."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from networks.encoders import build_encoder, check_encoder, load_encoder_weights
from networks.encoders.pvt_v2 import PVT_V2_VARIANTS, PVTv2Encoder, pvt_v2_encoder

TINY = {"depths": (1, 1, 1, 1), "dims": (8, 16, 24, 32), "num_heads": (1, 2, 3, 4)}
ODD_SIZE = (67, 85)


def _timm_checkpoint(path: Path, source: PVTv2Encoder, wrapper: str | None = "state_dict") -> Path:
    """Write ``source``'s weights under timm's key names plus the classifier head, as timm saves ``pvt_v2_*``."""
    state = dict(source.state_dict())
    state.update({"head.weight": torch.randn(1000, source.out_channels[-1]), "head.bias": torch.zeros(1000)})
    torch.save({wrapper: state} if wrapper else state, path)
    return path


def _assert_same_weights(target: PVTv2Encoder, source: PVTv2Encoder) -> None:
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value, msg=key)


def test_b1_parameter_count_matches_timm() -> None:
    encoder = pvt_v2_encoder("b1")
    assert sum(p.numel() for p in encoder.parameters()) == 13_496_000  # timm pvt_v2_b1 14,009,000 minus head
    assert encoder.out_channels == (64, 64, 128, 320, 512)
    assert encoder.reductions == ((4, 4), (4, 4), (8, 8), (16, 16), (32, 32))


def test_b0_parameter_count_matches_timm() -> None:
    # timm pvt_v2_b0: 3.67 M parameters with the 256 x 1000 head (257,000)
    assert sum(p.numel() for p in pvt_v2_encoder("b0").parameters()) == pytest.approx(3_666_760 - 257_000, rel=0.01)


@pytest.mark.parametrize("in_channels", [1, 3])
def test_fugc_taps_on_an_odd_sized_input(in_channels: int) -> None:
    encoder = PVTv2Encoder(in_channels=in_channels, **TINY).eval()
    with torch.no_grad():
        features = encoder(torch.rand(2, in_channels, *ODD_SIZE))
    assert [f.shape[1] for f in features] == list(encoder.out_channels) == [8, 8, 16, 24, 32]
    for feature, reduction in zip(features, encoder.reductions):  # every patch embedding rounds up
        assert tuple(feature.shape[2:]) == tuple(math.ceil(s / r) for s, r in zip(ODD_SIZE, reduction))


def test_without_patch_embed_tap_gives_timm_features_only_maps() -> None:
    encoder = PVTv2Encoder(tap_patch_embed=False, **TINY)
    features = encoder(torch.rand(1, 3, 64, 64))
    assert encoder.out_channels == (8, 16, 24, 32)
    assert encoder.reductions == ((4, 4), (8, 8), (16, 16), (32, 32))
    assert [tuple(f.shape) for f in features] == [(1, 8, 16, 16), (1, 16, 8, 8), (1, 24, 4, 4), (1, 32, 2, 2)]


def test_registry_and_variant_table() -> None:
    encoder = build_encoder("pvt_v2", variant="b0", in_channels=1, drop_path_rate=0.1, **TINY)
    assert check_encoder(encoder) is encoder and encoder.spatial_dims == 2
    assert encoder.train()(torch.rand(2, 1, 32, 32))[-1].shape == (2, 32, 1, 1)
    assert PVT_V2_VARIANTS["b1"] == {
        "depths": (2, 2, 2, 2),
        "dims": (64, 128, 320, 512),
        "num_heads": (1, 2, 5, 8),
        "mlp_ratios": (8, 8, 4, 4),
    }
    assert PVT_V2_VARIANTS["b5"]["mlp_ratios"] == (4, 4, 4, 4)
    with pytest.raises(ValueError, match="unknown PVT-v2 variant"):
        pvt_v2_encoder("b9")
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        PVTv2Encoder(depths=(1,), dims=(10,), num_heads=(3,), mlp_ratios=(4,), sr_ratios=(1,))
    with pytest.raises(ValueError, match="one entry per stage"):
        PVTv2Encoder(depths=(1, 1), dims=(8, 16, 24, 32))


def test_timm_key_names() -> None:
    keys = set(PVTv2Encoder(**TINY).state_dict())
    expected = {  # timm 1.0 pvt_v2.py module names
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
        "patch_embed.norm.weight",
        "stages.0.blocks.0.norm1.weight",
        "stages.0.blocks.0.attn.q.weight",
        "stages.0.blocks.0.attn.kv.weight",
        "stages.0.blocks.0.attn.proj.bias",
        "stages.0.blocks.0.attn.sr.weight",
        "stages.0.blocks.0.attn.norm.weight",
        "stages.0.blocks.0.norm2.bias",
        "stages.0.blocks.0.mlp.fc1.weight",
        "stages.0.blocks.0.mlp.dwconv.weight",
        "stages.0.blocks.0.mlp.fc2.bias",
        "stages.0.norm.weight",
        "stages.1.downsample.proj.weight",
        "stages.1.downsample.norm.bias",
        "stages.3.blocks.0.attn.q.bias",
        "stages.3.norm.bias",
    }
    assert expected <= keys
    assert not any(k.startswith("stages.0.downsample") for k in keys)  # stage 0 uses patch_embed
    assert not any(k.startswith("stages.3.blocks.0.attn.sr") for k in keys)  # SR ratio 1: plain attention
    assert PVTv2Encoder(**TINY).stages[0].blocks[0].mlp.dwconv.groups == 8 * 8  # depthwise, hidden = 8 x dim


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
def test_load_timm_checkpoint_drops_head(tmp_path: Path, wrapper: str | None) -> None:
    source = PVTv2Encoder(**TINY).eval()
    path = _timm_checkpoint(tmp_path / "pvt_v2.pth", source, wrapper)
    target = build_encoder("pvt_v2", variant="b1", **TINY).eval()
    load_encoder_weights(target, path)
    _assert_same_weights(target, source)
    image = torch.rand(1, 3, *ODD_SIZE)
    with torch.no_grad():
        for a, b in zip(target(image), source(image)):
            torch.testing.assert_close(a, b)


def test_remap_unwraps_and_renames_other_timm_layouts() -> None:
    state = PVTv2Encoder(**TINY).state_dict()
    # timm features_only model (flatten_sequential): the FUGC 2025 7th-place solution's pvt_v2_b1_feature_only.pth
    features_only = {re.sub(r"^stages\.(\d+)\.", r"stages_\1.", k): v for k, v in state.items()}
    # original PVT release names, which timm's checkpoint filter renames
    original = {}
    for key, value in state.items():
        key = re.sub(r"^patch_embed\.", "patch_embed1.", key)
        key = re.sub(r"^stages\.(\d+)\.downsample\.", lambda m: f"patch_embed{int(m.group(1)) + 1}.", key)
        key = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)\.", lambda m: f"block{int(m.group(1)) + 1}.{m.group(2)}.", key)
        key = re.sub(r"^stages\.(\d+)\.norm\.", lambda m: f"norm{int(m.group(1)) + 1}.", key)
        original[key.replace("mlp.dwconv.", "mlp.dwconv.dwconv.")] = value
    assert "block2.0.mlp.dwconv.dwconv.weight" in original and "norm4.weight" in original
    encoder = PVTv2Encoder(**TINY)
    for layout in (features_only, original, {"model": {**state, "head.weight": torch.zeros(2, 32)}}):
        assert encoder.remap_pretrained_keys(layout).keys() == state.keys()


def test_rgb_checkpoint_into_grey_encoder_sums_the_stem(tmp_path: Path) -> None:
    rgb = PVTv2Encoder(in_channels=3, **TINY).eval()
    grey = PVTv2Encoder(in_channels=1, **TINY).eval()
    load_encoder_weights(grey, _timm_checkpoint(tmp_path / "rgb.pth", rgb))
    image = torch.rand(1, 1, 32, 48)
    with torch.no_grad():  # a grey image seen as R = G = B gives the same features
        for a, b in zip(grey(image), rgb(image.expand(-1, 3, -1, -1))):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"garbage\.pth"):
        load_encoder_weights(PVTv2Encoder(**TINY), garbage)

    wider = _timm_checkpoint(tmp_path / "b1.pth", PVTv2Encoder(**{**TINY, "dims": (8, 16, 24, 40)}))
    with pytest.raises(ValueError, match=r"b1\.pth.*shape mismatch.*stages\.3"):
        load_encoder_weights(PVTv2Encoder(**TINY), wider)

    state = dict(PVTv2Encoder(**TINY).state_dict())
    del state["stages.2.blocks.0.attn.sr.weight"]
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"missing\.pth.*missing keys.*stages\.2\.blocks\.0\.attn\.sr\.weight"):
        load_encoder_weights(PVTv2Encoder(**TINY), tmp_path / "missing.pth")

    with pytest.raises(FileNotFoundError, match=r"absent\.pth"):
        load_encoder_weights(PVTv2Encoder(**TINY), tmp_path / "absent.pth")


def test_torchscript_matches_eager() -> None:
    encoder = PVTv2Encoder(**TINY).eval()
    scripted = torch.jit.script(encoder)
    image = torch.rand(1, 3, *ODD_SIZE)
    with torch.no_grad():
        for a, b in zip(scripted(image), encoder(image)):
            torch.testing.assert_close(a, b)
