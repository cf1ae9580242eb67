"""Speed figures of the angioma_ultrasound_segmentation bundle (CCF BDCI 2021 rank 1; see the bundle's docs/README.md).

1. Parameters of ``networks.linknet.LinkNet`` (EfficientNet-B6 encoder, 1 grey channel, 1 logit): encoder /
   decoder / head, reconciled with smp's 41,248,965, which also counts the EfficientNet classifier
   conv + BN that smp keeps but never runs and a 3-channel stem.
2. Inference per image (batch 1, ``1 x S x S``, default 256 as the recipe) of the three configurations of the
   README ablation, each returning probabilities as the bundle's ``networks.ensemble.ProbabilityEnsemble``:
   a single model; the single model under 8-way flip TTA (``inferers.FlipTTAInferer``: the 4 distinct flips whose
   mean equals the original's 8 ttach variants, batched as in ``inference.json``); and the 5 fold models x 8-way TTA.
   The single model runs through every path of ``benchmarks.common.candidate_paths``; the fastest one whose
   mask (probability >= 0.5) agrees with fp32's on >= ``--min-agreement`` (99.5 %) of the pixels is then also
   timed, and its agreement checked again, on the TTA and ensemble configurations. The fold models are randomly
   initialised (one seed each) unless ``--checkpoints`` gives trained ones: an untrained network's
   probabilities sit near 0.5 or saturate, so its agreement figures say little about a trained one's.
3. Post-processing per image at the synthetic image's own size (375-490 x 230-320 px, as the challenge's):
   resize of the probabilities back (the bundle's ``Invertd``), threshold, RSIP
   (``transforms.postprocessing.RemoveSmallComponentsd``) and EMF (19 x 19 median) - on the CPU, whatever the device
   of the network.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.transforms import AsDiscreted
from monai.utils import convert_to_tensor
from torch import nn

from benchmarks.common import (
    Candidate,
    PathResult,
    Report,
    benchmark_paths,
    candidate_paths,
    count_parameters,
    pick_fastest,
    time_inference,
)
from data.ccf_bdci import train_datalist
from data.synthetic.angioma_ultrasound_segmentation import generate
from inferers.flip_tta import FlipTTAInferer
from networks.checkpoint import load_weights
from networks.ensemble import ProbabilityEnsemble
from networks.linknet import LinkNet
from transforms.angioma import angioma_postprocessing

__all__ = ["add_arguments", "run"]

BUNDLE_CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "angioma_ultrasound_segmentation" / "configs"
#: the bundle's inference settings: image size (the recipe's 256), encoder, preprocessing, threshold, RSIP, EMF
INFERENCE_CONFIG = ConfigParser.load_config_file(BUNDLE_CONFIGS / "inference.json")
RECIPE_SIZE = INFERENCE_CONFIG["image_size"]
RECIPE_ENCODER, RECIPE_ENCODER_KWARGS = INFERENCE_CONFIG["encoder"], INFERENCE_CONFIG["encoder_kwargs"]
SMP_TOTAL = 41_248_965  # smp Linknet(efficientnet-b6, in_channels=1, classes=1)
SMP_UNUSED = 1_331_712  # smp keeps the EfficientNet-B6 _conv_head + _bn1 in its encoder, never run
RGB_STEM_EXTRA = 56 * 2 * 3 * 3  # smp counts the stem conv for 3 channels
#: ``--quick``: a tiny network so that a test runs the whole benchmark in seconds.
QUICK_ENCODER, QUICK_ENCODER_KWARGS = "resnet", {"variant": "resnet18", "widen_factor": 0.25}
QUICK_IMAGE_SIZE, QUICK_FOLDS = 64, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of this benchmark (besides the script's common ones)."""
    parser.add_argument(
        "--encoder",
        default=RECIPE_ENCODER,
        help=f"LinkNet encoder family of networks.encoders (default {RECIPE_ENCODER}); ignored with --quick",
    )
    parser.add_argument(
        "--encoder-kwargs",
        type=json.loads,
        default=RECIPE_ENCODER_KWARGS,
        help='JSON keyword arguments of the encoder builder (default \'{"variant": "b6"}\'), e.g. '
        '\'{"variant": "resnet18", "widen_factor": 0.5}\' for the demo network',
    )
    parser.add_argument(
        "--checkpoints",
        type=Path,
        nargs="+",
        help="trained fold checkpoints (runs/.../fold*/models/model.pt), one per fold model; the first is the single "
        "model; default: random initialisation",
    )
    parser.add_argument("--folds", type=int, help="fold models of the ensemble (default 5, 2 with --quick)")
    parser.add_argument(
        "--tta-loop",
        action="store_true",
        help="run the TTA variants one after the other instead of as one batch (the bundle's tta_batch_variants)",
    )
    parser.add_argument("--skip-ensemble", action="store_true", help="measure the single model and its TTA only")


def run(args: argparse.Namespace, device: torch.device, report: Report) -> None:
    """Measure the bundle on ``device`` and write the figures to ``report`` (see the module docstring)."""
    encoder, encoder_kwargs = (QUICK_ENCODER, QUICK_ENCODER_KWARGS) if args.quick else (args.encoder, args.encoder_kwargs)
    size = args.image_size or (QUICK_IMAGE_SIZE if args.quick else RECIPE_SIZE)
    folds = len(args.checkpoints) if args.checkpoints else args.folds or (QUICK_FOLDS if args.quick else 5)
    if size < 32 or size % 32 or folds < 1:
        raise ValueError(f"need an image size divisible by 32 and at least one fold, got {size} and {folds}")

    models = []
    for fold in range(folds):
        torch.manual_seed(args.seed + fold)
        model = LinkNet(encoder, encoder_kwargs=encoder_kwargs)
        if args.checkpoints:
            load_weights(model, args.checkpoints[fold])
        models.append(model.eval().to(device))
    weights = (
        "checkpoints " + ", ".join(map(str, args.checkpoints))
        if args.checkpoints
        else f"random init (seeds {args.seed}..{args.seed + folds - 1})"
    )
    setup = report.section("setup", "Setup")
    setup.update(encoder=encoder, encoder_kwargs=encoder_kwargs, image_size=size, folds=folds, weights=weights)
    report.line(f"network: LinkNet, encoder {encoder} {encoder_kwargs or ''}; {folds} fold model(s); {weights}")

    _parameters(models[0], report, reference=encoder == RECIPE_ENCODER and encoder_kwargs == RECIPE_ENCODER_KWARGS)

    with tempfile.TemporaryDirectory(prefix="benchmark_angioma_") as tmp:
        generate(Path(tmp), cases=1, seed=args.seed, test_cases=0)
        item = train_datalist(tmp)[0]
        bundle = _bundle_parser(size)
        data = bundle.get_parsed_content("preprocessing")({"image": item["image"]})
    source = (
        f"synthetic image of data.synthetic.angioma_ultrasound_segmentation (seed {args.seed}, "
        f"{tuple(int(s) for s in data['image'].meta['spatial_shape'])} px), read by inference.json's preprocessing"
    )
    example = convert_to_tensor(data["image"], track_meta=False).unsqueeze(0).to(device)
    tta = FlipTTAInferer(batch_variants=not args.tta_loop)
    configurations = {
        "single model": ProbabilityEnsemble(models[:1]),
        "8-way TTA": ProbabilityEnsemble(models[:1], inferer=tta),
    }
    if not args.skip_ensemble:
        configurations[f"{folds} folds x 8-way TTA"] = ProbabilityEnsemble(models, inferer=tta)
    probability = _inference(configurations, example, source, args, report)
    _postprocessing(data, bundle, probability, args, report)


def _bundle_parser(image_size: int) -> ConfigParser:
    """The bundle's ``inference.json`` at ``image_size``."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE_CONFIGS / "inference.json"))
    parser["image_size"] = image_size
    return parser


# ----------------------------------------------------------------------------------------------- 1. parameters


def _parameters(net: LinkNet, report: Report, reference: bool) -> None:
    counts = {
        "encoder": count_parameters(net.encoder),
        "decoder": count_parameters(net.decoder),
        "head": count_parameters(net.head),
        "total": count_parameters(net),
    }
    section = report.section("parameters", "1. Parameters")
    section["counts"] = counts
    report.table(
        ["part", "parameters", "millions"], [[name, f"{count:,}", f"{count / 1e6:.3f}"] for name, count in counts.items()]
    )
    if reference:
        smp = counts["total"] + SMP_UNUSED + RGB_STEM_EXTRA
        section["smp_total"] = smp
        report.line(
            f"smp Linknet-B6: {SMP_TOTAL:,} = this {counts['total']:,} + EfficientNet classifier conv + BN "
            f"kept but never run by smp {SMP_UNUSED:,} + 3-channel stem {RGB_STEM_EXTRA:,} = {smp:,}"
            + ("" if smp == SMP_TOTAL else "  (MISMATCH)")
        )


# ----------------------------------------------------------------------------------------------- 2. inference


def _mask_agreement(reference: torch.Tensor, output: torch.Tensor) -> dict[str, Any]:
    """Fraction of pixels whose mask (probability >= 0.5) equals fp32's, and the predicted lesion fraction."""
    ref, out = reference.float() >= 0.5, output.float() >= 0.5
    return {"agreement": (ref == out).float().mean().item(), "lesion_fraction": out.float().mean().item()}


def _fmt(value: float | None, spec: str, suffix: str = "") -> str | None:
    return None if value is None else f"{value:{spec}}{suffix}"


def _rows(config: str, results: Sequence[PathResult]) -> list[list[Any]]:
    return [
        [
            config,
            r.name,
            _fmt(r.median_ms, ".1f"),
            _fmt(r.stats and r.stats.min_ms, ".1f"),
            _fmt(r.speedup, ".2f", "x"),
            _fmt(r.first_call_ms, ".0f"),
            _fmt(None if r.agreement is None else 100 * r.agreement, ".3f", "%"),
            _fmt(r.stats and r.stats.peak_memory_mb, ".0f"),
            r.status if not r.ok else r.note,
        ]
        for r in results
    ]


def _inference(
    configurations: dict[str, nn.Module],
    example: torch.Tensor,
    source: str,
    args: argparse.Namespace,
    report: Report,
) -> torch.Tensor:
    """Time every configuration; return the single model's fp32 probabilities (for the post-processing)."""
    section = report.section("inference", f"2. Inference per image (batch 1), input {list(example.shape)}")
    section.update(input=source, input_shape=list(example.shape), min_agreement=args.min_agreement)
    report.line(f"input: {source}")
    if not args.checkpoints:
        report.line(
            "note: untrained networks give probabilities near 0.5 or saturated everywhere, so the agreement figures "
            "may be misleading; pass --checkpoints for trained fold models"
        )
    report.line(f"warm-up {args.warmup}, median of {args.repeats} runs; first call = build + first run")
    rows: list[list[Any]] = []
    fastest: PathResult | None = None
    probability = torch.empty(0)
    section["configurations"] = {}
    for index, (config, model) in enumerate(configurations.items()):
        candidates = candidate_paths(model, example, skip_compile=args.skip_compile)
        if index > 0:  # the other configurations: fp32 and the single model's fastest path
            keep = {"fp32"} | ({fastest.name} if fastest is not None else set())
            candidates = {name: c for name, c in candidates.items() if name in keep}
        report.line(f"{config}:")
        results = benchmark_paths(
            candidates, example, _mask_agreement, warmup=args.warmup, repeats=args.repeats, log=report.line
        )
        if index == 0:
            fastest = pick_fastest(results, args.min_agreement)
            probability = _fp32_output(candidates["fp32"], example)
        section["configurations"][config] = {"paths": [r.as_dict() for r in results]}
        rows += _rows(config, results)
    section["fastest"] = None if fastest is None else fastest.name
    report.line()
    report.table(
        ["configuration", "path", "median ms", "min ms", "speed-up", "first call ms", "mask agree", "peak MB",
         "status / note"],
        rows,
    )  # fmt: skip
    if fastest is not None:
        report.line(
            f"fastest path with mask agreement >= {100 * args.min_agreement:g} % on the single model: {fastest.name} "
            f"({fastest.median_ms:.1f} ms, {fastest.speedup:.2f}x fp32); its agreement on TTA and the ensemble is in "
            "the table"
        )
    return probability


def _fp32_output(candidate: Candidate, example: torch.Tensor) -> torch.Tensor:
    fn, _ = candidate.build()
    return fn(example)[0].detach().float().cpu()


# ----------------------------------------------------------------------------------------------- 3. post-processing


def _postprocessing(
    data: dict, bundle: ConfigParser, probability: torch.Tensor, args: argparse.Namespace, report: Report
) -> None:
    shape = tuple(int(s) for s in data["image"].meta["spatial_shape"])
    section = report.section("postprocessing", f"3. Post-processing per image at {shape[0]} x {shape[1]} px (CPU)")
    restore = bundle.get_parsed_content("restore")  # Invertd of the preprocessing that read ``data``
    threshold, rsip_max_size, emf_window = (bundle[key] for key in ("threshold", "rsip_max_size", "emf_window"))
    binarize = AsDiscreted("pred", threshold=threshold)
    restored = restore({**data, "pred": probability})["pred"]
    mask = binarize({"pred": restored})["pred"]
    steps: dict[str, tuple[Callable[[torch.Tensor], Any], torch.Tensor]] = {
        "resize back (Invertd, bicubic)": (lambda p: restore({**data, "pred": p}), probability),
        f"threshold {threshold:g}": (lambda p: binarize({"pred": p}), restored),
        f"RSIP (components <= {rsip_max_size} px)": (
            _postprocessing_step(max_size=rsip_max_size, median_window=1), mask
        ),
        f"EMF ({emf_window} x {emf_window} median)": (_postprocessing_step(max_size=0, median_window=emf_window), mask),
    }
    rows, figures = [], {}
    for name, (fn, tensor) in steps.items():
        stats = time_inference(fn, tensor, warmup=args.warmup, repeats=args.repeats)
        figures[name] = stats.as_dict()
        rows.append([name, f"{stats.median_ms:.1f}", f"{stats.min_ms:.1f}"])
    total = sum(f["median_ms"] for f in figures.values())
    rows.append(["total", f"{total:.1f}", None])
    section.update(shape=list(shape), steps=figures, total_ms=total)
    report.table(["step", "median ms", "min ms"], rows)


def _postprocessing_step(max_size: int, median_window: int) -> Callable[[torch.Tensor], Any]:
    """One step of the bundle's post-processing as a function of the mask."""
    transform = angioma_postprocessing("pred", max_size=max_size, median_window=median_window)
    return lambda mask: transform({"pred": mask})
