"""No package imports a higher layer (CONTRIBUTING.md, "Layering"): every import of every module, also the ones inside
functions, is read with ``ast`` and checked against the layer table below."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LAYERS: dict[str, int] = {
    "formats": 0,
    "utils": 0,
    "networks": 1,
    "transforms": 1,
    "data": 1,
    "inferers": 1,
    "losses": 2,
    "metrics": 2,
    "engines": 3,
    "handlers": 3,
    "benchmarks": 4,
    "scripts": 4,
}
"""A package imports only its own modules and packages of a lower layer."""

SAME_LAYER_ALLOWED: set[tuple[str, str]] = {
    ("formats", "utils"),  # files are written atomically with utils.atomic; utils imports no project package
    ("scripts", "benchmarks"),  # the command line of the benchmarks
    ("transforms", "data"),  # a challenge's label codes and label-map reading, as monai.transforms uses monai.data
}
"""The only imports between two packages of the same layer (importer, imported)."""

FORBIDDEN: dict[tuple[str, str], str] = {
    ("losses", "networks"): "losses take tensors: a model's output layout is split before the loss, not inside it",
    ("metrics", "transforms"): "metrics read files through formats and score arrays; pipelines are not theirs",
}
"""Imports of a lower layer that are still not allowed (importer, imported): why."""

def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in ``path``; relative imports resolved against the file's package."""
    package = path.relative_to(ROOT).parent.parts
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                found.append((node.lineno, ".".join([*base, *([node.module] if node.module else [])])))
            else:
                found.append((node.lineno, node.module or ""))
    return found


def _problem(importer: str, imported: str) -> str | None:
    if imported == importer or imported not in LAYERS:
        return None
    if LAYERS[imported] > LAYERS[importer]:
        return f"imports the higher layer '{imported}' (layer {LAYERS[imported]} > {LAYERS[importer]})"
    if LAYERS[imported] == LAYERS[importer] and (importer, imported) not in SAME_LAYER_ALLOWED:
        return f"imports '{imported}' of its own layer {LAYERS[importer]}"
    if (importer, imported) in FORBIDDEN:
        return f"imports '{imported}': {FORBIDDEN[(importer, imported)]}"
    return None


def layering_violations() -> dict[tuple[str, str], str]:
    """(file, imported module) -> 'file:line: problem' for every import that breaks the rules."""
    violations = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            file = path.relative_to(ROOT).as_posix()
            for line, module in _imported_modules(path):
                problem = _problem(package, module.split(".")[0])
                if problem is not None:
                    violations[(file, module)] = f"{file}:{line}: {problem} (import of {module})"
    return violations


def test_no_package_imports_a_higher_layer():
    violations = layering_violations()
    assert not violations, "layering broken:\n" + "\n".join(message for _, message in sorted(violations.items()))


@pytest.mark.parametrize(
    "importer, source, expected",
    [
        ("metrics", "from transforms.png import LoadMaskPNGd", "pipelines are not theirs"),
        ("formats", "from transforms.png import LoadMaskPNGd", "higher layer 'transforms'"),
        ("data", "import transforms.io", "its own layer 1"),
        ("metrics", "def f():\n    from engines.inference import CaseInferenceWorkflow", "higher layer 'engines'"),
        ("losses", "from networks.magnet import split_views_output", "losses take tensors"),
        ("engines", "from formats.png import read_mask_png\nimport numpy", None),
        ("formats", "from utils.atomic import atomic_path", None),
    ],
)
def test_the_checker_finds_upward_imports(tmp_path, monkeypatch, importer, source, expected):
    package = tmp_path / importer
    package.mkdir()
    (package / "module.py").write_text(source)
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    messages = list(layering_violations().values())
    if expected is None:
        assert not messages
    else:
        assert len(messages) == 1 and expected in messages[0] and messages[0].startswith(f"{importer}/module.py:")
