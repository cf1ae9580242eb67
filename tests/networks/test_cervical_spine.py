"""The cervical spine networks: full-size parameter counts, the (2+1)-D decoder layout, output shapes."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from networks.cervical_spine import CervicalFractureClassifier, CervicalSpineUNet

TINY = {"base_channels": 4, "stage_blocks": (1, 1, 1, 1)}


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_full_size_unet_has_the_reference_parameter_count():
    model = CervicalSpineUNet()
    assert _count(model.encoder) == 12_311_552  # mmaction2 ir-CSN-50 backbone
    assert abs(_count(model) - 21.9e6) / 21.9e6 < 0.01  # encoder 12.3 M + decoder 9.6 M


@pytest.mark.parametrize("variant, backbone", [("ir_csn_152", 28_883_968), ("ip_csn_152", 32_196_992)])
def test_full_size_classifiers_are_the_backbone_plus_a_2048_to_8_head(variant, backbone):
    model = CervicalFractureClassifier(variant)
    assert (model.fc.in_features, model.fc.out_features) == (2048, 8)
    assert _count(model) == backbone + 2048 * 8 + 8
    assert model.dropout.p == 0.5 and isinstance(model.pool, nn.AdaptiveMaxPool3d)


def test_decoder_is_2plus1d_without_norm_and_the_head_upsamples_in_plane_only():
    model = CervicalSpineUNet(decoder_channels=(32, 16, 16, 8), head_channels=8, **TINY)
    kernels = {tuple(m.kernel_size) for m in model.decoder.modules() if isinstance(m, nn.Conv3d)}
    assert kernels == {(1, 3, 3), (3, 1, 1)}
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.decoder.modules())
    assert [b.convs[0].conv.out_channels for b in model.decoder.blocks] == [32, 16, 16, 8]
    upsample, final = model.head
    assert upsample.scale == [1.0, 2.0, 2.0] and upsample.conv.adn.A.alpha == 1.0  # MONAI Swish(alpha 1) = SiLU
    assert tuple(upsample.conv.conv.kernel_size) == (3, 3, 3) and tuple(final.conv.kernel_size) == (1, 1, 1)


def test_unet_repeats_the_ct_to_three_channels_and_keeps_the_input_grid():
    model = CervicalSpineUNet(decoder_channels=(16, 8, 8, 8), head_channels=8, **TINY).eval()
    x = torch.randn(2, 1, 16, 64, 32)
    with torch.no_grad():
        out = model(x)
        repeated = model.decode(model.encoder(x.repeat(1, 3, 1, 1, 1)))
    assert out.shape == (2, 8, 16, 64, 32)
    torch.testing.assert_close(out, repeated)


def test_classifier_gives_eight_logits_per_crop_whatever_its_size():
    model = CervicalFractureClassifier("ip_csn_152", **TINY).eval()
    for shape in [(3, 3, 8, 32, 32), (1, 3, 16, 48, 40)]:
        assert model(torch.randn(*shape)).shape == (shape[0], 8)


def test_both_networks_script_with_torchscript():
    # the Model Zoo's ci/verify_bundle.py exports network_def by scripting (monai.bundle ckpt_export, no trace)
    for model, x in [
        (CervicalSpineUNet(decoder_channels=(8, 8, 8, 8), head_channels=8, **TINY).eval(),
         torch.rand(1, 1, 16, 32, 32)),
        (CervicalFractureClassifier("ip_csn_152", **TINY).eval(), torch.rand(1, 3, 8, 32, 32)),
    ]:
        with torch.no_grad():
            torch.testing.assert_close(torch.jit.script(model)(x), model(x))


def test_class_prior_sets_the_initial_class_frequencies():
    prior = [0.9] + [0.1 / 7] * 7
    model = CervicalSpineUNet(decoder_channels=(16, 8, 8, 8), head_channels=8, class_prior=prior, **TINY)
    torch.testing.assert_close(model.head[1].conv.bias, torch.log(torch.tensor(prior)))
    with pytest.raises(ValueError, match="class_prior"):
        CervicalSpineUNet(class_prior=[0.5, 0.5], **TINY)


def test_bad_channel_ratio_is_refused():
    with pytest.raises(ValueError, match="multiple"):
        CervicalSpineUNet(in_channels=2, **TINY)


def test_pretrained_mmaction2_weights_load_into_both_networks(tmp_path):
    reference = CervicalFractureClassifier("ir_csn_152", **TINY)
    path = tmp_path / "recognizer.pth"
    state = {f"backbone.{k}": v + 1 if v.is_floating_point() else v for k, v in reference.encoder.state_dict().items()}
    torch.save({"state_dict": state | {"cls_head.fc_cls.weight": torch.zeros(400, 128)}}, path)
    loaded = CervicalFractureClassifier("ir_csn_152", pretrained_path=str(path), **TINY)
    torch.testing.assert_close(loaded.encoder.conv1.conv.weight, reference.encoder.conv1.conv.weight + 1)
    unet = CervicalSpineUNet(variant="ir_csn_152", pretrained_path=str(path), decoder_channels=(8, 8, 8, 8),
                             head_channels=8, **TINY)  # fmt: skip
    torch.testing.assert_close(unet.encoder.conv1.conv.weight, reference.encoder.conv1.conv.weight + 1)


def test_traced_networks_match_eager_at_other_sizes():
    """TorchScript by tracing (as the ONNX export of the runtime backends traces): traced at one size, the UNet
    gives the eager output for any batch and size, also where the decoder must resize an upsampled map to an
    odd-sized skip (the decoder records its resizes in a trace even where the traced size needs none). The
    classifier (global max pool) takes any size."""
    torch.manual_seed(0)
    unet = CervicalSpineUNet(base_channels=4, stage_blocks=[1, 1, 1, 1], decoder_channels=[8, 8, 8, 8],
                             head_channels=8).eval()  # fmt: skip
    classifier = CervicalFractureClassifier(base_channels=4, stage_blocks=[1, 1, 1, 1]).eval()
    with torch.no_grad():
        traced_unet = torch.jit.trace(unet, torch.randn(1, 1, 16, 32, 32))
        traced_classifier = torch.jit.trace(classifier, torch.randn(1, 3, 8, 32, 32))
        for shape in [(2, 1, 32, 64, 64), (1, 1, 24, 64, 96), (1, 1, 21, 40, 56)]:
            x = torch.randn(shape)
            torch.testing.assert_close(traced_unet(x), unet(x))
        for shape in [(3, 3, 16, 64, 64), (2, 3, 10, 40, 24)]:
            x = torch.randn(shape)
            torch.testing.assert_close(traced_classifier(x), classifier(x))
