"""The in-repository bundles use ``bundle_root`` as the exported ones do: paths inside a bundle go through it.

``bundle_root`` is a required property of MONAI's inference and training workflows (``monai.bundle.properties``).
In the repository it is the bundle's folder relative to the repository root, where the commands run; the export
(``scripts/export_bundle.py``) sets it to ``"."``. A path to a file inside the bundle folder is therefore written
``@bundle_root + '/...'`` and never ``bundles/<name>/...``, so that it follows ``--bundle_root`` and the export.
Data (``demo/``) and outputs and weights (``runs/``) are repository-level defaults, not inside the bundle: the
export moves them under the exported bundle's ``bundle_root``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
CONFIGS = sorted(BUNDLES.glob("*/configs/*.json"))
# a path written into a bundle folder (a literal "bundles/<name>/...") instead of through @bundle_root
_LITERAL_BUNDLE_PATH = re.compile(r"(?<![\w.])bundles/\w+")
_BUNDLE_ROOT_PATH = re.compile(r"@bundle_root\s*\+\s*'/([^']*)'")


def _values(config: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """Every ``(id, string value)`` of a config, ids as MONAI writes them (``a#b#0``)."""
    if isinstance(config, dict):
        for k, v in config.items():
            yield from _values(v, f"{key}#{k}" if key else str(k))
    elif isinstance(config, list):
        for i, v in enumerate(config):
            yield from _values(v, f"{key}#{i}")
    elif isinstance(config, str):
        yield key, config


def test_every_bundle_has_configs():
    assert {p.parent.parent.name for p in CONFIGS} == {p.name for p in BUNDLES.iterdir() if p.is_dir()}


@pytest.mark.parametrize("workflow", ["inference", "train"])
@pytest.mark.parametrize("bundle", sorted(p.name for p in BUNDLES.iterdir() if p.is_dir()))
def test_workflow_configs_declare_their_own_folder_as_bundle_root(bundle: str, workflow: str):
    config = json.loads((BUNDLES / bundle / "configs" / f"{workflow}.json").read_text(encoding="utf-8"))
    assert config.get("bundle_root") == f"bundles/{bundle}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_paths_inside_a_bundle_go_through_bundle_root(path: Path):
    config = json.loads(path.read_text(encoding="utf-8"))
    bundle = path.parent.parent
    for key, value in _values({k: v for k, v in config.items() if k not in ("_meta_", "bundle_root")}):
        assert not _LITERAL_BUNDLE_PATH.search(value), (
            f"{path}: {key} = {value!r} names a bundle folder: write @bundle_root + '/...' instead")
        for inside in _BUNDLE_ROOT_PATH.findall(value):  # in the repository: only what the bundle folder holds
            top = bundle / inside.split("/")[0]
            assert top.exists(), f"{path}: {key} = {value!r}: {top} is not in the bundle folder (outputs go to runs/)"
