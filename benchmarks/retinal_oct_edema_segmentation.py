"""Speed figures of the retinal_oct_edema_segmentation bundle (AI Challenger 2018 OCT, 4th place; ShawnBIT).

1. Parameters of the three networks of ``networks.unet_plus_plus`` (UNet, UNet++, dilated UNet++, each with the
   detection head) beside the reference's counts (ShawnBIT models/nets/UNet.py: 2.47 M, 2.95 M, 5.32 M).
2. Inference per batch of B-scans (``--slice-batch``, default 8 as the reference, 1024 x 512) of ``--model``
   (default ``fusion``: UNet++ and UNet, 0.5 / 0.5 on probabilities, what ``inference.json`` runs) in fp32 eager
   and in every path of ``benchmarks.common.candidate_paths``, each with its label agreement with fp32 (argmax of
   the 4 segmentation channels) and the largest difference of its per-slice detection probabilities; ms per
   B-scan; the fastest path keeping the agreement >= ``--min-agreement`` (99.5 %) is named.
3. A whole cube: ``monai.inferers.SliceInferer`` over ``(1, 3, S, H, W)`` in batches of ``--slice-batch`` as the
   bundle's inference does, in fp32 and in the fastest path: seconds per cube (scaled to the challenge's 128
   B-scans when ``--cube-slices`` is smaller, as by default on the CPU), peak memory, and the label agreement of
   the whole cube.

The input is a synthetic cube of ``data.synthetic.retinal_oct_edema_segmentation`` (all three lesions) written in
the challenge layout and read by the bundle's own inference preprocessing (``inference.json``: slice folder ->
2.5D stack -> [0, 1] -> normalisation). Networks are randomly initialised unless ``--checkpoint`` (UNet++, or the
dilated UNet++) and ``--fusion-checkpoint`` (UNet) give trained weights: an untrained network's logits are near
ties, so its agreement figures say little about a trained one's.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.inferers import SliceInferer
from torch import nn

from benchmarks.common import (
    Report,
    argmax_agreement,
    benchmark_paths,
    candidate_paths,
    count_parameters,
    pick_fastest,
    time_inference,
)
from formats.oct import write_oct_cube
from data.synthetic.retinal_oct_edema_segmentation import synthesize_cube
from networks.checkpoint import load_weights
from networks.ensemble import ProbabilityEnsemble
from networks.unet_plus_plus import UNet, UNetPlusPlus, seg_det_probabilities

__all__ = ["add_arguments", "run"]

BUNDLE_CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "retinal_oct_edema_segmentation" / "configs"
#: the bundle's settings: classes, network widths, B-scan size (roi_size) and B-scans per network call
TRAIN_CONFIG = ConfigParser.load_config_file(BUNDLE_CONFIGS / "train.json")
NUM_CLASSES = TRAIN_CONFIG["num_classes"]
CHALLENGE_HEIGHT, CHALLENGE_WIDTH = TRAIN_CONFIG["roi_size"]  # B-scans of a Cirrus MacularCube512x128
CHALLENGE_SLICES = 128  # B-scans per Cirrus MacularCube512x128
FEATURES = tuple(TRAIN_CONFIG["features"])
SLICE_BATCH = TRAIN_CONFIG["slice_batch_size"]
#: ``--quick``: tiny networks and B-scans so that a test runs the whole benchmark in seconds.
QUICK_FEATURES = (4, 8, 16, 32, 64)
QUICK_HEIGHT, QUICK_WIDTH, QUICK_SLICES = 64, 32, 4  # batches of 2
#: parameter counts of the reference, detection head included (exact figures in networks/unet_plus_plus.py)
REFERENCE_PARAMETERS = {"unet": 2_466_151, "unet_plus_plus": 2_953_027, "dilated_unet_plus_plus": 5_315_395}
MODELS = ("fusion", "unet_plus_plus", "unet", "dilated_unet_plus_plus")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of this benchmark (besides the script's common ones)."""
    parser.add_argument(
        "--model",
        choices=MODELS,
        default="fusion",
        help="what is timed (default fusion: UNet++ and UNet 0.5 / 0.5, as inference.json runs)",
    )
    parser.add_argument(
        "--features",
        type=int,
        nargs=5,
        help="network widths (default: train.json's; demo.json's 8 16 32 64 128 for demo-trained weights)",
    )
    parser.add_argument("--checkpoint", type=Path, help="trained UNet++ (or dilated UNet++) weights")
    parser.add_argument("--fusion-checkpoint", type=Path, help="trained UNet weights (the fusion partner)")
    parser.add_argument("--height", type=int, help=f"B-scan rows (default {CHALLENGE_HEIGHT}; --image-size sets it)")
    parser.add_argument(
        "--width", type=int, help=f"B-scan columns (default {CHALLENGE_WIDTH}; height / 2 with --image-size)"
    )
    parser.add_argument(
        "--slice-batch",
        type=int,
        help=f"B-scans per network call (default {SLICE_BATCH}, the bundle's slice_batch_size; 2 with --quick)",
    )
    parser.add_argument(
        "--cube-slices",
        type=int,
        help=f"B-scans of the timed cube (default {CHALLENGE_SLICES} on cuda, 16 on cpu, {QUICK_SLICES} with --quick); "
        f"seconds per cube are also given scaled to {CHALLENGE_SLICES}",
    )


def run(args: argparse.Namespace, device: torch.device, report: Report) -> None:
    """Measure the bundle on ``device`` and write the figures to ``report`` (see the module docstring)."""
    settings = _settings(args, device)
    torch.manual_seed(args.seed)
    features = QUICK_FEATURES if args.quick else tuple(args.features) if args.features else FEATURES
    net, weights = _model(args, features)
    net = net.to(device).eval()

    setup = report.section("setup", "Setup")
    setup.update(settings, model=args.model, features=list(features), weights=weights)
    report.line(f"model: {args.model}, features {list(features)}; weights: {weights}")
    report.line("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    _parameters(features, report, reference=not args.quick)

    with tempfile.TemporaryDirectory(prefix="benchmark_oct_") as tmp:
        cube, source = _input_cube(Path(tmp), settings, args.seed)
    cube = cube.to(device)
    slices = cube[:, : settings["slice_batch"]].permute(1, 0, 2, 3).contiguous()  # (B, 3, H, W)
    candidates = candidate_paths(net, slices, skip_compile=args.skip_compile)
    fastest = _slice_batches(candidates, slices, source, weights, args, report)
    _whole_cube(candidates, fastest, cube, settings, args, report)


# ----------------------------------------------------------------------------------------------- setup


def _settings(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    cuda, quick = device.type == "cuda", args.quick
    height = args.height or args.image_size or (QUICK_HEIGHT if quick else CHALLENGE_HEIGHT)
    width = args.width or (args.image_size // 2 if args.image_size else (QUICK_WIDTH if quick else CHALLENGE_WIDTH))
    default_slices = QUICK_SLICES if quick else CHALLENGE_SLICES if cuda else 16
    settings = {
        "height": height,
        "width": width,
        "slice_batch": args.slice_batch or (2 if quick else SLICE_BATCH),
        "cube_slices": args.cube_slices or default_slices,
        "amp_note": "autocast paths: fp16 on cuda, bf16 on cpu",
    }
    if height % 16 or width % 16 or height < 16 or width < 16:
        raise ValueError(f"B-scans must be multiples of 16 (the networks pool 4 times), got {height} x {width}")
    if settings["slice_batch"] < 1 or settings["cube_slices"] < settings["slice_batch"]:
        raise ValueError(f"need 1 <= --slice-batch <= --cube-slices, got {settings['slice_batch']}, "
                         f"{settings['cube_slices']}")  # fmt: skip
    return settings


def _model(args: argparse.Namespace, features: tuple[int, ...]) -> tuple[nn.Module, str]:
    """The timed network and a description of its weights."""
    if args.model == "unet":
        unet = UNet(features=features)
        return _load(unet, args.fusion_checkpoint), _weights_note(args.fusion_checkpoint, args.seed)
    unet_pp = UNetPlusPlus(features=features, dilated=args.model == "dilated_unet_plus_plus")
    _load(unet_pp, args.checkpoint)
    if args.model != "fusion":
        return unet_pp, _weights_note(args.checkpoint, args.seed)
    unet = _load(UNet(features=features), args.fusion_checkpoint)
    activation = functools.partial(seg_det_probabilities, num_classes=NUM_CLASSES)
    fusion = ProbabilityEnsemble([unet_pp, unet], activation=activation, weights=[0.5, 0.5])
    upp_note, unet_note = _weights_note(args.checkpoint, args.seed), _weights_note(args.fusion_checkpoint, args.seed)
    return fusion, f"UNet++ {upp_note}, UNet {unet_note}"


def _load(net: nn.Module, path: Path | None) -> nn.Module:
    return net if path is None else load_weights(net, path)


def _weights_note(path: Path | None, seed: int) -> str:
    return f"checkpoint {path}" if path is not None else f"random init (seed {seed})"


def _input_cube(folder: Path, settings: dict[str, Any], seed: int) -> tuple[torch.Tensor, str]:
    """A synthetic cube written as the challenge ships it, read by the bundle's inference preprocessing."""
    rng = np.random.default_rng(seed)
    image, _ = synthesize_cube(
        rng, ("REA", "SRF", "PED"), settings["cube_slices"], settings["height"], settings["width"]
    )
    write_oct_cube(folder / "BENCH.img", image)
    parser = ConfigWorkflow(
        config_file=str(BUNDLE_CONFIGS / "inference.json"), workflow_type=None, expected_slices=settings["cube_slices"]
    ).parser
    data = parser.get_parsed_content("preprocessing")({"case": "BENCH", "image": str(folder / "BENCH.img")})
    source = (
        f"synthetic cube of data.synthetic.retinal_oct_edema_segmentation ({settings['cube_slices']} B-scans of "
        f"{settings['height']} x {settings['width']}, seed {seed}), read by inference.json's preprocessing"
    )
    return torch.as_tensor(data["image"]).float(), source


# ----------------------------------------------------------------------------------------------- 1. parameters


def _parameters(features: tuple[int, ...], report: Report, reference: bool) -> None:
    nets = {
        "unet": UNet(features=features),
        "unet_plus_plus": UNetPlusPlus(features=features),
        "dilated_unet_plus_plus": UNetPlusPlus(features=features, dilated=True),
    }
    counts = {name: count_parameters(net) for name, net in nets.items()}
    section = report.section("parameters", "1. Parameters (detection head included)")
    section.update(counts=counts, reference=REFERENCE_PARAMETERS if reference else None)
    rows = []
    for name, count in counts.items():
        expected = REFERENCE_PARAMETERS[name]
        rows.append([name, f"{count:,}", f"{count / 1e6:.3f}", f"{expected / 1e6:.3f}" if reference else None,
                     f"{100 * (count / expected - 1):+.2f} %" if reference else None])  # fmt: skip
    report.table(["network", "parameters", "millions", "reference (M)", "difference"], rows)


# ----------------------------------------------------------------------------------------------- 2. slice batches


def _compare(reference: torch.Tensor, output: torch.Tensor) -> dict[str, Any]:
    """Label agreement (argmax of the segmentation channels) and the largest detection probability difference."""
    ref, out = reference.float(), output.float()
    ref_det, out_det = ref[:, NUM_CLASSES:, 0, 0], out[:, NUM_CLASSES:, 0, 0]
    if ref.amin() < 0 or ref.amax() > 1:  # logits of a single network: detection probabilities by the sigmoid
        ref_det, out_det = torch.sigmoid(ref_det), torch.sigmoid(out_det)
    labels = out[:, :NUM_CLASSES].argmax(dim=1)
    return {
        "agreement": argmax_agreement(ref[:, :NUM_CLASSES], out[:, :NUM_CLASSES]),
        "max_detection_difference": float((ref_det - out_det).abs().max()),
        "class_fractions": {
            name: (labels == c).float().mean().item() for c, name in enumerate(("background", "REA", "SRF", "PED"))
        },  # fmt: skip
    }


def _slice_batches(
    candidates: dict, slices: torch.Tensor, source: str, weights: str, args: argparse.Namespace, report: Report
) -> Any:
    batch = slices.shape[0]
    section = report.section("inference", f"2. Inference per batch of {batch} B-scans, input {list(slices.shape)}")
    section.update(input=source, input_shape=list(slices.shape), weights=weights, min_agreement=args.min_agreement)
    report.line(f"input: {source}")
    if args.checkpoint is None and args.fusion_checkpoint is None:
        report.line(
            "note: untrained networks' logits are near ties, so the agreement figures below may be misleading; "
            "pass --checkpoint / --fusion-checkpoint for trained weights"
        )
    report.line(f"warm-up {args.warmup}, median of {args.repeats} runs; first call = build + first run")
    results = benchmark_paths(candidates, slices, _compare, warmup=args.warmup, repeats=args.repeats, log=report.line)
    section["paths"] = [r.as_dict() for r in results]
    rows = []
    for r in results:
        stats = r.stats
        rows.append([
            r.name,
            _fmt(r.median_ms, ".1f"),
            _fmt(r.median_ms and r.median_ms / batch, ".1f"),
            _fmt(r.speedup, ".2f", "x"),
            _fmt(r.first_call_ms, ".0f"),
            _fmt(None if r.agreement is None else 100 * r.agreement, ".3f", "%"),
            _fmt(r.details.get("max_detection_difference") if r.ok else None, ".1e"),
            _fmt(stats and stats.peak_memory_mb, ".0f"),
            r.status if not r.ok else r.note,
        ])  # fmt: skip
    report.line()
    report.table(["path", "ms / batch", "ms / B-scan", "speed-up", "first call ms", "label agree", "max |det diff|",
                  "peak MB", "status / note"], rows)  # fmt: skip
    memory_kind = next((r.stats.memory_kind for r in results if r.stats is not None), "")
    report.line(f"peak MB: {memory_kind}")
    report.line(
        "fp32 prediction: "
        + ", ".join(f"{name} {100 * v:.2f} %" for name, v in results[0].details["class_fractions"].items())
        + " of the pixels"
    )
    fastest = pick_fastest(results, args.min_agreement)
    section["fastest"] = None if fastest is None else fastest.name
    if fastest is not None:
        report.line(
            f"fastest path with label agreement >= {100 * args.min_agreement:g} %: {fastest.name} "
            f"({fastest.median_ms / batch:.1f} ms per B-scan, {fastest.speedup:.2f}x fp32)"
        )
    return fastest


def _fmt(value: float | None, spec: str, suffix: str = "") -> str | None:
    return None if value is None else f"{value:{spec}}{suffix}"


# ----------------------------------------------------------------------------------------------- 3. whole cube


def _whole_cube(
    candidates: dict, fastest: Any, cube: torch.Tensor, settings: dict[str, Any], args: argparse.Namespace,
    report: Report,
) -> None:  # fmt: skip
    n_slices = cube.shape[1]
    section = report.section("cube", f"3. A whole cube of {n_slices} B-scans (SliceInferer, batches of "
                                     f"{settings['slice_batch']})")  # fmt: skip
    inferer = SliceInferer(
        spatial_dim=0, roi_size=(settings["height"], settings["width"]), sw_batch_size=settings["slice_batch"],
        progress=False,
    )  # fmt: skip
    names = ["fp32"] + ([fastest.name] if fastest is not None and fastest.name != "fp32" else [])
    repeats = max(1, min(args.repeats, 3))
    rows, outputs, figures = [], {}, []
    for name in names:
        fn, _ = candidates[name].build()
        volume = cube.unsqueeze(0)
        run_cube = _cube_runner(inferer, fn)
        stats = time_inference(run_cube, volume, warmup=1, repeats=repeats)
        outputs[name] = run_cube(volume).float().cpu()
        seconds = stats.median_ms / 1000
        entry = {
            "path": name,
            "seconds_per_cube": seconds,
            f"seconds_per_{CHALLENGE_SLICES}_slice_cube": seconds * CHALLENGE_SLICES / n_slices,
            "ms_per_bscan": stats.median_ms / n_slices,
            "peak_memory_mb": stats.peak_memory_mb,
            "memory_kind": stats.memory_kind,
            "agreement": argmax_agreement(outputs["fp32"][:, :NUM_CLASSES], outputs[name][:, :NUM_CLASSES]),
        }
        figures.append(entry)
        rows.append([name, f"{seconds:.2f}", f"{entry[f'seconds_per_{CHALLENGE_SLICES}_slice_cube']:.2f}",
                     f"{entry['ms_per_bscan']:.1f}", _fmt(stats.peak_memory_mb, ".0f"),
                     f"{100 * entry['agreement']:.3f}%"])  # fmt: skip
    section["paths"] = figures
    report.table(["path", "s / cube", f"s / {CHALLENGE_SLICES}-B-scan cube", "ms / B-scan", "peak MB",
                  "label agree (cube)"], rows)  # fmt: skip
    report.line(
        f"median of {repeats} runs after 1 warm-up; the network alone (the cube already read and normalised); "
        f"peak MB: {figures[0]['memory_kind']} (stitched output of {NUM_CLASSES + 3} channels included)"
    )


def _cube_runner(inferer: SliceInferer, fn: Callable[..., torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    def run_cube(volume: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():  # the stitching buffers too, not only the network calls
            return inferer(volume, fn)

    return run_cube
