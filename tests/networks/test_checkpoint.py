from __future__ import annotations

import pytest
import torch

from networks.checkpoint import load_pretrained_encoder, load_weights, read_state_dict


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
