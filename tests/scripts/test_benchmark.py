"""scripts/benchmark.py: discovery of the bundle benchmarks, the helpers, and a --quick run end to end.

No assertion on any timing (speed lives in the benchmark's output, never in a test).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks import available_benchmarks, load_benchmark
from benchmarks.common import (
    Candidate,
    PathResult,
    TimingStats,
    argmax_agreement,
    benchmark_paths,
    candidate_paths,
    format_table,
    pick_fastest,
    time_inference,
)
from networks.runtime import resolve_backend

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "benchmark.py"


def test_discovery_lists_the_carotid_benchmark_and_rejects_unknown_names() -> None:
    names = available_benchmarks()
    assert "carotid_plaque_ultrasound" in names
    assert "common" not in names
    module = load_benchmark("carotid_plaque_ultrasound")
    assert callable(module.add_arguments) and callable(module.run)
    with pytest.raises(ValueError, match="no benchmark for bundle 'nope'"):
        load_benchmark("nope")


def test_argmax_agreement_counts_matching_class_decisions() -> None:
    a = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]]).unsqueeze(0)  # (1, 2 classes, 2, 2)
    b = a.clone()
    b[0, :, 0, 0] = torch.tensor([0.0, 1.0])  # flip one of 4 pixels
    assert argmax_agreement(a, a) == 1.0
    assert argmax_agreement(a, b) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="differ in shape"):
        argmax_agreement(a, b[..., :1])


def test_paths_run_a_failure_is_reported_and_pick_fastest_respects_agreement() -> None:
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1))
    example = torch.rand(1, 1, 8, 8)
    stats = time_inference(model, example, warmup=1, repeats=2)
    assert len(stats.times_ms) == 2 and stats.median_ms >= 0

    def broken() -> tuple:
        raise RuntimeError("no such backend\nsecond line")

    candidates = dict(candidate_paths(model, example, skip_compile=True))
    candidates["broken"] = Candidate("broken", broken)
    results = benchmark_paths(
        candidates, example, lambda ref, out: {"agreement": argmax_agreement(ref, out)}, warmup=0, repeats=1
    )
    by_name = {r.name: r for r in results}
    assert results[0].name == "fp32" and results[0].agreement == 1.0 and results[0].speedup == 1.0
    assert by_name["broken"].status == "failed: RuntimeError: no such backend"
    assert by_name["compile"].status == "skipped: --skip-compile"
    assert by_name["channels_last"].ok and by_name["torchscript"].ok

    fast_but_wrong = PathResult("wrong", "ok", stats=TimingStats([0.001], warmup=0), agreement=0.9)
    assert pick_fastest([*results, fast_but_wrong], min_agreement=0.995).name != "wrong"
    assert pick_fastest([fast_but_wrong], min_agreement=0.995) is None


def test_format_table_aligns_columns() -> None:
    text = format_table(["name", "ms"], [["fp32", "10.0"], ["bf16", None]]).splitlines()
    assert text[0].startswith("name") and text[3].endswith("-")
    assert len({len(line) for line in text[:3]}) == 1


def test_quick_run_prints_every_section_and_saves_the_json(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    command = [
        sys.executable,
        str(SCRIPT),
        "carotid_plaque_ultrasound",
        "--quick",
        "--device",
        "cpu",
        "--skip-compile",
        "--threads",
        "1",
        "--warmup",
        "0",
        "--repeats",
        "1",
        "--json",
        str(out),
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for heading in ("torch 2", "MONAI", "torch threads 1", "== 1. Parameters", "== 2. Inference per case",
                    "fastest path with seg argmax agreement", "== 3. Training samples/s", "SupervisedTrainer"):
        assert heading in done.stdout, heading

    figures = json.loads(out.read_text())
    assert figures["bundle"] == "carotid_plaque_ultrasound"
    assert {"torch", "monai", "torch_threads", "device"} <= set(figures["environment"])
    sections = figures["sections"]
    counts = sections["parameters"]["counts"]
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")

    inference = sections["inference"]
    assert inference["input_shape"] == [1, 2, 64, 64]
    assert inference["weights"].startswith("random init")
    paths = {p["name"]: p for p in inference["paths"]}
    assert {"fp32", "channels_last", "bf16", "bf16+channels_last", "torchscript", "compile"} <= set(paths)
    assert paths["fp32"]["status"] == "ok" and paths["fp32"]["agreement"] == 1.0
    assert paths["fp32"]["details"]["risk_agrees"] is True
    assert paths["compile"]["status"].startswith("skipped")
    assert inference["fastest"] in paths
    for runtime in ("onnxruntime", "openvino", "openvino+bf16"):  # ok, or skipped naming what is missing
        assert paths[runtime]["status"] == "ok" or paths[runtime]["status"].startswith("skipped"), runtime
    default = figures["default_path"]
    assert default["precision"] == "auto" and default["backend_setting"] == "auto"
    assert default["backend"] == resolve_backend("auto", "cpu", "openvino")  # carotid's auto_cpu_backend
    assert f"backend 'auto' -> {default['backend']}" in done.stdout

    loops = {loop["name"]: loop for loop in sections["training"]["loops"]}
    bare, trainer = loops["bare PyTorch loop"], loops["SupervisedTrainer (bundle)"]
    assert bare["status"] == "ok" and trainer["status"] == "ok"
    assert trainer["samples_per_s"] > 0 and trainer["ratio_to_bare"] > 0
    # same weights, batches and seed: the hand-written loop does exactly the trainer's steps
    assert trainer["last_loss"] == pytest.approx(bare["last_loss"], rel=1e-4)


def _benchmark_main():
    spec = importlib.util.spec_from_file_location("benchmark_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_checkpoint_weights_are_used_and_a_mismatching_one_is_named(tmp_path: Path) -> None:
    from benchmarks.carotid_plaque_ultrasound import QUICK_NETWORK
    from networks.magnet import MagnetNet

    state = MagnetNet(**QUICK_NETWORK).state_dict()
    good, bad = tmp_path / "good.pt", tmp_path / "bad.pt"
    torch.save({"network": state}, good)
    torch.save({k: v for k, v in state.items() if not k.startswith("cls_head")}, bad)
    main = _benchmark_main()
    common = ["carotid_plaque_ultrasound", "--quick", "--device", "cpu", "--skip-compile", "--skip-training",
              "--warmup", "0", "--repeats", "1"]

    figures = main([*common, "--checkpoint", str(good)])
    assert figures["sections"]["inference"]["weights"] == f"checkpoint {good}"
    assert "training" not in figures["sections"]
    with pytest.raises(ValueError, match="bad.pt does not fit MagnetNet"):
        main([*common, "--checkpoint", str(bad)])


def test_carotid_benchmark_builds_the_demo_network_with_standardized_head_inputs() -> None:
    import argparse

    module = load_benchmark("carotid_plaque_ultrasound")
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    args = parser.parse_args(["--depths", "1", "1", "1", "1", "--dims", "8", "16", "32", "64", "--standardize-cls-inputs"])
    args.quick = False  # a common option of scripts/benchmark.py
    kwargs, net = module._network(args)
    assert kwargs["standardize_cls_inputs"] is True and net.cls_input_norm is not None
