"""The retinal OCT benchmark end to end in its --quick size (figures unchecked: speed is never asserted)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from benchmarks.retinal_oct_edema_segmentation import QUICK_FEATURES
from networks.unet_plus_plus import UNet, UNetPlusPlus

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmark.py"
COMMON = ["retinal_oct_edema_segmentation", "--quick", "--device", "cpu", "--skip-compile", "--warmup", "0",
          "--repeats", "1"]  # fmt: skip


def _main():
    spec = importlib.util.spec_from_file_location("benchmark_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_quick_fusion_run_times_slices_and_a_whole_cube_with_trained_weights(tmp_path, capsys):
    upp, unet = tmp_path / "upp.pt", tmp_path / "unet.pt"
    torch.save(UNetPlusPlus(features=QUICK_FEATURES).state_dict(), upp)
    torch.save({"network": UNet(features=QUICK_FEATURES).state_dict()}, unet)
    figures = _main()([*COMMON, "--checkpoint", str(upp), "--fusion-checkpoint", str(unet)])
    printed = capsys.readouterr().out
    for heading in ("== 1. Parameters", "== 2. Inference per batch of 2 B-scans", "== 3. A whole cube of 4 B-scans",
                    "fastest path with label agreement"):  # fmt: skip
        assert heading in printed, heading
    sections = figures["sections"]
    assert set(sections["parameters"]["counts"]) == {"unet", "unet_plus_plus", "dilated_unet_plus_plus"}
    inference = sections["inference"]
    assert inference["input_shape"] == [2, 3, 64, 32] and "checkpoint" in inference["weights"]
    paths = {p["name"]: p for p in inference["paths"]}
    assert paths["fp32"]["agreement"] == 1.0 and paths["fp32"]["details"]["max_detection_difference"] == 0.0
    assert inference["fastest"] in paths
    cube = sections["cube"]["paths"]
    assert cube[0]["path"] == "fp32" and cube[0]["agreement"] == 1.0
    assert cube[0]["seconds_per_128_slice_cube"] == pytest.approx(cube[0]["seconds_per_cube"] * 32)


def test_single_network_and_a_size_the_networks_cannot_take():
    figures = _main()([*COMMON, "--model", "unet_plus_plus"])
    assert figures["sections"]["setup"]["model"] == "unet_plus_plus"
    with pytest.raises(ValueError, match="B-scans must be multiples of 16"):
        _main()([*COMMON, "--height", "60"])
