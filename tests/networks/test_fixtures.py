"""Each network family gives the outputs it gave before the encoder/decoder refactor, for the same weights.

``fixtures/<family>.pt`` were written by the networks as they were before :mod:`networks.encoders` and
:mod:`networks.decoders` existed: the state-dict keys and shapes (the checkpoint layout), the parameter count, a
fixed input and the eval-mode output for weights given by :func:`deterministic_state` (a function of key names and
shapes only, so no initialisation code is involved). Loading the old keys into today's network must work (keys
unchanged or renamed on load) and give the same output.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import pytest
import torch

from networks.encoders.resnet import ResNetSkipEncoder
from networks.linknet import LinkNet
from networks.magnet import MagnetNet
from networks.unet_plus_plus import UNet, UNetPlusPlus

FIXTURES = Path(__file__).parent / "fixtures"
TINY_UNET = (4, 8, 16, 32, 64)

FAMILIES = {
    "magnet": lambda: MagnetNet(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)),
    "linknet_resnet": lambda: LinkNet(ResNetSkipEncoder(layers=(1, 1, 1, 1), widen_factor=0.125), out_channels=2),
    "linknet_efficientnet_b0": lambda: LinkNet("efficientnet", encoder_kwargs={"variant": "b0"}),
    "unet": lambda: UNet(features=TINY_UNET),
    "unet_plus_plus": lambda: UNetPlusPlus(features=TINY_UNET),
    "unet_plus_plus_dilated": lambda: UNetPlusPlus(features=TINY_UNET, dilated=True),
}


def deterministic_state(
    shapes: dict[str, tuple[int, ...]], reference: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Weights seeded by each key's name: fan-in scaled normal for conv/linear weights, near 1 for norm weights."""
    state = {}
    for name in sorted(shapes):
        dtype = reference[name].dtype if name in reference else torch.float32
        if not dtype.is_floating_point:
            state[name] = torch.zeros(shapes[name], dtype=dtype)
            continue
        generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        noise = torch.randn(shapes[name], generator=generator)
        if name.endswith("running_var"):
            value = torch.rand(shapes[name], generator=generator) * 0.5 + 0.75
        elif len(shapes[name]) >= 2:
            value = noise / math.sqrt(max(1, math.prod(shapes[name][1:])))
        elif name.endswith(("weight", "gamma")):
            value = 1.0 + 0.1 * noise
        else:
            value = 0.1 * noise
        state[name] = value.to(dtype)
    return state


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_old_checkpoint_layout_loads_and_gives_the_old_output(family: str) -> None:
    fixture = torch.load(FIXTURES / f"{family}.pt", weights_only=True)
    net = FAMILIES[family]().eval()
    assert sum(p.numel() for p in net.parameters()) == fixture["num_parameters"]
    old_state = deterministic_state(fixture["shapes"], net.state_dict())
    net.load_state_dict(old_state)  # strict: every old key is used, every new key is filled
    with torch.no_grad():
        output = net(fixture["input"])
    torch.testing.assert_close(output, fixture["output"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_seeded_initialisation_is_the_one_before_the_refactor(family):
    """Same seed, same initial weights in the same order: a training run reproduces the scores it gave before.

    ``fixtures/seeded_init.pt`` holds, per family, the sum of absolute values of every state-dict tensor (in
    state-dict order) of the pre-refactor network built right after ``torch.manual_seed(0)``.
    """
    expected = torch.load(FIXTURES / "seeded_init.pt", weights_only=True)[family]
    torch.manual_seed(0)
    sums = [value.double().abs().sum().item() for value in FAMILIES[family]().state_dict().values()]
    assert sums == pytest.approx(expected.tolist(), rel=1e-12, abs=0.0)
