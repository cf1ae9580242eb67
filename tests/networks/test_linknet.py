"""LinkNet: the smp layout and parameter counts of the CCF BDCI model, any encoder, TorchScript, local weights."""

from __future__ import annotations

import io

import pytest
import torch
from monai.networks.nets import EfficientNetBNFeatures

from networks.decoders import LinkNetDecoder
from networks.encoders import build_encoder, load_encoder_weights
from networks.encoders.resnet import ResNetSkipEncoder
from networks.linknet import LinkNet


def tiny_encoder() -> ResNetSkipEncoder:
    return ResNetSkipEncoder(layers=(1, 1, 1, 1), widen_factor=0.25)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def linknet_b6() -> LinkNet:
    return LinkNet()  # the recipe's model: efficientnet-b6, 1 input channel, 1 logit


def test_b6_decoder_follows_the_recipe_channel_path(linknet_b6):
    path = [(b.reduce.conv.in_channels, b.expand.conv.out_channels) for b in linknet_b6.decoder.blocks]
    assert path == [(576, 200), (200, 72), (72, 40), (40, 56), (56, 32)]
    assert n_params(linknet_b6.decoder) == 513_228  # smp's figure
    assert n_params(linknet_b6.head) == 33


def test_b6_parameter_count_reconciles_with_smp(linknet_b6):
    # ours: every parameter is used; smp also keeps the EfficientNet classifier conv/BN and counts an RGB stem
    assert n_params(linknet_b6) == 39_916_245
    monai_b6 = EfficientNetBNFeatures("efficientnet-b6", pretrained=False, in_channels=3)
    smp_encoder = n_params(monai_b6) - n_params(monai_b6._fc)  # smp deletes only the final linear layer
    assert smp_encoder + n_params(linknet_b6.decoder) + n_params(linknet_b6.head) == 41_248_965
    unused = n_params(monai_b6._conv_head) + n_params(monai_b6._bn1)
    assert n_params(linknet_b6) + unused + 56 * 2 * 9 == 41_248_965


def test_forward_keeps_the_input_size_and_rejects_sizes_not_divisible_by_32():
    net = LinkNet(tiny_encoder(), out_channels=2).eval()
    assert net(torch.rand(2, 1, 64, 96)).shape == (2, 2, 64, 96)
    with pytest.raises(ValueError, match="divisible by 32"):
        net(torch.rand(1, 1, 64, 80 + 8))


def test_named_efficientnet_b0_and_resnet34_encoders():
    b0 = LinkNet("efficientnet", encoder_kwargs={"variant": "b0"}).eval()
    assert b0(torch.rand(1, 1, 32, 32)).shape == (1, 1, 32, 32)
    r34 = LinkNet("resnet", encoder_kwargs={"variant": "resnet34"})
    assert r34.encoder.out_channels == (64, 64, 128, 256, 512)
    keys = set(r34.encoder.state_dict())  # torchvision names, ImageNet layout ("B" shortcuts, no fc)
    assert {"conv1.weight", "bn1.running_var", "layer1.2.conv2.weight", "layer2.0.downsample.0.weight"} <= keys
    assert not any(k.startswith("fc.") for k in keys)
    with pytest.raises(ValueError, match="unknown encoder"):
        LinkNet("vgg16")
    with pytest.raises(ValueError, match="unknown ResNet variant"):
        LinkNet("resnet", encoder_kwargs={"variant": "resnet101"})


def test_generic_decoder_on_any_encoder_channels():
    decoder = LinkNetDecoder([8, 16, 24], [(2, 2), (4, 4), (8, 8)], out_channels=4)
    features = [torch.rand(1, c, 32 // s, 32 // s) for c, s in zip((8, 16, 24), (2, 4, 8))]
    assert decoder(features).shape == (1, 4, 32, 32)
    with pytest.raises(ValueError, match="expects 3 encoder maps, got 2"):
        decoder(features[1:])
    with pytest.raises(ValueError, match="encoder map 1: the decoder expects 16 channels, got 8"):
        decoder([features[0], features[0], features[2]])
    with pytest.raises(TypeError, match="does not follow the encoder contract"):
        LinkNet(torch.nn.Identity())


def test_an_encoder_whose_first_map_is_at_stride_4_is_refused():
    # LinkNet on ConvNeXt used to return a half-sized map silently
    atto = build_encoder("convnext", variant="atto", in_channels=1, depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))
    with pytest.raises(ValueError, match=r"strides \(\(2, 2\), \(4, 4\).*got \(\(4, 4\), \(8, 8\)"):
        LinkNet(atto)


@pytest.mark.parametrize("encoder", ["efficientnet-b0", "tiny-resnet"])
def test_torchscript_script_round_trip(encoder):
    if encoder == "tiny-resnet":
        net = LinkNet(tiny_encoder()).eval()
    else:
        net = LinkNet("efficientnet", encoder_kwargs={"variant": "b0"}).eval()
    x = torch.rand(1, 1, 32, 64)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buffer)
    buffer.seek(0)
    scripted = torch.jit.load(buffer)
    torch.testing.assert_close(scripted(x), net(x))


def test_local_pretrained_efficientnet_weights_in_lukemelas_naming(tmp_path):
    source = LinkNet("efficientnet", encoder_kwargs={"variant": "b0"}).encoder
    state = {}
    for key, value in source.state_dict().items():  # lukemelas / smp naming, RGB stem, with the classifier
        parts = key.split(".")
        state[".".join(parts[:1] + parts[2:]) if key.startswith("_blocks.") else key] = value
    state["_conv_stem.weight"] = source._conv_stem.weight.detach().repeat(1, 3, 1, 1) / 3
    state["_fc.weight"] = torch.zeros(1000, 1280)
    path = tmp_path / "efficientnet-b0.pth"
    torch.save(state, path)
    net = LinkNet("efficientnet", encoder_kwargs={"variant": "b0"}, pretrained_path=path)
    torch.testing.assert_close(net.encoder._conv_stem.weight, source._conv_stem.weight)  # RGB summed to grey
    loaded, original = net.encoder._blocks[3][1], source._blocks[3][1]  # stage 3, its second block
    torch.testing.assert_close(loaded._project_conv.weight, original._project_conv.weight)


def test_pretrained_weights_that_do_not_fit_name_the_file(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"state_dict": tiny_encoder().state_dict()}, path)
    encoder = LinkNet("efficientnet", encoder_kwargs={"variant": "b0"}).encoder
    with pytest.raises(ValueError, match=r"resnet\.pth.*missing keys"):
        load_encoder_weights(encoder, path)
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        load_encoder_weights(encoder, tmp_path / "absent.pth")


def test_torchvision_named_resnet_weights_load(tmp_path):
    source = tiny_encoder()
    state = dict(source.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.zeros(10, 128), torch.zeros(10)
    torch.save(state, tmp_path / "r.pth")
    net = LinkNet(tiny_encoder(), pretrained_path=tmp_path / "r.pth")
    torch.testing.assert_close(net.encoder.layer4[0].conv1.weight, source.layer4[0].conv1.weight)


def test_named_encoder_takes_keyword_arguments_from_a_config():
    narrow = LinkNet("resnet", encoder_kwargs={"variant": "resnet18", "widen_factor": 0.25})
    assert narrow.encoder.out_channels == (16, 16, 32, 64, 128)
    assert narrow.eval()(torch.rand(1, 1, 32, 32)).shape == (1, 1, 32, 32)
    with pytest.raises(ValueError, match="named encoder only"):
        LinkNet(tiny_encoder(), encoder_kwargs={"widen_factor": 0.5})
