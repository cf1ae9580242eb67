from __future__ import annotations

import pytest
import torch

from networks.checkpoint import (
    adapt_input_conv_weight,
    average_checkpoints,
    load_pretrained_encoder,
    load_weights,
    read_state_dict,
    rename_keys_on_load,
)


def test_load_weights_reads_our_and_monai_checkpoint_layouts(tmp_path):
    source = torch.nn.Linear(3, 2)
    torch.save({"network": source.state_dict(), "teacher": {"weight": torch.zeros(2, 3)}}, tmp_path / "ckpt.pt")
    torch.save(source.state_dict(), tmp_path / "plain.pt")
    for name, key in (("ckpt.pt", None), ("ckpt.pt", "network"), ("plain.pt", None)):
        target = load_weights(torch.nn.Linear(3, 2), tmp_path / name, key)
        torch.testing.assert_close(target.weight, source.weight)
    assert torch.equal(read_state_dict(tmp_path / "ckpt.pt", "teacher")["weight"], torch.zeros(2, 3))


def test_bad_checkpoints_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        load_weights(torch.nn.Linear(3, 2), tmp_path / "absent.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt.pt"):
        load_weights(torch.nn.Linear(3, 2), tmp_path / "corrupt.pt")
    torch.save(torch.nn.Linear(4, 2).state_dict(), tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt.*does not fit"):
        load_weights(torch.nn.Linear(3, 2), tmp_path / "other.pt")


def test_pretrained_rgb_stem_is_summed_for_a_grey_encoder(tmp_path):
    rgb = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 4, 1))
    torch.save({"state_dict": {**rgb.state_dict(), "fc.weight": torch.zeros(1)}}, tmp_path / "rgb.pth")
    grey = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Conv2d(4, 4, 1))
    with pytest.raises(ValueError, match="unexpected keys.*fc.weight"):
        load_pretrained_encoder(grey, tmp_path / "rgb.pth")
    load_pretrained_encoder(grey, tmp_path / "rgb.pth", remap=lambda s: {k: v for k, v in s.items() if k != "fc.weight"})
    torch.testing.assert_close(grey[0].weight, rgb[0].weight.sum(dim=1, keepdim=True))


def _bn_net(fill: float, batches: int) -> torch.nn.Module:
    net = torch.nn.Sequential(torch.nn.Conv1d(2, 2, 1), torch.nn.BatchNorm1d(2))
    with torch.no_grad():
        for tensor in net.state_dict().values():
            tensor.fill_(fill)
    net[1].num_batches_tracked.fill_(batches)
    return net


def test_average_checkpoints_means_floats_and_keeps_the_first_counters(tmp_path):
    paths = []
    for i, (fill, batches) in enumerate([(1.0, 30), (2.0, 10), (6.0, 20)]):
        paths.append(tmp_path / f"e{i}.pt")
        torch.save({"network": _bn_net(fill, batches).state_dict()}, paths[-1])
    state = average_checkpoints(paths)
    torch.testing.assert_close(state["0.weight"], torch.full((2, 2, 1), 3.0))
    torch.testing.assert_close(state["1.running_var"], torch.full((2,), 3.0))
    assert state["1.num_batches_tracked"].dtype == torch.int64 and state["1.num_batches_tracked"].item() == 30
    # half-precision weights are averaged too and keep their dtype
    torch.save({"w": torch.tensor([1.0, 2.0], dtype=torch.float16)}, tmp_path / "h0.pt")
    torch.save({"w": torch.tensor([2.0, 5.0], dtype=torch.float16)}, tmp_path / "h1.pt")
    half = average_checkpoints([tmp_path / "h0.pt", tmp_path / "h1.pt"])["w"]
    assert half.dtype == torch.float16 and half.tolist() == [1.5, 3.5]


def test_average_checkpoints_names_both_files_on_a_mismatch(tmp_path):
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "a.pt")
    torch.save(torch.nn.Linear(4, 2).state_dict(), tmp_path / "b.pt")
    torch.save({"weight": torch.zeros(2, 3)}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"a.pt and .*b.pt.*mismatch.*weight \(2, 3\)"):
        average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"])
    with pytest.raises(ValueError, match=r"keys only in a.pt \(1\): bias"):
        average_checkpoints([tmp_path / "a.pt", tmp_path / "c.pt"])
    with pytest.raises(ValueError, match="at least one"):
        average_checkpoints([])
def test_video_backbone_5d_stem_is_adapted_like_a_2d_one(tmp_path):
    weight = torch.randn(4, 3, 3, 7, 7)  # (O, I, kt, kh, kw): mmaction2 ir-CSN stem
    torch.testing.assert_close(adapt_input_conv_weight(weight, 1), weight.sum(dim=1, keepdim=True))
    torch.testing.assert_close(adapt_input_conv_weight(weight, 4), torch.cat([weight, weight[:, :1]], 1) * 0.75)
    with pytest.raises(ValueError, match="4-D or 5-D"):
        adapt_input_conv_weight(torch.zeros(4, 3, 3), 1)
    rgb = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3), torch.nn.Conv3d(4, 4, 1))
    torch.save(rgb.state_dict(), tmp_path / "csn.pth")
    grey = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.Conv3d(4, 4, 1))
    load_pretrained_encoder(grey, tmp_path / "csn.pth")
    torch.testing.assert_close(grey[0].weight, rgb[0].weight.sum(dim=1, keepdim=True))


def test_renamed_keys_of_old_checkpoints_load_wherever_the_module_sits():
    class Renamed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head_long = torch.nn.Linear(2, 2)
            rename_keys_on_load(self, {"decoder_long.head.": "head_long."})

    old = {"decoder_long.head.weight": torch.ones(2, 2), "decoder_long.head.bias": torch.zeros(2)}
    outer = torch.nn.Sequential(Renamed())
    outer.load_state_dict({f"0.{k}": v for k, v in old.items()})
    torch.testing.assert_close(outer[0].head_long.weight, torch.ones(2, 2))
    assert set(outer.state_dict()) == {"0.head_long.weight", "0.head_long.bias"}


def test_a_checkpoint_of_another_network_gets_a_short_error_naming_the_first_keys(tmp_path):
    wide = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(8)], torch.nn.Linear(4, 1))
    narrow = torch.nn.Sequential(*[torch.nn.Linear(3, 3) for _ in range(8)])
    torch.save({"network": wide.state_dict()}, tmp_path / "model.pt")
    with pytest.raises(ValueError) as error:
        load_weights(narrow, tmp_path / "model.pt", "network")
    message = str(error.value)
    assert message.startswith(f"checkpoint {tmp_path / 'model.pt'} does not fit Sequential (its entry 'network'): ")
    assert "keys only in model.pt (2): 8.bias (1,), 8.weight (1, 4)" in message
    assert "shape mismatch (Sequential != model.pt) (16): 0.bias (3,) != (4,), 0.weight (3, 3) != (4, 4)" in message
    assert message.endswith(" and 11 more") and len(message) < 600
