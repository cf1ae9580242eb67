"""The FUGC 2025 7th-place UNets: parameter counts at full size, output at the input's size (odd sizes too),
encode/decode for UniMatch's feature perturbation, ONNX export that runs on any input size."""

from __future__ import annotations

import pytest
import torch

from networks.fugc_unet import FUGCUNet
from networks.onnx import INPUT_NAME, export_onnx

TINY = {
    "pvt_v2": {"dims": [8, 16, 24, 32], "num_heads": [1, 1, 1, 2], "depths": [1, 1, 1, 1]},
    "resnet_d": {"widths": [8, 16, 16, 24], "stem_width": 4, "layers": [1, 1, 1, 1]},
}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "encoder, total, encoder_params",
    [("pvt_v2", 17_146_051, 13_496_000), ("resnet_d", 23_917_347, 21_303_904)],
)
def test_full_size_parameter_counts(encoder, total, encoder_params):
    # the 7th-place solution's PVT-v2-b1 UNet ~17.1 M and ResNet34-D UNet ~23.9 M (decoder + 3x3 head included)
    model = FUGCUNet(encoder)
    assert _count(model.encoder) == encoder_params
    assert _count(model) == total


@pytest.mark.parametrize("encoder", sorted(TINY))
@pytest.mark.parametrize("size", [(64, 96), (42, 68)])
def test_logits_at_the_input_size(encoder, size):
    model = FUGCUNet(encoder, encoder_kwargs=TINY[encoder]).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, *size))
    assert out.shape == (2, 3, *size)


@pytest.mark.parametrize("encoder", sorted(TINY))
def test_decode_takes_perturbed_features(encoder):
    # UniMatch decodes Dropout2d copies of the features; sizes that are multiples of 4 come back whole
    model = FUGCUNet(encoder, encoder_kwargs=TINY[encoder]).eval()
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        perturbed = model.decode([torch.nn.functional.dropout2d(f, 0.5) for f in model.encode(x)])
    assert perturbed.shape == (2, 3, 64, 96)


def test_decoder_stages_take_the_skip_widths_and_the_last_one_upsamples_both_inputs():
    model = FUGCUNet("resnet_d", encoder_kwargs=TINY["resnet_d"])
    skips = model.encoder.out_channels[:-1]
    assert [b.convs.conv_0.conv.out_channels for b in model.decoder.blocks] == list(reversed(skips))
    assert model.decoder.blocks[-1].upsample_skip
    assert model.decoder.output_reduction == (1, 1)


@pytest.mark.parametrize("encoder", sorted(TINY))
def test_onnx_export_traced_on_one_size_runs_on_sizes_of_other_strides(encoder, tmp_path):
    # traced at a multiple of 32 (no resize taken in eager mode), run where the decoder and the output must resize
    onnxruntime = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = FUGCUNet(encoder, encoder_kwargs=TINY[encoder]).eval()
    path = export_onnx(model, torch.rand(1, 3, 32, 64), tmp_path / "unet.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in [(32, 64), (42, 68), (37, 53)]:
        x = torch.rand(2, 3, *size)
        with torch.no_grad():
            expected = model(x)
        output = torch.from_numpy(session.run(None, {INPUT_NAME: x.numpy()})[0])
        torch.testing.assert_close(output, expected, atol=1e-4, rtol=1e-4)
