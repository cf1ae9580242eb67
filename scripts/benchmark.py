"""Speed benchmark of a bundle: prints its figures (parameters, inference paths, training throughput).

Usage: ``python scripts/benchmark.py BUNDLE [--device cpu|cuda] [--warmup N] [--repeats N] [--image-size S]
[--quick] [--skip-compile] [--json OUT] [bundle options]``; ``python scripts/benchmark.py BUNDLE --help`` lists
a bundle's options. Each bundle's benchmark is ``benchmarks/<bundle>.py`` (see ``benchmarks/__init__.py``);
new ones are found automatically. The inference paths include ONNX Runtime and OpenVINO (fp32, bf16) where
installed, and the run ends naming the path the bundle's ``inference.json`` takes by default on this machine
(its ``precision`` and ``backend`` settings, :func:`utils.precision.resolve_precision` and
:func:`networks.runtime.resolve_backend`). This is a measuring tool, never a timed test: run it on an idle machine
and read the load average it prints before trusting a figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # scripts/ is not a package: make the repository's packages importable
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from benchmarks import available_benchmarks, load_benchmark  # noqa: E402
from benchmarks.common import Report, environment, resolve_device  # noqa: E402
from networks.runtime import resolve_backend  # noqa: E402
from utils.precision import resolve_precision  # noqa: E402

#: warm-up calls and timed repeats per inference path when not given: the CPU is slow, a GPU is not.
DEFAULT_WARMUP = {"cpu": 2, "cuda": 10, "quick": 1}
DEFAULT_REPEATS = {"cpu": 5, "cuda": 50, "quick": 2}


def build_parser(bundle: str | None = None) -> argparse.ArgumentParser:
    """The common options, plus those of ``bundle``'s benchmark module when given."""
    parser = argparse.ArgumentParser(
        prog="benchmark.py",
        description=__doc__.strip().splitlines()[0],
    )
    parser.add_argument("bundle", metavar="BUNDLE", choices=available_benchmarks(), help="one of %(choices)s")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available, else cpu")
    parser.add_argument(
        "--warmup",
        type=int,
        help="untimed calls per inference path after its first (default 2 cpu, 10 cuda, 1 quick; TorchScript "
        "optimises during its first calls)",
    )
    parser.add_argument(
        "--repeats", type=int, help="timed calls per inference path, median reported (default 5 cpu, 50 cuda, 2 quick)"
    )
    parser.add_argument("--image-size", type=int, help="inference image side (default: the bundle's)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny network width, small images, few iterations: the whole run in seconds (tests, CI); "
        "the figures mean nothing",
    )
    parser.add_argument("--skip-compile", action="store_true", help="do not try torch.compile (slow on the CPU)")
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=0.995,
        help="argmax agreement with fp32 a path must keep to be chosen as the fastest (default 0.995)",
    )
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the network init and the synthetic data (default 0)"
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="also save the figures as JSON here")
    if bundle is not None:
        load_benchmark(bundle).add_arguments(parser.add_argument_group(f"{bundle} options"))
    return parser


def default_path(bundle: str, device: torch.device) -> dict[str, str] | None:
    """The precision and backend the bundle's ``inference.json`` runs with on ``device`` by default, its settings
    and what they resolve to (None when it has no plain ``precision`` setting)."""
    try:
        config = json.loads((REPO_ROOT / "bundles" / bundle / "configs" / "inference.json").read_text())
    except (OSError, ValueError):
        return None
    setting = config.get("precision")
    if not isinstance(setting, str) or setting.startswith(("$", "@")):
        return None
    auto_cpu = config.get("auto_cpu_precision", "bf16+channels_last")
    precision = resolve_precision(setting, device, auto_cpu).name
    backend_setting = config.get("backend", "torch")
    backend = resolve_backend(backend_setting, device, config.get("auto_cpu_backend", "torch"))
    return {"precision": setting, "path": precision, "backend_setting": backend_setting, "backend": backend}


def _jsonable(value: Any) -> Any:
    """An option's value as JSON: paths (also in lists, e.g. ``--checkpoints``) as strings."""
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def _bundle_of(argv: list[str] | None) -> str | None:
    """The BUNDLE argument if it names a benchmark (so that its options can be added before parsing)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("bundle", nargs="?")
    known, _ = pre.parse_known_args(argv)
    return known.bundle if known.bundle in available_benchmarks() else None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse ``argv``, run the bundle's benchmark, print it (and save it with ``--json``); returns the figures."""
    args = build_parser(_bundle_of(argv)).parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    regime = "quick" if args.quick else device.type
    args.warmup = DEFAULT_WARMUP[regime] if args.warmup is None else args.warmup
    args.repeats = DEFAULT_REPEATS[regime] if args.repeats is None else args.repeats
    if args.repeats < 1 or args.warmup < 0:
        raise SystemExit(f"benchmark.py: need --repeats >= 1 and --warmup >= 0, got {args.repeats}, {args.warmup}")

    report = Report()
    env = environment(device)
    settings = {k: _jsonable(v) for k, v in vars(args).items()}
    report.line(f"podium benchmark: {args.bundle}")
    report.line(
        f"device {device}"
        + (f" ({env['gpu']}, {env['gpu_memory_gib']} GiB, CUDA {env['cuda']})" if device.type == "cuda" else "")
        + f"; CPU {env['cpu']}, {env['cpu_count_usable']} usable cores, {env['cpu_capability']}"
    )
    report.line(
        f"torch {env['torch']}, MONAI {env['monai']}, ignite {env['ignite']}, python {env['python']}; "
        f"torch threads {env['torch_threads']} (inter-op {env['torch_interop_threads']})"
    )
    if env["load_average_1_5_15"] is not None:
        load = ", ".join(f"{x:.2f}" for x in env["load_average_1_5_15"])
        report.line(f"load average (1, 5, 15 min) at start: {load}  (a busy machine makes every figure noisy)")
    report.line("options: " + ", ".join(f"{k}={v}" for k, v in settings.items() if k != "bundle"))

    load_benchmark(args.bundle).run(args, device, report)

    default = default_path(args.bundle, device)
    if default is not None:
        report.line(
            f"\ninference.json's default here: precision {default['precision']!r} -> {default['path']}, backend "
            f"{default['backend_setting']!r} -> {default['backend']}"
        )
    figures = {
        "bundle": args.bundle,
        "environment": env,
        "settings": settings,
        "sections": report.sections,
        "default_path": default,
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        report.line(f"\nfigures saved to {args.json}")
    return figures


if __name__ == "__main__":
    main()
