"""Speed figures of the cervical_spine_ct_fracture bundle (RSNA 2022, 4th private / 1st public; see the bundle's
docs/README.md).

1. Parameters of the three networks at the bundle's sizes: the ir-CSN-50 UNet (encoder / decoder / head) and
   the ir-CSN-152 and ip-CSN-152 classifiers (trunk / head).
2. Segmentation per study: the bundle's sliding window over the slices (``window`` slices, overlap ``overlap``,
   Gaussian weights, softmax as ``inference.json``'s ensemble) on a z-scored volume of ``--slices`` x S x S
   (default: 192 slices after the [::2] subsampling, 256 x 256); every path of
   ``benchmarks.common.candidate_paths`` (PyTorch precisions, TorchScript, compile, ONNX Runtime, OpenVINO) is
   built on the UNet alone and run inside the Python sliding window, as ``inference.json`` runs each fold model
   (an ONNX export of the whole window loop would bake the study's size into the graph); agreement = argmax
   agreement with fp32.
3. Classification per vertebra: one ``(1, 3, 40, 256, 256)`` crop through the ir-CSN-152 classifier, every path;
   agreement = the same fracture decision (sigmoid >= 0.5) on all 8 outputs.
4. Training samples/s of stage 1: the bundle's ``SupervisedTrainer`` (focal + Jaccard loss, AdamW, gradient
   clipping handler, per-step cosine schedule) against a bare PyTorch loop doing the same steps, on random
   in-memory crops of the training shape (batch x 1 x 64 x S x S), so that data loading plays no part.

Peak memory of each path is in the tables (GPU allocator peak, or the process's peak RSS on the CPU). Networks are
randomly initialised: an untrained network's outputs say little about a trained one's agreement figures.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events
from monai.bundle import ConfigParser
from monai.engines import SupervisedTrainer
from monai.handlers import LrScheduleHandler
from monai.inferers import SlidingWindowInferer
from torch import nn

from benchmarks.common import (
    Candidate,
    Report,
    StepClock,
    benchmark_paths,
    candidate_paths,
    count_parameters,
    pick_fastest,
)
from handlers.gradient_clipping import GradientClipping
from losses.focal_jaccard import FocalJaccardLoss
from networks.cervical_spine import CervicalFractureClassifier, CervicalSpineUNet
from utils.parameters import decay_parameter_groups

__all__ = ["add_arguments", "run"]

BUNDLE_CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "cervical_spine_ct_fracture" / "configs"
INFERENCE = ConfigParser.load_config_file(BUNDLE_CONFIGS / "inference.json")
TRAIN = ConfigParser.load_config_file(BUNDLE_CONFIGS / "train.json")
#: benchmark path -> the ``precision`` setting of inference.json that runs it (the PyTorch eager paths)
PRECISION_PATHS = {
    "fp32": "fp32", "channels_last": "fp32+channels_last", "bf16": "bf16", "bf16+channels_last": "bf16+channels_last",
    "fp16": "fp16", "fp16+channels_last": "fp16+channels_last",
}  # fmt: skip
#: ``--quick``: tiny networks and volumes, so that a test runs the whole benchmark in seconds
QUICK_SIZES = {"base_channels": 4, "stage_blocks": (1, 1, 1, 1)}
QUICK_DECODER = {"decoder_channels": (8, 8, 8, 8), "head_channels": 8}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of this benchmark (besides the script's common ones)."""
    parser.add_argument("--slices", type=int, help="slices of the segmented study after [::2] (default 192)")
    parser.add_argument("--window", type=int, help="sliding-window slices (default inference.json's 384)")
    parser.add_argument("--crop", type=int, nargs=2, metavar=("SLICES", "SIZE"),
                        help="classifier crop: slices and side (default inference.json's 40 256)")
    parser.add_argument("--train-batch", type=int, help="training batch (default the recipe's 4)")
    parser.add_argument("--train-steps", type=int, default=4, help="timed training steps after one warm-up step")
    parser.add_argument("--skip-training", action="store_true", help="leave out section 4")


def _networks(quick: bool) -> tuple[nn.Module, nn.Module, nn.Module]:
    seg = CervicalSpineUNet(**(QUICK_SIZES | QUICK_DECODER)) if quick else CervicalSpineUNet(
        decoder_channels=INFERENCE["decoder_channels"], head_channels=INFERENCE["head_channels"])
    sizes = QUICK_SIZES if quick else {}
    return seg, CervicalFractureClassifier("ir_csn_152", **sizes), CervicalFractureClassifier("ip_csn_152", **sizes)


def run(args: argparse.Namespace, device: torch.device, report: Report) -> None:
    """Measure the bundle on ``device`` and write the figures to ``report`` (see the module docstring)."""
    torch.manual_seed(args.seed)
    seg, ir, ip = _networks(args.quick)
    size = args.image_size or (32 if args.quick else INFERENCE["image_size"])
    slices = args.slices or (24 if args.quick else 192)
    window = args.window or (16 if args.quick else INFERENCE["window"])
    crop = args.crop or ((8, 32) if args.quick else (INFERENCE["vertebra_slices"], INFERENCE["vertebra_size"]))
    _parameters(seg, ir, ip, report)
    _segmentation(seg.eval().to(device), size, slices, window, args, device, report)
    _classification(ir.eval().to(device), crop, args, device, report)
    if not args.skip_training:
        _training(seg.train(), size, args, device, report)


def _parameters(seg: CervicalSpineUNet, ir: nn.Module, ip: nn.Module, report: Report) -> None:
    counts = {
        "UNet encoder (ir-CSN-50)": count_parameters(seg.encoder),
        "UNet decoder": count_parameters(seg.decoder),
        "UNet head": count_parameters(seg.head),
        "UNet total": count_parameters(seg),
        "ir-CSN-152 classifier": count_parameters(ir),
        "ip-CSN-152 classifier": count_parameters(ip),
    }
    report.section("parameters", "1. Parameters")["counts"] = counts
    report.table(["network", "parameters", "millions"], [[k, f"{v:,}", f"{v / 1e6:.3f}"] for k, v in counts.items()])


def _argmax_agreement(reference: torch.Tensor, output: torch.Tensor) -> dict[str, Any]:
    return {"agreement": (reference.float().argmax(1) == output.float().argmax(1)).float().mean().item()}


def _decision_agreement(reference: torch.Tensor, output: torch.Tensor) -> dict[str, Any]:
    return {"agreement": ((reference.float() >= 0) == (output.float() >= 0)).float().mean().item()}


def _in_sliding_window(candidate: Candidate, window: int, overlap: float, mode: str) -> Candidate:
    """``candidate`` (a path built on the UNet alone) run by the bundle's sliding window, softmax after it: one
    study in, class probabilities out."""
    inferer = SlidingWindowInferer(roi_size=[window, -1, -1], overlap=[overlap, 0.0, 0.0], mode=mode)

    def build() -> tuple[Any, str]:
        network, note = candidate.build()

        @torch.inference_mode()  # the path's outputs are inference tensors, which the window sums in place
        def run(x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(inferer(x, network), dim=1)

        return run, note

    return Candidate(candidate.name, build, skip=candidate.skip)


def _paths(title: str, key: str, candidates: dict[str, Candidate], example: torch.Tensor, compare, args,
           report: Report) -> None:  # fmt: skip
    section = report.section(key, title)
    results = benchmark_paths(candidates, example, compare, warmup=args.warmup, repeats=args.repeats, log=report.line)
    fastest = pick_fastest(results, args.min_agreement)
    torch_fastest = pick_fastest(results, args.min_agreement, require=lambda r: r.name in PRECISION_PATHS)
    section.update(
        paths=[r.as_dict() for r in results],
        fastest=None if fastest is None else fastest.name,
        fastest_precision=None if torch_fastest is None else PRECISION_PATHS[torch_fastest.name],
    )
    report.table(
        ["path", "median s", "agreement", "peak MB", "status / note"],
        [[r.name, None if r.median_ms is None else f"{r.median_ms / 1000:.3f}",
          None if r.agreement is None else f"{100 * r.agreement:.3f}%",
          None if r.stats is None or r.stats.peak_memory_mb is None else f"{r.stats.peak_memory_mb:.0f}",
          r.status if not r.ok else r.note] for r in results],
    )  # fmt: skip
    if fastest is not None:
        report.line(f"fastest path with agreement >= {100 * args.min_agreement:g} %: {fastest.name} "
                    f"({fastest.median_ms / 1000:.3f} s, {fastest.speedup:.2f}x fp32)")  # fmt: skip
    if torch_fastest is not None:
        report.line(f"fastest PyTorch precision (inference.json's auto_cpu_precision candidate): "
                    f"{PRECISION_PATHS[torch_fastest.name]} ({torch_fastest.speedup:.2f}x fp32)")  # fmt: skip


def _segmentation(seg, size, slices, window, args, device, report: Report) -> None:
    example = torch.randn(1, 1, slices, size, size, device=device)
    window_example = torch.randn(1, 1, min(window, slices), size, size, device=device)
    candidates = {
        name: _in_sliding_window(candidate, window, INFERENCE["overlap"], INFERENCE["sw_mode"])
        for name, candidate in candidate_paths(seg, window_example, skip_compile=args.skip_compile).items()
    }
    title = f"2. Segmentation per study: {slices} slices x {size} x {size}, window {window}"
    _paths(title, "segmentation", candidates, example, _argmax_agreement, args, report)


def _classification(classifier, crop, args, device, report: Report) -> None:
    example = torch.randn(1, 3, crop[0], crop[1], crop[1], device=device)
    title = f"3. Classification per vertebra crop {list(example.shape)} (ir-CSN-152)"
    candidates = candidate_paths(classifier, example, skip_compile=args.skip_compile)
    _paths(title, "classification", candidates, example, _decision_agreement, args, report)


def _training(seg: nn.Module, size: int, args, device, report: Report) -> None:
    batch = args.train_batch or (2 if args.quick else TRAIN["batch_size"])
    depth = 16 if args.quick else TRAIN["crop_slices"]
    steps = max(2, args.train_steps)
    images = torch.randn(batch, 1, depth, size, size)
    labels = torch.randint(0, 8, (batch, 1, depth, size, size))
    section = report.section("training", f"4. Stage-1 training, batch {list(images.shape)}")
    amp = device.type == "cuda"
    figures = {}
    for name in ("bare loop", "bundle trainer"):
        torch.manual_seed(args.seed)
        network = seg.to(device)
        optimizer = torch.optim.AdamW(decay_parameter_groups(network, TRAIN["weight_decay"]), lr=TRAIN["learning_rate"])
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps + 1, eta_min=1e-5)
        loss_fn = FocalJaccardLoss()
        clock = StepClock(device)
        if name == "bare loop":
            scaler = torch.amp.GradScaler(enabled=amp)
            for _ in range(steps + 1):
                x, y = images.to(device), labels.to(device)
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device.type, enabled=amp):
                    loss = loss_fn(network(x), y)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(network.parameters(), TRAIN["grad_clip"])
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                clock.tick()
        else:
            loader = [{"image": images, "label": labels}] * (steps + 1)
            handlers = [GradientClipping(TRAIN["grad_clip"]), LrScheduleHandler(scheduler, epoch_level=False, print_lr=False)]
            trainer = SupervisedTrainer(device, 1, loader, network, optimizer, loss_fn, train_handlers=handlers, amp=amp,
                                        optim_set_to_none=True)  # fmt: skip
            trainer.add_event_handler(Events.ITERATION_COMPLETED, clock.tick)
            trainer.run()
        figures[name] = clock.items_per_second(batch, warmup=1)
    section.update(samples_per_second=figures, amp=amp)
    report.table(["loop", "samples/s"], [[k, f"{v:.3f}"] for k, v in figures.items()])
    report.line(f"trainer / bare loop: {figures['bundle trainer'] / figures['bare loop']:.2f}")
