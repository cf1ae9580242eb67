"""Speed benchmarks, one module per bundle, run by ``scripts/benchmark.py BUNDLE``.

A module ``benchmarks/<bundle>.py`` provides:

- ``add_arguments(parser) -> None``: its own command-line options (may add none);
- ``run(args: argparse.Namespace, device: torch.device, report: benchmarks.common.Report) -> None``: measures
  the bundle and writes its figures to ``report`` (printed as they come, saved with ``--json``).

``args`` carries the common options of the script (``quick``, ``warmup``, ``repeats``, ``image_size``,
``skip_compile``, ``min_agreement``, ``seed``) besides the module's own. Timing, memory, agreement and the
candidate inference paths live in :mod:`benchmarks.common` so that every bundle measures the same way.
Modules whose name starts with ``_`` and ``common`` are not benchmarks.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

__all__ = ["available_benchmarks", "load_benchmark"]

_NOT_BENCHMARKS = {"common"}


def available_benchmarks() -> list[str]:
    """Bundle names that have a benchmark module, sorted (found without importing them)."""
    return sorted(
        info.name
        for info in pkgutil.iter_modules(__path__)
        if not info.ispkg and not info.name.startswith("_") and info.name not in _NOT_BENCHMARKS
    )


def load_benchmark(bundle: str) -> ModuleType:
    """Import ``benchmarks.<bundle>`` and check that it provides ``add_arguments`` and ``run``.

    Raises:
        ValueError: no benchmark module for ``bundle``, or one without the two functions.
    """
    names = available_benchmarks()
    if bundle not in names:
        raise ValueError(f"no benchmark for bundle {bundle!r}; available: {', '.join(names) or 'none'}")
    module = importlib.import_module(f"{__name__}.{bundle}")
    missing = [name for name in ("add_arguments", "run") if not callable(getattr(module, name, None))]
    if missing:
        raise ValueError(f"benchmarks/{bundle}.py lacks {', '.join(missing)}")
    return module
