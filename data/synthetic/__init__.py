"""Synthetic demo data in each challenge's exact on-disk layout, one module per bundle.

A module ``data/synthetic/<bundle>.py`` provides ``add_arguments(parser)`` (its own command-line options)
and ``generate(out_dir, cases, seed, **options)``; ``scripts/make_demo_data.py`` finds them here.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

__all__ = ["available_generators"]


def available_generators() -> dict[str, ModuleType]:
    """Bundle name -> generator module, for every module of this package with ``add_arguments`` and
    ``generate`` (sorted by name)."""
    generators = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.ispkg or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if callable(getattr(module, "add_arguments", None)) and callable(getattr(module, "generate", None)):
            generators[info.name] = module
    return generators
