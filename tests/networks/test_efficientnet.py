"""EfficientNet skip encoder: the smp skips (stem first) on MONAI's EfficientNet, no unused classifier."""

from __future__ import annotations

import re

import torch

from networks.encoders import build_encoder
from networks.encoders.efficientnet import EfficientNetSkipEncoder, lukemelas_to_monai_efficientnet_keys


def test_b0_returns_the_stem_and_four_stage_outputs_at_strides_2_to_32():
    encoder = EfficientNetSkipEncoder("efficientnet-b0", in_channels=1).eval()
    x = torch.rand(1, 1, 32, 64)
    with torch.no_grad():
        features = encoder(x)
        stem = encoder._swish(encoder._bn0(encoder._conv_stem(encoder._conv_stem_padding(x))))
    assert encoder.out_channels == (32, 24, 40, 112, 320)
    assert encoder.reductions == ((2, 2), (4, 4), (8, 8), (16, 16), (32, 32))
    assert [tuple(f.shape[1:]) for f in features] == [
        (c, 32 // s, 64 // s) for c, s in zip(encoder.out_channels, (2, 4, 8, 16, 32))
    ]
    # the first map is the stem output, as in smp (MONAI's EfficientNetBNFeatures gives stage 0's output instead)
    torch.testing.assert_close(features[0], stem)


def test_b6_has_the_recipe_skips_and_only_parameters_that_are_used():
    encoder = build_encoder("efficientnet", variant="b6", in_channels=1)
    assert encoder.out_channels == (56, 40, 72, 200, 576)
    # smp 0.1.0: encoder 40.7 M of which 39.4 M used; the 1-channel stem is 1,008 smaller than the RGB one
    assert sum(p.numel() for p in encoder.parameters()) == 39_402_984
    assert not any(k.startswith(("_conv_head", "_bn1.", "_fc")) for k in encoder.state_dict())


def test_every_module_with_parameters_runs_in_forward():
    encoder = EfficientNetSkipEncoder("efficientnet-b0").eval()
    with_params = {m for m in encoder.modules() if any(True for _ in m.parameters(recurse=False))}
    called: set[torch.nn.Module] = set()
    for module in with_params:
        module.register_forward_hook(lambda m, i, o: called.add(m))
    with torch.no_grad():
        encoder(torch.rand(1, 1, 32, 32))
    assert called == with_params


def test_lukemelas_keys_map_to_monai_keys():
    encoder = EfficientNetSkipEncoder("efficientnet-b0")
    own = encoder.state_dict()
    lukemelas = {re.sub(r"^_blocks\.\d+\.", "_blocks.", k): v for k, v in own.items()}  # drop the stage index
    assert "_blocks.15._project_conv.weight" in lukemelas
    lukemelas["_fc.weight"] = torch.zeros(1000, 1280)
    lukemelas["_conv_head.weight"] = torch.zeros(1280, 320, 1, 1)
    renamed = lukemelas_to_monai_efficientnet_keys(lukemelas, own.keys())
    assert set(renamed) == set(own)
    assert "_blocks.1.1._depthwise_conv.weight" in renamed and "_blocks.6.15._project_conv.weight" in renamed
