"""Speed figures of the carotid_plaque_ultrasound bundle (MAGNET, CSV 2026 4th place; lyyek/CSV2026; see the bundle's docs).

1. Parameters of ``networks.magnet.MagnetNet``: total and the encoder / extra stem / decoders / head split,
   beside the figures computed from the original (nano encoder). The network is the bundle's ``network_def``
   (``configs/train.json``) unless ``--encoder`` / ``--depths`` / ``--dims`` or ``--quick`` choose another.
2. Inference per case (batch 1: both views + risk classification, ``--image-size``, default 512) in fp32 eager
   and in every path of ``benchmarks.common.candidate_paths``, each with its segmentation argmax agreement with
   fp32 over both views and whether its risk class (sigmoid >= 0.5) agrees; the fastest path keeping the
   agreement >= ``--min-agreement`` (99.5 %) is named. The input is a synthetic case of
   ``data.synthetic.carotid_plaque_ultrasound`` read by the bundle's own validation preprocessing. The
   network is randomly initialised unless ``--checkpoint`` gives trained weights: an untrained network's
   logits are near ties, so its agreement figures say little about a trained one's.
3. Training samples per second of the bundle's trainer (MONAI ``SupervisedTrainer`` with ``MagnetLoss``,
   AdamW, ``PrepareBatchMultiTarget``, accumulation and learning rate of train.json, AMP on CUDA) against a bare
   PyTorch loop doing the same forward / backward / step by hand, on the same network weights and the same
   pre-built batches held in device memory (data loading excluded); their ratio is the framework overhead.
   The trainer runs again on the same batches as ``MetaTensor`` (what a MONAI DataLoader yields), and
   ``engines.mean_teacher.MeanTeacherTrainer`` in its Mean Teacher phase is added when it imports.
   On CUDA both run with fp16 autocast + GradScaler; on the CPU in fp32 (MONAI's ``amp`` is CUDA-only).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.engines import SupervisedTrainer
from monai.utils import convert_to_tensor
from monai.utils.enums import CommonKeys
from torch import nn

from benchmarks.common import (
    PeakMemory,
    Report,
    StepClock,
    argmax_agreement,
    benchmark_paths,
    candidate_paths,
    count_parameters,
    failure_reason,
    pick_fastest,
)
from data.csv2026 import load_csv2026_datalist
from data.synthetic.carotid_plaque_ultrasound import generate
from engines.prepare_batch import PrepareBatchMultiTarget
from losses.magnet import MagnetLoss
from networks.checkpoint import load_weights
from networks.encoders.convnext import CONVNEXT_VARIANTS
from networks.magnet import MagnetNet, split_views_output

__all__ = ["add_arguments", "run"]

BUNDLE_CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "carotid_plaque_ultrasound" / "configs"
#: the bundle's training settings: classes, gradient accumulation, AdamW, image size (the organisers' 512)
TRAIN_CONFIG = ConfigParser.load_config_file(BUNDLE_CONFIGS / "train.json")
NUM_CLASSES = TRAIN_CONFIG["num_classes"]
CLASS_NAMES = ("background", "plaque", "vessel")  # class indices 0, 1, 2 (CONTRIBUTING.md)
ACCUMULATION_STEPS = TRAIN_CONFIG["accumulation_steps"]
LEARNING_RATE, WEIGHT_DECAY = TRAIN_CONFIG["learning_rate"], TRAIN_CONFIG["weight_decay"]
CHALLENGE_SIZE = TRAIN_CONFIG["image_size"]
#: ``--quick``: a tiny network so that a test runs the whole benchmark in seconds.
QUICK_NETWORK: dict[str, Any] = {"depths": (1, 1, 1, 1), "dims": (8, 16, 32, 64), "morph_dim": 8, "cls_hidden": (16,)}
QUICK_IMAGE_SIZE = 64
#: parameters computed from the original MAGNET with the nano encoder.
REFERENCE_PARAMETERS = {
    "encoder": 14.95e6,
    "extra_stem": 0.9e3,
    "decoder_long": 4.91e6,
    "decoder_trans": 4.91e6,
    "head": 0.85e6,
    "total": 25.6e6,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of this benchmark (besides the script's common ones)."""
    parser.add_argument(
        "--encoder",
        choices=sorted(CONVNEXT_VARIANTS),
        help="ConvNeXt variant of the encoder (default: the bundle's network_def, nano as MAGNET's); ignored with "
        "--quick",
    )
    parser.add_argument("--depths", type=int, nargs=4, help="encoder depths, overriding --encoder's (e.g. a demo model)")
    parser.add_argument("--dims", type=int, nargs=4, help="encoder widths, overriding --encoder's")
    parser.add_argument(
        "--standardize-cls-inputs",
        action="store_true",
        help="the risk head's inputs standardised by running statistics, as the demo configuration trains it",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="trained weights: a MONAI CheckpointSaver file ({'network': state_dict} or {'model': ...}) or a plain "
        "state_dict; default: random initialisation",
    )
    parser.add_argument(
        "--train-image-size", type=int, help="training image side (default 512 on cuda, 256 on cpu, 64 with --quick)"
    )
    parser.add_argument("--train-batch-size", type=int, help="training batch size (default 4, 2 with --quick)")
    parser.add_argument(
        "--train-iterations",
        type=int,
        help="timed training iterations per loop (default 20 on cuda, 4 on cpu, 2 with --quick)",
    )
    parser.add_argument(
        "--train-warmup",
        type=int,
        help=f"untimed training iterations before them, >= 1 (default {2 * ACCUMULATION_STEPS} on cuda, "
        f"{ACCUMULATION_STEPS} otherwise)",
    )
    parser.add_argument("--skip-training", action="store_true", help="measure parameters and inference only")


def run(args: argparse.Namespace, device: torch.device, report: Report) -> None:
    """Measure the bundle on ``device`` and write the figures to ``report`` (see the module docstring)."""
    settings = _settings(args, device)
    torch.manual_seed(args.seed)
    network_kwargs, net = _network(args)
    weights = f"random init (seed {args.seed})"
    if args.checkpoint is not None:
        load_weights(net, args.checkpoint)
        weights = f"checkpoint {args.checkpoint}"
    net = net.to(device)

    setup = report.section("setup", "Setup")
    setup.update(settings, network=_jsonable(network_kwargs), weights=weights)
    encoder = "quick (tiny)" if args.quick else args.encoder or "of the bundle's network_def"
    report.line(f"network: MagnetNet, encoder {encoder}: {_jsonable(network_kwargs)}")
    report.line(f"weights: {weights}")
    report.line("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))

    nano = args.encoder in (None, "nano") and not (args.depths or args.dims)
    _parameters(net, report, reference=not args.quick and nano)

    cases_needed = 1 if args.skip_training else max(2, 2 * settings["train_batch_size"])
    generated_size = QUICK_IMAGE_SIZE if args.quick else CHALLENGE_SIZE
    with tempfile.TemporaryDirectory(prefix="benchmark_carotid_") as tmp:
        generate(Path(tmp), cases_needed, args.seed, size=generated_size, unlabelled_fraction=0.0)
        labelled, _ = load_csv2026_datalist(tmp)
        source = (
            f"synthetic case {labelled[0]['case']} of data.synthetic.carotid_plaque_ultrasound (seed {args.seed}, "
            f"{generated_size} px), read and resized by train.json's validate#preprocessing"
        )
        example = _load_cases(labelled[:1], settings["image_size"])[0]["image"].unsqueeze(0).to(device)
        train_items = None if args.skip_training else _load_cases(labelled, settings["train_image_size"])

    _inference(net, example, source, weights, args, report)
    if train_items is not None:
        _training(net, train_items, device, settings, args.seed, report)


# ----------------------------------------------------------------------------------------------- setup


def _settings(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    cuda = device.type == "cuda"
    quick = args.quick

    def pick(value: int | None, quick_default: int, cuda_default: int, cpu_default: int) -> int:
        if value is not None:
            return value
        return quick_default if quick else cuda_default if cuda else cpu_default

    settings = {
        "image_size": pick(args.image_size, QUICK_IMAGE_SIZE, CHALLENGE_SIZE, CHALLENGE_SIZE),
        "train_image_size": pick(args.train_image_size, QUICK_IMAGE_SIZE, CHALLENGE_SIZE, 256),
        "train_batch_size": pick(args.train_batch_size, 2, 4, 4),
        "train_iterations": pick(args.train_iterations, 2, 20, 4),
        "train_warmup": pick(args.train_warmup, ACCUMULATION_STEPS, 2 * ACCUMULATION_STEPS, ACCUMULATION_STEPS),
        "accumulation_steps": ACCUMULATION_STEPS,
        "train_amp": cuda,
    }
    for key in ("image_size", "train_image_size", "train_batch_size", "train_iterations", "train_warmup"):
        if settings[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be at least 1, got {settings[key]}")
    return settings


def _bundle_parser(image_size: int | None = None) -> ConfigParser:
    """The bundle's ``train.json``, at ``image_size`` if given."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE_CONFIGS / "train.json"))
    if image_size is not None:
        parser["image_size"] = image_size
    return parser


def _network(args: argparse.Namespace) -> tuple[dict[str, Any], MagnetNet]:
    """The timed network and its arguments: the bundle's ``network_def`` unless the options choose another."""
    if args.quick:
        return dict(QUICK_NETWORK), MagnetNet(**QUICK_NETWORK)
    if args.encoder or args.depths or args.dims:
        variant = CONVNEXT_VARIANTS[args.encoder or "nano"]
        depths = tuple(args.depths) if args.depths else variant["depths"]
        dims = tuple(args.dims) if args.dims else variant["dims"]
        kwargs = {
            "depths": depths,
            "dims": dims,
            "conv_mlp": variant["conv_mlp"],
            "standardize_cls_inputs": args.standardize_cls_inputs,
        }
        return kwargs, MagnetNet(**kwargs)
    parser = _bundle_parser()
    names = [key for key in parser["network_def"] if not key.startswith("_")]
    kwargs = {key: parser.get_parsed_content(f"network_def#{key}") for key in names}
    return kwargs, parser.get_parsed_content("network_def")


def _jsonable(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}


def _load_cases(items: Sequence[dict], size: int) -> list[dict[str, torch.Tensor]]:
    """Read labelled cases with the bundle's validation transforms at ``size``: plain tensors (not
    ``MetaTensor``) ``image`` (2, H, W), ``label`` int64 (2, H, W), ``cls`` (1,)."""
    transform = _bundle_parser(size).get_parsed_content("validate#preprocessing")
    cases = []
    for item in items:
        data = transform(dict(item))
        cases.append({key: convert_to_tensor(data[key], track_meta=False) for key in ("image", "label", "cls")})
    return cases


# ----------------------------------------------------------------------------------------------- 1. parameters


def _parameters(net: MagnetNet, report: Report, reference: bool) -> None:
    parts: dict[str, list[nn.Module]] = {
        "encoder": [net.encoder],
        "extra_stem": [net.extra_stem],
        "decoder_long": [net.decoder_long, net.head_long],
        "decoder_trans": [net.decoder_trans, net.head_trans],
        "head": [net.morph_proj, net.cls_head],
    }
    counts = {name: sum(count_parameters(m) for m in modules) for name, modules in parts.items()}
    counts["total"] = count_parameters(net)
    section = report.section("parameters", "1. Parameters")
    section["counts"] = counts
    section["reference"] = REFERENCE_PARAMETERS if reference else None
    labels = {
        "encoder": "encoder (ConvNeXt, shared by both views)",
        "extra_stem": "extra stem (H/2 skip)",
        "decoder_long": "decoder + 1x1 head, longitudinal view",
        "decoder_trans": "decoder + 1x1 head, transverse view",
        "head": "risk head (morphology projection + MLP)",
        "total": "total",
    }
    rows = []
    for name, count in counts.items():
        expected = f"{REFERENCE_PARAMETERS[name] / 1e6:.4g}" if reference else None
        rows.append([labels[name], f"{count:,}", f"{count / 1e6:.3f}", expected])
    report.table(["part", "parameters", "millions", "MAGNET (M)" if reference else "reference"], rows)


# ----------------------------------------------------------------------------------------------- 2. inference


def _compare(reference: torch.Tensor, output: torch.Tensor) -> dict[str, Any]:
    """Segmentation argmax agreement over both views (and per view), agreement of the risk class, and the
    fraction of pixels of each predicted class (both views)."""
    ref_long, ref_trans, ref_risk = split_views_output(reference.float(), NUM_CLASSES)
    out_long, out_trans, out_risk = split_views_output(output.float(), NUM_CLASSES)
    ref_high, out_high = torch.sigmoid(ref_risk) >= 0.5, torch.sigmoid(out_risk) >= 0.5
    pred = torch.cat([out_long, out_trans]).argmax(dim=1)
    return {
        "agreement": argmax_agreement(torch.cat([ref_long, ref_trans]), torch.cat([out_long, out_trans])),
        "agreement_long": argmax_agreement(ref_long, out_long),
        "agreement_trans": argmax_agreement(ref_trans, out_trans),
        "risk_agrees": bool((ref_high == out_high).all()),
        "risk_probability": torch.sigmoid(out_risk).tolist(),
        "class_fractions": {name: (pred == c).float().mean().item() for c, name in enumerate(CLASS_NAMES)},
    }


def _inference(
    net: MagnetNet, example: torch.Tensor, source: str, weights: str, args: argparse.Namespace, report: Report
) -> None:
    size = tuple(example.shape)
    section = report.section("inference", f"2. Inference per case (batch 1, both views + risk), input {list(size)}")
    section.update(input=source, input_shape=list(size), weights=weights, min_agreement=args.min_agreement)
    report.line(f"input: {source}")
    report.line(f"weights: {weights}")
    if args.checkpoint is None:
        report.line(
            "note: an untrained network's logits are near ties (or one class everywhere), so the agreement "
            "figures below may be misleading; pass --checkpoint for trained weights"
        )
    report.line(f"warm-up {args.warmup}, median of {args.repeats} runs; first call = build + first run")
    results = benchmark_paths(
        candidate_paths(net, example, skip_compile=args.skip_compile),
        example,
        _compare,
        warmup=args.warmup,
        repeats=args.repeats,
        log=report.line,
    )
    section["paths"] = [r.as_dict() for r in results]
    rows = []
    for r in results:
        stats = r.stats
        rows.append(
            [
                r.name,
                _fmt(r.median_ms, ".1f"),
                _fmt(stats and stats.min_ms, ".1f"),
                _fmt(r.speedup, ".2f", "x"),
                _fmt(r.first_call_ms, ".0f"),
                _fmt(None if r.agreement is None else 100 * r.agreement, ".3f", "%"),
                None if not r.ok else ("yes" if r.details["risk_agrees"] else "NO"),
                _fmt(stats and stats.peak_memory_mb, ".0f"),
                _fmt(stats and stats.memory_delta_mb, ".0f"),
                r.status if not r.ok else r.note,
            ]
        )
    report.line()
    report.table(
        ["path", "median ms", "min ms", "speed-up", "first call ms", "seg agree", "risk agrees", "peak MB",
         "+MB", "status / note"],
        rows,
    )
    memory_kind = next((r.stats.memory_kind for r in results if r.stats is not None), "")
    report.line(f"peak MB: {memory_kind}; +MB: above the memory at the start of the timed runs")
    report.line(
        "fp32 prediction: "
        + ", ".join(f"{name} {100 * value:.1f} %" for name, value in results[0].details["class_fractions"].items())
        + " of the pixels of both views"
    )
    fastest = pick_fastest(results, args.min_agreement)
    section["fastest"] = None if fastest is None else fastest.name
    if fastest is not None:
        report.line(
            f"fastest path with seg argmax agreement >= {100 * args.min_agreement:g} %: {fastest.name} "
            f"({fastest.median_ms:.1f} ms, {fastest.speedup:.2f}x fp32; risk class "
            f"{'agrees' if fastest.details['risk_agrees'] else 'DIFFERS'})"
        )


def _fmt(value: float | None, spec: str, suffix: str = "") -> str | None:
    return None if value is None else f"{value:{spec}}{suffix}"


# ----------------------------------------------------------------------------------------------- 3. training


def _batches(
    cases: Sequence[dict[str, torch.Tensor]], batch_size: int, count: int, device: torch.device
) -> list[dict[str, torch.Tensor]]:
    """``count`` batches cycling over the distinct ones made of ``cases`` (reused objects: no copies)."""
    distinct = []
    for start in range(0, len(cases), batch_size):
        group = [cases[(start + j) % len(cases)] for j in range(batch_size)]
        distinct.append({key: torch.stack([c[key] for c in group]).to(device) for key in ("image", "label", "cls")})
    return [distinct[i % len(distinct)] for i in range(count)]


def _unlabelled_batches(batches: Sequence[dict[str, torch.Tensor]], seed: int) -> list[dict[str, torch.Tensor]]:
    """Weak view = the batch image, strong view = it plus Gaussian noise (the cost of the real strong
    augmentation is in data loading, which is excluded)."""
    generator = torch.Generator().manual_seed(seed)
    views: dict[int, dict[str, torch.Tensor]] = {}
    for batch in batches:
        if id(batch) not in views:
            image = batch["image"]
            noise = torch.randn(image.shape, generator=generator).to(image.device)
            views[id(batch)] = {"image": image, "image_strong": (image + 0.05 * noise).clamp(0, 1)}
    return [views[id(batch)] for batch in batches]


def _metatensor_batches(batches: Sequence[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """The same batches with ``image`` and ``label`` as ``MetaTensor`` (sharing the data), as MONAI's
    DataLoader collates them from transform outputs."""
    wrapped: dict[int, dict[str, torch.Tensor]] = {}
    for batch in batches:
        if id(batch) not in wrapped:
            wrapped[id(batch)] = {**batch, "image": MetaTensor(batch["image"]), "label": MetaTensor(batch["label"])}
    return [wrapped[id(batch)] for batch in batches]


def _new_optimizer(net: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(net.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)


def _bare_loop(
    net: nn.Module, batches: Sequence[dict[str, torch.Tensor]], device: torch.device, amp: bool, clock: StepClock
) -> float:
    """The trainer's step by hand: zero_grad at the start of each accumulation window, forward (autocast on
    CUDA), loss / accumulation, backward (GradScaler on CUDA), step at the end of each window / the epoch."""
    optimizer = _new_optimizer(net)
    loss_function = MagnetLoss(split_views_output)
    scaler = torch.GradScaler("cuda") if amp else None
    net.train()
    loss = torch.zeros(())
    for index, batch in enumerate(batches):
        image = batch["image"].to(device)
        targets = {key: batch[key].to(device) for key in ("label", "cls")}
        if index % ACCUMULATION_STEPS == 0:
            optimizer.zero_grad(set_to_none=False)
        with torch.autocast("cuda") if amp else contextlib.nullcontext():
            loss = loss_function(net(image), targets).mean()
        scaled = loss / ACCUMULATION_STEPS
        if scaler is not None:
            scaler.scale(scaled).backward()
        else:
            scaled.backward()
        if (index + 1) % ACCUMULATION_STEPS == 0 or index + 1 == len(batches):
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
        clock.tick()
    return float(loss.detach())


def _last_loss(trainer: Any) -> float:
    output = trainer.state.output
    if isinstance(output, list):  # decollated
        output = output[0]
    return float(output[CommonKeys.LOSS])


def _supervised_trainer(
    net: nn.Module, batches: Sequence[dict[str, torch.Tensor]], device: torch.device, amp: bool, clock: StepClock
) -> float:
    from ignite.engine import Events

    trainer = SupervisedTrainer(
        device=device,
        max_epochs=1,
        train_data_loader=batches,
        network=net,
        optimizer=_new_optimizer(net),
        loss_function=MagnetLoss(split_views_output),
        prepare_batch=PrepareBatchMultiTarget(target_keys=("label", "cls")),
        amp=amp,
        accumulation_steps=ACCUMULATION_STEPS,
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED, clock.tick)
    trainer.run()
    return _last_loss(trainer)


def _mean_teacher_trainer(seed: int) -> Callable[..., float]:
    """The Mean Teacher phase of ``MeanTeacherTrainer`` (import deferred: it is optional here)."""
    from ignite.engine import Events

    from engines.mean_teacher import ConsistencyTerm, MeanTeacherTrainer
    from losses.consistency import ConfidenceGatedConsistencyLoss, TopKPlaqueConsistencyLoss
    from networks.magnet import risk_logit, view_logits_as_batch

    def loop(
        net: nn.Module, batches: Sequence[dict[str, torch.Tensor]], device: torch.device, amp: bool, clock: StepClock
    ) -> float:
        trainer = MeanTeacherTrainer(
            device=device,
            max_epochs=1,
            train_data_loader=batches,
            network=net,
            optimizer=_new_optimizer(net),
            loss_function=MagnetLoss(split_views_output),
            teacher_network=copy.deepcopy(net),
            unlabelled_data_loader=_unlabelled_batches(batches, seed),
            consistency={
                "cons_seg": ConsistencyTerm(TopKPlaqueConsistencyLoss(), 0.01, output_transform=view_logits_as_batch),
                "cons_cls": ConsistencyTerm(ConfidenceGatedConsistencyLoss(), 0.015, output_transform=risk_logit),
            },
            warmup_epochs=0,
            prepare_batch=PrepareBatchMultiTarget(target_keys=("label", "cls")),
            amp=amp,
            accumulation_steps=ACCUMULATION_STEPS,
        )
        trainer.add_event_handler(Events.ITERATION_COMPLETED, clock.tick)
        trainer.run()
        return _last_loss(trainer)

    return loop


def _training(
    net: MagnetNet,
    cases: Sequence[dict[str, torch.Tensor]],
    device: torch.device,
    settings: dict[str, Any],
    seed: int,
    report: Report,
) -> None:
    batch_size, warmup = settings["train_batch_size"], settings["train_warmup"]
    batches = _batches(cases, batch_size, warmup + settings["train_iterations"], device)
    amp = settings["train_amp"]
    size = settings["train_image_size"]
    section = report.section(
        "training",
        f"3. Training samples/s (batch {batch_size}, {size}x{size}, {'fp16 AMP' if amp else 'fp32'}, "
        f"accumulation {ACCUMULATION_STEPS})",
    )
    report.line(
        f"{len(batches)} iterations per loop, the first {warmup} untimed; batches pre-built in "
        f"{device.type} memory (no data loading); every loop starts from the same weights and seed"
    )
    loops: list[tuple[str, Callable[..., float] | None, list[dict[str, torch.Tensor]], str]] = [
        ("bare PyTorch loop", _bare_loop, batches, ""),
        ("SupervisedTrainer (bundle)", _supervised_trainer, batches, ""),
        ("SupervisedTrainer, MetaTensor batches", _supervised_trainer, _metatensor_batches(batches), ""),
    ]
    try:
        loops.append(("MeanTeacherTrainer, MT phase", _mean_teacher_trainer(seed), batches, ""))
    except ImportError as error:
        loops.append(("MeanTeacherTrainer, MT phase", None, batches, f"skipped: {error}"))

    rows, figures = [], []
    for name, loop, loop_batches, skipped in loops:
        entry: dict[str, Any] = {"name": name, "status": skipped or "ok"}
        if loop is not None:
            entry.update(_run_loop(loop, net, loop_batches, device, amp, warmup, batch_size, seed))
        figures.append(entry)
        report.line(f"  {name}: {entry['status']}")
    bare = figures[0].get("samples_per_s")
    for entry in figures:
        rate = entry.get("samples_per_s")
        entry["ratio_to_bare"] = rate / bare if rate and bare else None
        rows.append(
            [
                entry["name"],
                _fmt(rate, ".2f"),
                _fmt(entry.get("ms_per_iteration"), ".0f"),
                _fmt(entry["ratio_to_bare"], ".3f"),
                _fmt(entry["ratio_to_bare"] and 100 * (1 / entry["ratio_to_bare"] - 1), "+.1f", "%"),
                _fmt(entry.get("last_loss"), ".5f"),
                _fmt(entry.get("peak_memory_mb"), ".0f"),
                entry["status"] if entry["status"] != "ok" else "",
            ]
        )
    section.update(settings={k: settings[k] for k in settings if k.startswith("train") or k == "accumulation_steps"})
    section["loops"] = figures
    report.line()
    report.table(
        ["loop", "samples/s", "ms/iter", "vs bare", "overhead", "last loss", "peak MB", "status"], rows
    )
    report.line(
        "vs bare: samples/s ratio to the bare loop; overhead: extra time per sample. Plain-tensor batches unless "
        "named: MetaTensor batches are what a MONAI DataLoader yields from transform outputs. The MT phase counts "
        "labelled samples; each of its iterations also runs the teacher and the student on as many unlabelled cases."
    )


def _run_loop(
    loop: Callable[..., float],
    net: nn.Module,
    batches: Sequence[dict[str, torch.Tensor]],
    device: torch.device,
    amp: bool,
    warmup: int,
    batch_size: int,
    seed: int,
) -> dict[str, Any]:
    model = copy.deepcopy(net)
    clock = StepClock(device)
    torch.manual_seed(seed)  # same dropout masks in every loop: their losses can be compared
    try:
        with PeakMemory(device) as memory:
            last_loss = loop(model, batches, device, amp, clock)
        seconds = clock.seconds_per_step(warmup)
    except Exception as error:  # an optional trainer that breaks is a figure, not the end of the run
        return {"status": f"failed: {failure_reason(error)}"}
    finally:
        del model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {
        "samples_per_s": batch_size / seconds,
        "ms_per_iteration": 1000.0 * seconds,
        "last_loss": last_loss,
        "peak_memory_mb": memory.peak_mb,
        "memory_delta_mb": memory.delta_mb,
        "memory_kind": memory.kind,
    }
