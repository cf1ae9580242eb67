"""Export a bundle of this repository as a self-contained MONAI Model Zoo bundle.

A bundle folder of this repository names its classes by this repository's packages (``networks.magnet.MagnetNet``)
and its default paths relative to the repository root (``runs/...``), so copied alone it cannot run. The export
writes what the Model Zoo expects (https://docs.monai.io/en/stable/mb_specification.html and the zoo's
``ci/verify_bundle.py``):

- ``scripts/``: the modules of this repository that the bundle's configs reach (their import closure), imported
  as ``scripts.<package>.<module>`` as zoo bundles import their own code; nothing else of the repository;
- ``configs/``: every config, with ``_target_`` and ``$`` expressions rewritten to ``scripts.``, paths inside
  the bundle written as ``@bundle_root + '/...'``, ``bundle_root`` set to ``"."`` (the zoo's convention: run from
  the bundle folder or pass ``--bundle_root``), and the weight settings pointing at ``models/``;
- ``configs/metadata.json``: ``version`` and ``changelog`` (from ``--version`` / ``--changelog``), and every
  third-party package the exported code imports with its installed version, including the runtime of the
  inference's default CPU backend (``openvino`` and ``onnx`` for ``backend: auto`` with
  ``auto_cpu_backend: openvino``), which the code imports lazily;
- ``models/model.pt`` (+ further weight files for ensembles), each a plain state dict, and ``large_files.yml``
  naming them with their SHA-256 and a URL for the user to fill in once the files are hosted;
- ``docs/`` and ``LICENSE`` as they are.

Examples::

    python scripts/export_bundle.py carotid_plaque_ultrasound /tmp/zoo/carotid_plaque_ultrasound \\
        --weights runs/carotid_plaque_ultrasound/fold0/models/model.pt
    # a fold ensemble: one weight file per fold, all for the setting ``model_paths``
    python scripts/export_bundle.py angioma_ultrasound_segmentation /tmp/zoo/angioma \\
        --weights model_paths=runs/angioma/fold0/models/model.pt ... model_paths=runs/angioma/fold4/models/model.pt
    # a fusion of two networks: one file per setting
    python scripts/export_bundle.py retinal_oct_edema_segmentation /tmp/zoo/retinal \\
        --weights runs/retinal/unet_plus_plus/models/model.pt fusion_model_path=runs/retinal/unet/models/model.pt
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.metadata
import json
import re
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # scripts/ is not a package: make the repository's packages importable
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from networks.checkpoint import read_state_dict  # noqa: E402
from networks.runtime import AUTO, BACKENDS, backend_packages  # noqa: E402

__all__ = [
    "CODE_PACKAGE",
    "LIBRARY_PACKAGES",
    "export_bundle",
    "import_closure",
    "main",
    "modules_named_in_configs",
    "rewrite_config",
    "rewrite_imports",
    "runtime_packages",
    "third_party_packages",
]

#: the packages of this repository that bundle configs may reach (the layers below ``scripts/``)
LIBRARY_PACKAGES = ("formats", "utils", "networks", "transforms", "data", "inferers", "losses", "metrics", "engines",
                    "handlers")
#: where a zoo bundle keeps its own code
CODE_PACKAGE = "scripts"
#: what a config's default path starts with when it is relative to the repository root
REPOSITORY_PATH_PREFIXES = ("runs/", "demo/")
#: packages described by their own fields of the metadata, not by ``optional_packages_version``
VERSION_FIELDS = {"monai": "monai_version", "torch": "pytorch_version", "numpy": "numpy_version"}

_PACKAGES = "|".join(LIBRARY_PACKAGES)
# a dotted name of a library module, where Python code of a config can start a name (not after "." or "/")
_DOTTED_NAME = re.compile(rf"(?<![^\s(\[{{,=:$])((?:{_PACKAGES})(?:\.\w+)+)")
_IMPORT_LINE = re.compile(rf"^(\s*)(from|import)(\s+)((?:{_PACKAGES})(?:\.\w+)*)\b", re.MULTILINE)
_PATH_LITERAL = re.compile(r"(?<![\w/])'((?:%s)[^']*)'" % "|".join(re.escape(p) for p in REPOSITORY_PATH_PREFIXES))
# a path into a bundle folder of the repository, which configs write as ``@bundle_root + '/...'`` instead
_BUNDLE_FOLDER_PATH = re.compile(r"(?<![\w.])bundles/\w+")


def _module_file(dotted: str, root: Path) -> Path | None:
    """The file of module ``dotted`` under ``root`` (``a/b.py`` or ``a/b/__init__.py``), None if it is not one."""
    path = root.joinpath(*dotted.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _longest_module(dotted: str, root: Path) -> str | None:
    """The longest prefix of ``dotted`` that is a module under ``root`` (``networks.magnet.MagnetNet`` ->
    ``networks.magnet``)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        if _module_file(".".join(parts[:end]), root) is not None:
            return ".".join(parts[:end])
    return None


def _strings(config: Any) -> Iterable[tuple[str | None, str]]:
    """Every ``(key, string value)`` of a nested config."""
    if isinstance(config, Mapping):
        for key, value in config.items():
            if isinstance(value, str):
                yield key, value
            else:
                yield from _strings(value)
    elif isinstance(config, list):
        for value in config:
            yield from ((None, value),) if isinstance(value, str) else _strings(value)


def _is_code(key: str | None, value: str) -> bool:
    """Whether a config string is Python (a ``_target_`` or a ``$`` expression) rather than data."""
    return key == "_target_" or value.startswith("$")


def modules_named_in_configs(configs: Iterable[Mapping], root: Path = REPO_ROOT) -> set[str]:
    """The library modules that ``_target_`` values and ``$`` expressions of ``configs`` name."""
    modules = set()
    for config in configs:
        for key, value in _strings({k: v for k, v in config.items() if k != "_meta_"}):
            if _is_code(key, value):
                for dotted in _DOTTED_NAME.findall(value):
                    module = _longest_module(dotted, root)
                    if module is not None:
                        modules.add(module)
    return modules


def _imported_modules(path: Path, module: str, root: Path) -> tuple[set[str], set[str]]:
    """(library modules, top-level third-party names) imported anywhere in the file of ``module``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    library, third_party = set(), set()

    def add(dotted: str) -> None:
        if dotted.split(".")[0] in LIBRARY_PACKAGES:
            found = _longest_module(dotted, root)
            if found is not None:
                library.add(found)
        elif dotted:
            third_party.add(dotted.split(".")[0])

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            add(target)
            if target.split(".")[0] in LIBRARY_PACKAGES:
                for alias in node.names:  # ``from networks.encoders import csn`` imports a submodule
                    add(f"{target}.{alias.name}")
    return library, third_party


def import_closure(modules: Iterable[str], root: Path = REPO_ROOT) -> dict[str, Path]:
    """Every library module that ``modules`` import, directly or not, with their packages' ``__init__`` modules:
    module name -> file."""
    closure: dict[str, Path] = {}
    pending = list(modules)
    while pending:
        module = pending.pop()
        if module in closure:
            continue
        path = _module_file(module, root)
        if path is None:
            raise ValueError(f"{module} is not a module of {root}")
        closure[module] = path
        parts = module.split(".")
        pending += [".".join(parts[:end]) for end in range(1, len(parts))]
        pending += sorted(_imported_modules(path, module, root)[0])
    return closure


def runtime_packages(inference: Mapping) -> set[str]:
    """The packages of the backend that the inference config runs by default on the CPU: its ``backend`` setting,
    or for ``"auto"`` its ``auto_cpu_backend`` (:func:`networks.runtime.resolve_backend`); none for torch or a
    setting computed by an expression. :mod:`networks.runtime` imports them lazily, so the import scan misses them.
    """
    setting = inference.get("backend", "torch")
    backend = inference.get("auto_cpu_backend", "torch") if setting == AUTO else setting
    return set(backend_packages(backend)) if isinstance(backend, str) and backend in BACKENDS else set()


def third_party_packages(files: Iterable[Path], configs: Iterable[Mapping] = (), root: Path = REPO_ROOT,
                         lazy_imports: Iterable[str] = ()) -> dict[str, str]:
    """The installed distributions (name -> version) that the exported code and the configs' ``$import`` lines
    import, standard library excluded, and those of ``lazy_imports`` (top-level names the code imports through
    importlib, which the scan cannot see).

    Raises:
        ImportError: a name of ``lazy_imports`` is not installed (its version cannot be recorded).
    """
    names = set(lazy_imports)
    distributions = importlib.metadata.packages_distributions()
    missing = sorted(name for name in names if name not in distributions)
    if missing:
        raise ImportError(f"the exported bundle runs {missing}, not installed here: pip install {' '.join(missing)} "
                          "to export (the metadata records the installed version)")
    for path in files:
        module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        names |= _imported_modules(path, module, root)[1]
    for config in configs:
        for key, value in _strings(config):
            match = re.match(r"\$\s*(?:import|from)\s+(\w+)", value)
            if match and match.group(1) not in LIBRARY_PACKAGES:
                names.add(match.group(1))
    packages = {}
    for name in sorted(names - set(sys.stdlib_module_names) - {"__future__"}):
        for dist in distributions.get(name, []):
            packages[dist] = importlib.metadata.version(dist)
    return packages


def rewrite_imports(source: str) -> str:
    """Python source with its absolute imports of library modules moved under ``scripts.``.

    Raises:
        ValueError: a bare ``import networks.x`` (used as ``networks.x.name``, which the move would break).
    """
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in LIBRARY_PACKAGES and "." in alias.name and alias.asname is None:
                    raise ValueError(f"cannot export 'import {alias.name}' without 'as': use 'from ... import'")
    return _IMPORT_LINE.sub(rf"\1\2\3{CODE_PACKAGE}.\4", source)


def _rewrite_string(key: str | None, value: str) -> str:
    if _is_code(key, value):
        value = _DOTTED_NAME.sub(rf"{CODE_PACKAGE}.\1", value)
        if value.startswith("$"):
            value = _PATH_LITERAL.sub(r"@bundle_root + '/\1'", value)
        return value
    if value.startswith(REPOSITORY_PATH_PREFIXES):
        return f"$@bundle_root + '/{value}'"
    return value


def rewrite_config(config: Any, key: str | None = None) -> Any:
    """A config with its code moved under ``scripts.`` and its repository paths moved under ``@bundle_root``."""
    if isinstance(config, Mapping):
        return {k: (v if k == "_meta_" else rewrite_config(v, k)) for k, v in config.items()}
    if isinstance(config, list):
        return [rewrite_config(v) for v in config]
    if isinstance(config, str):
        return _rewrite_string(key, config)
    return config


def _weight_files(weights: Sequence[tuple[str, str]]) -> list[tuple[str, Path, str]]:
    """``(setting, source file, file name under models/)`` for each ``--weights`` entry: the first file is
    ``model.pt`` (the zoo's verifier loads it into ``network_def``), the next of the same setting ``model_1.pt``,
    ...; a further setting ``fusion_model_path`` gives ``fusion_model.pt``."""
    first = weights[0][0]
    counts: dict[str, int] = {}
    files = []
    for setting, source in weights:
        index = counts.get(setting, 0)
        counts[setting] = index + 1
        stem = "model" if setting == first else setting.removesuffix("_paths").removesuffix("_path")
        files.append((setting, Path(source), f"{stem}.pt" if index == 0 else f"{stem}_{index}.pt"))
    return files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_bundle(
    bundle: str,
    out_dir: str | Path,
    weights: Sequence[tuple[str, str]],
    version: str | None = None,
    changelog: str | None = None,
    model_key: str | None = None,
    files: Sequence[tuple[str, str]] = (),
    bundles_dir: Path = REPO_ROOT / "bundles",
) -> Path:
    """Write bundle ``bundle`` as a self-contained zoo bundle into ``out_dir`` (which must not exist).

    Args:
        bundle: the bundle's folder name under ``bundles/``.
        out_dir: the new bundle folder; its name is the bundle's name for ``monai.bundle.load``.
        weights: ``(setting, checkpoint file)`` pairs: the inference setting that names a weight file
            (``model_path``; a list setting such as ``model_paths`` takes one pair per file, in order).
        version: the exported bundle's version; needs a changelog entry (``changelog`` or the metadata's own).
        changelog: the changelog text of ``version``.
        model_key: the entry of a checkpoint holding several networks (``teacher``); default: the network.
        files: ``(setting, file)`` pairs of other files the inference reads (the spine bundle's ``prior_csv``), copied
            to ``resources/``.

    Returns:
        ``out_dir``.
    """
    source = bundles_dir / bundle
    out_dir = Path(out_dir)
    if not (source / "configs" / "metadata.json").is_file():
        known = sorted(p.name for p in bundles_dir.iterdir() if (p / "configs" / "metadata.json").is_file())
        raise ValueError(f"no bundle {bundle!r} in {bundles_dir}; bundles: {', '.join(known)}")
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists: export into a new folder")
    if not weights:
        raise ValueError("no weights given: the zoo needs models/model.pt")
    config_paths = sorted((source / "configs").glob("*.json"))
    configs = {path.name: json.loads(path.read_text(encoding="utf-8")) for path in config_paths}
    inference = configs.get("inference.json", {})
    settings = {setting for setting, _ in weights}
    unknown = sorted((settings | {setting for setting, _ in files}) - set(inference))
    if unknown:
        candidates = sorted(k for k in inference if "path" in k)
        raise ValueError(f"weight setting(s) {unknown} are not settings of {bundle}'s inference.json; "
                         f"its path settings: {candidates}")
    for name, config in configs.items():
        for key, value in _strings({k: v for k, v in config.items() if k not in ("_meta_", "bundle_root")}):
            if _BUNDLE_FOLDER_PATH.search(value):
                raise ValueError(f"{name}: {key} = {value!r} names a folder of bundles/, which the export does not "
                                 "hold: write a path inside the bundle as @bundle_root + '/...'")
    metadata = configs.pop("metadata.json")
    closure = import_closure(modules_named_in_configs(configs.values()))

    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "models").mkdir(parents=True)
    (staging / CODE_PACKAGE).mkdir()
    (staging / CODE_PACKAGE / "__init__.py").write_text(
        f'"""Code of the {bundle} bundle, exported from the podium repository."""\n', encoding="utf-8")
    for module, path in sorted(closure.items()):
        target = staging / CODE_PACKAGE / path.relative_to(REPO_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(rewrite_imports(path.read_text(encoding="utf-8")), encoding="utf-8")

    weight_files = _weight_files(weights)
    for _, checkpoint, name in weight_files:
        torch.save(read_state_dict(checkpoint, model_key), staging / "models" / name)
    for setting in settings:
        paths = [f"$@bundle_root + '/models/{name}'" for s, _, name in weight_files if s == setting]
        as_list = isinstance(inference[setting], list) or len(paths) > 1 or setting.endswith("_paths")
        inference[setting] = paths if as_list else paths[0]
    for setting, path in files:
        (staging / "resources").mkdir(exist_ok=True)
        shutil.copy2(path, staging / "resources" / Path(path).name)
        inference[setting] = f"$@bundle_root + '/resources/{Path(path).name}'"
    for name, config in configs.items():
        config = rewrite_config(config)
        if "bundle_root" in config:
            config["bundle_root"] = "."
        (staging / "configs" / name).parent.mkdir(exist_ok=True)
        (staging / "configs" / name).write_text(json.dumps(config, indent=4) + "\n", encoding="utf-8")
    for extra in sorted((source / "configs").iterdir()):
        if extra.suffix != ".json":
            shutil.copy2(extra, staging / "configs" / extra.name)

    packages = third_party_packages(closure.values(), configs.values(), lazy_imports=runtime_packages(inference))
    for dist, field in VERSION_FIELDS.items():
        if dist in packages:
            metadata[field] = packages.pop(dist).split("+")[0]  # 2.13.0+cpu: the release, not the local build
    metadata["optional_packages_version"] = packages
    if version is not None:
        metadata["version"] = version
    if changelog is not None:
        metadata["changelog"] = {metadata["version"]: changelog, **metadata.get("changelog", {})}
    if metadata["version"] not in metadata.get("changelog", {}):
        raise ValueError(f"version {metadata['version']} has no changelog entry: pass --changelog")
    (staging / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=4) + "\n", encoding="utf-8")

    large_files = "".join(
        f'  - path: "models/{name}"\n    url: "https://REPLACE-WITH-THE-URL-OF/{name}"\n'
        f'    hash_val: "{_sha256(staging / "models" / name)}"\n    hash_type: "sha256"\n'
        for _, _, name in weight_files
    )
    (staging / "large_files.yml").write_text("large_files:\n" + large_files, encoding="utf-8")
    for extra in ("docs", "LICENSE"):
        if (source / extra).is_dir():
            shutil.copytree(source / extra, staging / extra)
        elif (source / extra).is_file():
            shutil.copy2(source / extra, staging / extra)
    staging.rename(out_dir)
    return out_dir


def _weights_argument(text: str) -> tuple[str, str]:
    """``SETTING=CKPT``, or a bare ``CKPT`` for the usual ``model_path``."""
    setting, sep, path = text.partition("=")
    return (setting, path) if sep else ("model_path", text)


def _file_argument(text: str) -> tuple[str, str]:
    """``SETTING=FILE``: a data file has no default setting to fill."""
    setting, sep, path = text.partition("=")
    if not sep or not setting:
        raise argparse.ArgumentTypeError(f"{text!r}: give the setting the file fills, SETTING=FILE")
    return setting, path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Export a bundle as a self-contained MONAI Model Zoo bundle (code under scripts/, weights "
        "under models/, configs relative to bundle_root).",
        epilog=__doc__.split("Examples::", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", help="bundle name (a folder of bundles/)")
    parser.add_argument("out_dir", type=Path, help="the new bundle folder (must not exist)")
    parser.add_argument("--weights", nargs="+", required=True, type=_weights_argument, metavar="[SETTING=]CKPT",
                        help="checkpoint(s); SETTING is the inference.json setting it fills (default model_path)")
    parser.add_argument("--file", nargs="+", default=[], type=_file_argument, metavar="SETTING=FILE", dest="files",
                        help="other file(s) the inference reads, copied into resources/ (e.g. prior_csv=train.csv)")
    parser.add_argument("--model-key", help="checkpoint entry to export when it holds several networks (teacher)")
    parser.add_argument("--version", help="version of the exported bundle (default: the bundle's own)")
    parser.add_argument("--changelog", help="changelog entry for --version")
    args = parser.parse_args(argv)
    try:
        out = export_bundle(args.bundle, args.out_dir, args.weights, args.version, args.changelog, args.model_key,
                            args.files)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"export_bundle: {err}", file=sys.stderr)
        return 1
    print(f"exported {args.bundle} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
