"""Speed figures of the fetal_cervix_ultrasound_segmentation bundle (FUGC 2025 7th place; see the bundle's
docs/README.md).

1. Parameters of the PVT-v2-b1 and ResNet34-D UNets (``networks.fugc_unet.FUGCUNet``): encoder / decoder / head,
   against the solution's ~17.1 M and ~23.9 M.
2. Inference per image (batch 1, ``3 x 336 x 544``, the challenge's size; FUGC ran its test on the CPU: the
   7th-place solution took 349.6 ms per image, the winner 315.9 ms) of each network and of the bundle's logit
   ensemble (``networks.ensemble.ProbabilityEnsemble`` with the identity, as ``inference.json``), through every
   path of ``benchmarks.common.candidate_paths`` (PyTorch eager fp32 / channels_last / bf16, TorchScript,
   compile, ONNX Runtime, OpenVINO fp32 / bf16), each with its label agreement with fp32 (argmax of the logits,
   fraction of the pixels); the fastest path keeping >= ``--min-agreement`` (99.5 %) is named, and the script
   ends with the path ``inference.json`` takes by default on this machine. Random weights unless
   ``--checkpoints`` gives the two trained ones (an untrained network's logits are near ties, so its agreement
   says little).
3. Training: seconds per iteration of the bundle's ``UniMatchTrainer`` (4 labelled + 4 unlabelled + 4 mix
   images, the recipe's batch) against a plain ``SupervisedTrainer`` iteration on 4 labelled images, for the PVT
   network, with train.json's losses and weights.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.engines import SupervisedTrainer

from benchmarks.common import (
    PathResult,
    Report,
    StepClock,
    argmax_agreement,
    benchmark_paths,
    candidate_paths,
    count_parameters,
    pick_fastest,
)
from engines.unimatch import UniMatchTrainer
from losses.unimatch import IgnoreMaskDiceLoss, unimatch_supervised_loss
from networks.checkpoint import load_weights
from networks.ensemble import ProbabilityEnsemble
from networks.fugc_unet import FUGCUNet

__all__ = ["add_arguments", "run"]

BUNDLE_CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "fetal_cervix_ultrasound_segmentation" / "configs"
TRAIN_CONFIG = ConfigParser.load_config_file(BUNDLE_CONFIGS / "train.json")
INFERENCE_CONFIG = ConfigParser.load_config_file(BUNDLE_CONFIGS / "inference.json")
CHALLENGE_SIZE = (336, 544)
NETWORKS = {
    "pvt_v2_b1": ("pvt_v2", INFERENCE_CONFIG["pvt_encoder_kwargs"], 17.1e6),
    "resnet34d": ("resnet_d", INFERENCE_CONFIG["resnet_encoder_kwargs"], 23.9e6),
}
#: ``--quick``: tiny networks and images so that a test runs the whole benchmark in seconds
QUICK_KWARGS = {
    "pvt_v2_b1": {"variant": "b1", "dims": [8, 16, 24, 32], "num_heads": [1, 1, 1, 2], "depths": [1, 1, 1, 1]},
    "resnet34d": {"variant": "resnet34d", "widths": [8, 16, 16, 24], "stem_width": 4, "layers": [1, 1, 1, 1]},
}
QUICK_SIZE = (64, 96)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of this benchmark (besides the script's common ones)."""
    parser.add_argument(
        "--checkpoints", type=Path, nargs=2, metavar=("PVT", "RESNET"),
        help="trained PVT-v2-b1 and ResNet34-D UNet checkpoints (runs/.../models/model.pt); default random weights",
    )  # fmt: skip
    parser.add_argument("--train-steps", type=int, default=4, help="timed training iterations (after 1 warm-up)")


def run(args: argparse.Namespace, device: torch.device, report: Report) -> None:
    """Measure the bundle on ``device`` and write the figures to ``report`` (see the module docstring)."""
    size = QUICK_SIZE if args.quick else ((args.image_size,) * 2 if args.image_size else CHALLENGE_SIZE)
    torch.manual_seed(args.seed)
    models = {}
    for index, (name, (encoder, kwargs, _)) in enumerate(NETWORKS.items()):
        model = FUGCUNet(encoder, encoder_kwargs=QUICK_KWARGS[name] if args.quick else kwargs)
        if args.checkpoints:
            load_weights(model, args.checkpoints[index])
        models[name] = model.eval().to(device)
    weights = "checkpoints " + ", ".join(map(str, args.checkpoints)) if args.checkpoints else "random init"
    report.section("setup", "Setup").update(image_size=list(size), weights=weights, quick=args.quick)
    report.line(f"networks: PVT-v2-b1 UNet and ResNet34-D UNet{' (tiny, --quick)' if args.quick else ''}; {weights}")
    _parameters(models, report, reference=not args.quick)
    _inference(models, size, device, args, report)
    _training(models["pvt_v2_b1"], size, device, args, report)


def _parameters(models: dict, report: Report, reference: bool) -> None:
    section = report.section("parameters", "1. Parameters")
    rows = []
    for name, model in models.items():
        counts = {part: count_parameters(getattr(model, part)) for part in ("encoder", "decoder", "head")}
        counts["total"] = count_parameters(model)
        section[name] = counts
        target = NETWORKS[name][2]
        note = f"{100 * (counts['total'] / target - 1):+.2f} % vs {target / 1e6:.1f} M" if reference else ""
        rows.append([name, *(f"{counts[k]:,}" for k in ("encoder", "decoder", "head", "total")), note])
    report.table(["network", "encoder", "decoder", "head", "total", "vs the solution"], rows)


def _compare(reference: torch.Tensor, output: torch.Tensor) -> dict:
    return {"agreement": argmax_agreement(reference, output)}


def _inference(models: dict, size: tuple[int, int], device: torch.device, args, report: Report) -> None:
    section = report.section("inference", f"2. Inference per image (batch 1), input [1, 3, {size[0]}, {size[1]}]")
    report.line(f"warm-up {args.warmup}, median of {args.repeats} runs; random image in [0, 1]")
    example = torch.rand(1, 3, *size, device=device)
    configurations = {**models, "logit ensemble": ProbabilityEnsemble(list(models.values()), torch.nn.Identity())}
    rows, path_rows = [], []
    for name, network in configurations.items():
        report.line(f"{name}:")
        candidates = candidate_paths(network.eval(), example, skip_compile=args.skip_compile)
        results = benchmark_paths(candidates, example, _compare, warmup=args.warmup, repeats=args.repeats,
                                  log=report.line)  # fmt: skip
        fastest = pick_fastest(results, args.min_agreement)
        section[name] = {"paths": [r.as_dict() for r in results], "fastest": fastest and fastest.name}
        path_rows += _path_rows(name, results)
        fp32 = results[0].median_ms
        rows.append([
            name, f"{fp32:.1f}" if fp32 else None, fastest and fastest.name,
            fastest and f"{fastest.median_ms:.1f}", fastest and f"{100 * fastest.agreement:.2f} %",
        ])  # fmt: skip
    report.line()
    report.table(["network", "path", "median ms", "speed-up", "agreement", "status / note"], path_rows)
    report.line()
    report.table(["network", "fp32 ms", f"fastest path (agreement >= {100 * args.min_agreement:g} %)", "ms",
                  "agreement"], rows)  # fmt: skip


def _path_rows(network: str, results: list[PathResult]) -> list[list[str | None]]:
    """One table row per path of ``network``: time, speed-up over fp32, label agreement with fp32, status."""
    return [
        [
            network,
            r.name,
            None if r.median_ms is None else f"{r.median_ms:.1f}",
            None if r.speedup is None else f"{r.speedup:.2f}x",
            None if r.agreement is None else f"{100 * r.agreement:.3f} %",
            r.note if r.ok else r.status,
        ]
        for r in results
    ]


def _loader(batches: list[dict], steps: int) -> list[dict]:
    return [batches[i % len(batches)] for i in range(steps)]


def _training(model: torch.nn.Module, size: tuple[int, int], device: torch.device, args, report: Report) -> None:
    section = report.section("training", "3. Training iteration, PVT network (4 + 4 + 4 images for UniMatch)")
    steps = args.train_steps + 1
    batch = int(TRAIN_CONFIG["batch_size"])
    labelled = {"image": torch.rand(batch, 3, *size), "label": torch.randint(0, 3, (batch, 1, *size))}
    box = torch.zeros(batch, 1, *size, dtype=torch.bool)
    box[:, :, : size[0] // 2, : size[1] // 2] = True
    unlabelled = {"image": torch.rand(batch, 3, *size), "image_s1": torch.rand(batch, 3, *size),
                  "image_s2": torch.rand(batch, 3, *size), "box_s1": box, "box_s2": box}  # fmt: skip
    timings = {}
    for name in ("supervised", "unimatch"):
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=TRAIN_CONFIG["learning_rate"])
        loss = unimatch_supervised_loss(TRAIN_CONFIG["ce_weight"], TRAIN_CONFIG["dice_weight"])
        common = dict(device=device, max_epochs=1, train_data_loader=_loader([labelled], steps), network=model,
                      optimizer=optimizer, loss_function=loss, epoch_length=steps)  # fmt: skip
        if name == "supervised":
            trainer = SupervisedTrainer(**common)
        else:
            trainer = UniMatchTrainer(
                **common, unlabelled_data_loader=_loader([unlabelled], steps), mix_data_loader=_loader([unlabelled], steps),
                unlabelled_loss_function=IgnoreMaskDiceLoss(3), conf_threshold=TRAIN_CONFIG["conf_threshold"],
                strong_weights=TRAIN_CONFIG["strong_weights"], fp_weight=TRAIN_CONFIG["fp_weight"],
                loss_scale=TRAIN_CONFIG["loss_scale"], semi_epoch_length=steps,
            )  # fmt: skip
        clock = StepClock(device)
        trainer.add_event_handler("ITERATION_COMPLETED", clock.tick)
        trainer.run()
        timings[name] = clock.seconds_per_step(warmup=1)
    section.update({f"{k}_seconds_per_iteration": v for k, v in timings.items()})
    report.table(["iteration", "s / iteration"], [[k, f"{v:.3f}"] for k, v in timings.items()])
    report.line(f"UniMatch / supervised: {timings['unimatch'] / timings['supervised']:.2f}x")
