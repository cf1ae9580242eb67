"""MAGNET: I/O contract, parameter count, morphology features, pooling, freezing, gradients, TorchScript."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from networks.encoders.convnext import ConvNeXtEncoder
from networks.magnet import (
    MagnetNet,
    MorphologyFeatures,
    RunningStandardize,
    plaque_weighted_pool,
    risk_logit,
    split_views_output,
    view_logits_as_batch,
)

TINY = {"depths": (1, 1, 1, 1), "dims": (8, 16, 32, 64)}


def _tiny(**kwargs) -> MagnetNet:
    return MagnetNet(**TINY, **kwargs)


@pytest.mark.parametrize("size", [(64, 64), (72, 88)])
def test_output_layout(size: tuple[int, int]) -> None:
    net = _tiny().eval()
    with torch.no_grad():
        out = net(torch.rand(2, 2, *size))
    assert out.shape == (2, 7, *size)
    long_logits, trans_logits, cls_logit = split_views_output(out, num_classes=3)
    assert long_logits.shape == trans_logits.shape == (2, 3, *size)
    assert cls_logit.shape == (2,)
    torch.testing.assert_close(out[:, 6], cls_logit[:, None, None].expand(-1, *size))


def test_view_channels_follow_their_view() -> None:
    net = _tiny().eval()
    x = torch.rand(1, 2, 64, 64)
    x_other_trans = x.clone()
    x_other_trans[:, 1] = torch.rand(64, 64)
    with torch.no_grad():
        a, b = net(x), net(x_other_trans)
    torch.testing.assert_close(a[:, :3], b[:, :3])  # long logits depend on the long view only
    assert not torch.allclose(a[:, 3:6], b[:, 3:6])


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="long view, transverse view"):
        _tiny()(torch.rand(1, 1, 64, 64))
    with pytest.raises(ValueError, match="num_classes=3"):
        split_views_output(torch.rand(1, 6, 8, 8), num_classes=3)
    with pytest.raises(ValueError, match="vessel_index"):
        _tiny(vessel_index=3)


def test_nano_parameter_count() -> None:
    net = MagnetNet()
    # the original MAGNET's parts: encoder 14.95 M (3-ch stem; the 1-ch stem has 2 * 80 * 16 fewer weights),
    # extra stem 0.9 k, two decoders of 4.91 M, classification head 0.85 M.
    expected = (14_951_280 - 2 * 80 * 16) + 880 + 2 * 4.91e6 + 0.85e6
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(expected, rel=0.01)
    decoder_long = sum(p.numel() for m in (net.decoder_long, net.head_long) for p in m.parameters())
    assert decoder_long == pytest.approx(4.91e6, rel=0.01)
    assert sum(p.numel() for p in net.encoder.parameters()) == 14_951_280 - 2 * 80 * 16


def test_morphology_features_of_known_masks() -> None:
    logits = torch.zeros(2, 3, 32, 32)
    logits[:, 0] = 10.0  # background everywhere ...
    logits[0, 0, 5:21, 2:30], logits[0, 2, 5:21, 2:30] = 0.0, 10.0  # ... a 16 x 28 vessel in image 0 ...
    logits[0, 2, 8:12, 10:16], logits[0, 1, 8:12, 10:16] = 0.0, 10.0  # ... holding a 4 x 6 plaque
    feats = MorphologyFeatures(plaque_index=1, vessel_index=2)(logits)
    p = math.exp(10.0) / (math.exp(10.0) + 2.0)  # winning-class probability
    plaque, vessel, fg = 24.0, 16 * 28 - 24.0, 16 * 28.0
    expected = torch.tensor(
        [
            [
                plaque / (vessel + 1e-6),
                plaque / (fg + 1e-6),
                plaque * p,
                3 / 32,  # bbox height = last row - first row
                5 / 32,
                2 * (3 + 5) / 64,
                vessel * p,
                p,
                fg / 1024,
                plaque / 1024,
            ],
            [0.0] * 10,  # background only: every feature is 0
        ]
    )
    torch.testing.assert_close(feats, expected, rtol=1e-5, atol=1e-5)


def test_plaque_weighted_pool() -> None:
    features = torch.zeros(1, 2, 2, 2)
    features[0, :, 0, 0] = torch.tensor([5.0, -1.0])
    logits = torch.zeros(1, 3, 4, 4)
    logits[0, 0] = 50.0  # background (p_plaque ~ 0) ...
    logits[0, 0, :2, :2], logits[0, 1, :2, :2] = 0.0, 50.0  # ... but plaque under the top-left feature pixel
    pooled = plaque_weighted_pool(features, logits, plaque_index=1, alpha=1.0)
    torch.testing.assert_close(pooled, torch.tensor([[2 * 5.0 / 5, 2 * -1.0 / 5]]))  # weights 2, 1, 1, 1
    unweighted = plaque_weighted_pool(features, logits, plaque_index=1, alpha=0.0)
    torch.testing.assert_close(unweighted, features.mean(dim=(2, 3)))


def test_freezing_the_encoder_freezes_only_the_encoder() -> None:
    from ignite.engine import Engine

    from handlers.freeze import FreezeForEpochs

    net = _tiny()
    engine = Engine(lambda engine, batch: None)
    freeze = FreezeForEpochs(net.encoder, epochs=1)
    engine.state.epoch = 1
    freeze(engine)
    frozen = {name for name, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {name for name, _ in net.named_parameters() if name.startswith("encoder.")}
    assert all(p.requires_grad for p in net.extra_stem.parameters())
    engine.state.epoch = 2
    freeze(engine)
    assert all(p.requires_grad for p in net.parameters())


def test_gradients_reach_extra_stem_and_cls_head_is_detached_from_decoders() -> None:
    net = _tiny().train()
    out = net(torch.rand(2, 2, 64, 64))
    long_logits, trans_logits, cls_logit = split_views_output(out)
    cls_logit.sum().backward(retain_graph=True)
    # the head reads the segmentation detached: no gradient from the risk logit into the decoders
    assert all(p.grad is None or not p.grad.any() for p in net.decoder_long.parameters())
    assert net.encoder.stages[3].blocks[0].conv_dw.weight.grad.abs().sum() > 0  # through the pooled c4
    (long_logits.mean() + trans_logits.mean()).backward()
    assert net.extra_stem[0].weight.grad.abs().sum() > 0
    assert net.extra_stem[1].weight.grad.abs().sum() > 0


def test_pretrained_path_loads_adapted_stem(tmp_path: Path) -> None:
    source = ConvNeXtEncoder(in_channels=3, **TINY)
    path = tmp_path / "timm_convnext.pth"
    torch.save({"state_dict": {**source.state_dict(), "head.fc.weight": torch.zeros(10, 64)}}, path)
    net = _tiny(pretrained_path=str(path))
    torch.testing.assert_close(net.encoder.stem[0].weight, source.stem[0].weight.sum(dim=1, keepdim=True))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("mode", ["script", "trace"])
@pytest.mark.parametrize("standardize", [False, True])
def test_torchscript_round_trip(tmp_path: Path, mode: str, standardize: bool) -> None:
    net = _tiny(standardize_cls_inputs=standardize).eval()
    x = torch.rand(1, 2, 64, 64)
    module = torch.jit.script(net) if mode == "script" else torch.jit.trace(net, x)
    torch.jit.save(module, tmp_path / "magnet.ts")
    loaded = torch.jit.load(tmp_path / "magnet.ts")
    sizes = [(64, 64), (72, 88)] if mode == "script" else [(64, 64), (96, 128)]  # a trace fixes its branches
    with torch.no_grad():
        for size in sizes:
            x = torch.rand(1, 2, *size)
            torch.testing.assert_close(loaded(x), net(x), rtol=1e-5, atol=1e-5)


def test_view_logits_as_batch_and_risk_logit_take_the_packed_output_apart() -> None:
    out = torch.randn(2, 7, 4, 4)
    long_logits, trans_logits, cls_logit = split_views_output(out)
    assert torch.equal(view_logits_as_batch(out), torch.cat([long_logits, trans_logits]))
    assert torch.equal(risk_logit(out), cls_logit)


def test_running_standardize_uses_running_statistics_only() -> None:
    norm = RunningStandardize(3, momentum=0.5)
    x = torch.tensor([[10.0, 0.0, 1.0], [12.0, 0.0, 3.0]])
    norm.train()
    norm(x)
    torch.testing.assert_close(norm.running_mean, torch.tensor([5.5, 0.0, 1.0]))
    torch.testing.assert_close(norm.running_var, torch.tensor([1.0, 0.5, 1.0]))
    for _ in range(40):
        norm(x)
    norm.eval()
    out = norm(x)
    torch.testing.assert_close(out.mean(dim=0), torch.zeros(3), atol=1e-4, rtol=0)
    # a case's output does not depend on the other cases of its batch (unlike BatchNorm1d with batch statistics)
    torch.testing.assert_close(norm(x[:1]), out[:1])
    with pytest.raises(ValueError, match="momentum"):
        RunningStandardize(3, momentum=0.0)


def test_default_head_is_magnets_and_the_option_adds_no_parameters() -> None:
    torch.manual_seed(0)
    plain = _tiny()
    torch.manual_seed(0)
    standardized = _tiny(standardize_cls_inputs=True)
    assert plain.cls_input_norm is None
    params = dict(standardized.named_parameters())
    assert params.keys() == dict(plain.named_parameters()).keys()
    assert all(torch.equal(p, params[name]) for name, p in plain.named_parameters())  # same seeded weights
    assert set(standardized.state_dict()) - set(plain.state_dict()) == {
        "cls_input_norm.running_mean",
        "cls_input_norm.running_var",
    }


def _fit_head(net: MagnetNet, steps: int = 150) -> float:
    """Train the risk head (and its input norm) of ``net`` alone on vectors shaped like the demo model's head
    inputs (bundle docs): a case-independent offset, per-case variation a few per cent of it, the class signal in
    16 of the morphology features only; return the accuracy on fresh cases."""
    gen = torch.Generator().manual_seed(0)
    width = net.cls_head[0].in_features
    offset = 2.0 * torch.randn(width, generator=gen)
    direction = torch.randn(width, generator=gen)
    direction[:-16] = 0.0

    def cases(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = (torch.arange(n) % 2).float()
        noise = 0.05 * torch.randn(n, width, generator=gen)
        return offset + 0.05 * (2 * y[:, None] - 1) * direction + noise, y

    modules = [net.cls_head] + ([net.cls_input_norm] if net.cls_input_norm is not None else [])
    head = torch.nn.Sequential(*modules[::-1])
    optimizer = torch.optim.AdamW(head.parameters(), lr=2e-3, weight_decay=0.05)
    head.train()
    for _ in range(steps):
        x, y = cases(2)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(x)[:, 0], y * 0.95 + 0.025)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    head.eval()
    x, y = cases(64)
    with torch.no_grad():
        return float(((head(x)[:, 0] > 0).float() == y).float().mean())


def test_standardized_head_inputs_learn_a_signal_riding_on_a_large_offset() -> None:
    torch.manual_seed(0)
    assert _fit_head(_tiny(standardize_cls_inputs=True)) >= 0.9
    # MAGNET's head alone stays at chance in the same steps: its LayerNorms act per case, not across cases
    torch.manual_seed(0)
    assert _fit_head(_tiny()) < 0.7
