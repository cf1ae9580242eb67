"""scripts/export_bundle.py: a bundle exported alone runs, loads and passes the Model Zoo's checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export, verify_metadata, verify_net_in_out

from scripts.export_bundle import (
    export_bundle,
    import_closure,
    main,
    modules_named_in_configs,
    rewrite_config,
    rewrite_imports,
    runtime_packages,
    third_party_packages,
)

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "tests" / "data" / "zoo_schema" / "meta_schema_20220324.json"


def test_configs_name_their_modules_and_the_closure_adds_imports_and_packages():
    configs = [{"net": {"_target_": "networks.magnet.MagnetNet"}, "imports": ["$import data.csv2026 as csv2026"],
                "handler": "$monai.handlers.from_engine(['pred'])", "path": "data.json"}]
    assert modules_named_in_configs(configs) == {"networks.magnet", "data.csv2026"}
    closure = import_closure({"networks.magnet"})
    # the module, its packages, what it imports (also relatively, e.g. the encoder registry's families)
    assert {"networks", "networks.magnet", "networks.encoders", "networks.encoders.base",
            "networks.encoders.convnext"} <= set(closure)
    assert not any(name.startswith(("engines", "scripts", "benchmarks")) for name in closure)


def test_the_default_cpu_backends_packages_are_listed_though_imported_lazily(monkeypatch):
    assert runtime_packages({"backend": "auto", "auto_cpu_backend": "openvino"}) == {"onnx", "openvino"}
    assert runtime_packages({"backend": "onnxruntime"}) == {"onnx", "onnxruntime"}
    assert runtime_packages({"backend": "auto", "auto_cpu_backend": "torch"}) == set()
    assert runtime_packages({"backend": "torch", "auto_cpu_backend": "openvino"}) == set()
    assert runtime_packages({}) == set() and runtime_packages({"backend": "$@fast"}) == set()
    packages = third_party_packages([], lazy_imports={"onnx", "openvino"})
    assert set(packages) == {"onnx", "openvino"}
    monkeypatch.setattr("importlib.metadata.packages_distributions", lambda: {"onnx": ["onnx"]})
    with pytest.raises(ImportError, match=r"\['openvino'\], not installed here: pip install openvino"):
        third_party_packages([], lazy_imports={"onnx", "openvino"})


def test_code_moves_under_scripts_and_paths_under_bundle_root():
    source = ("from networks.checkpoint import load_weights\ndef f():\n    import data.fugc as fugc\n"
              "import numpy as np\n")
    assert rewrite_imports(source) == (
        "from scripts.networks.checkpoint import load_weights\ndef f():\n    import scripts.data.fugc as fugc\n"
        "import numpy as np\n")
    with pytest.raises(ValueError, match="without 'as'"):
        rewrite_imports("import networks.magnet\n")
    config = {
        "net": {"_target_": "networks.magnet.MagnetNet", "name": "networks.magnet"},
        "imports": ["$import data.csv2026 as csv2026", "$from networks.checkpoint import load_weights"],
        "det": "$monai.utils.set_determinism(seed=0)",
        "out": "$'runs/carotid/fold' + str(@fold)",
        "model_path": "runs/carotid/fold0/models/model.pt",
        "names": "$[x + '/data.json' for x in @dirs]",
        "labels": "$@bundle_root + '/configs/labels.json'",  # inside the bundle already: kept
        "_meta_": {"changelog": "networks.magnet moved"},
    }
    assert rewrite_config(config) == {
        "net": {"_target_": "scripts.networks.magnet.MagnetNet", "name": "networks.magnet"},
        "imports": ["$import scripts.data.csv2026 as csv2026", "$from scripts.networks.checkpoint import load_weights"],
        "det": "$monai.utils.set_determinism(seed=0)",
        "out": "$@bundle_root + '/runs/carotid/fold' + str(@fold)",
        "model_path": "$@bundle_root + '/runs/carotid/fold0/models/model.pt'",
        "names": "$[x + '/data.json' for x in @dirs]",
        "labels": "$@bundle_root + '/configs/labels.json'",
        "_meta_": {"changelog": "networks.magnet moved"},
    }


def test_bad_requests_stop_before_writing(tmp_path, capsys):
    with pytest.raises(ValueError, match="bundles: .*carotid_plaque_ultrasound"):
        export_bundle("no_such_bundle", tmp_path / "out", [("model_path", "x.pt")])
    with pytest.raises(ValueError, match="its path settings: .*model_path"):
        export_bundle("carotid_plaque_ultrasound", tmp_path / "out", [("model_pth", "x.pt")])
    with pytest.raises(SystemExit):  # a data file names the setting it fills: it must not replace model_path
        main(["carotid_plaque_ultrasound", str(tmp_path / "out"), "--weights", "x.pt", "--file", "train.csv"])
    assert "SETTING=FILE" in capsys.readouterr().err
    fake = tmp_path / "bundles" / "fake" / "configs"  # a path into the bundle folder not through @bundle_root
    fake.mkdir(parents=True)
    (fake / "metadata.json").write_text("{}", encoding="utf-8")
    (fake / "inference.json").write_text(json.dumps({"bundle_root": "bundles/fake", "model_path": "x.pt",
                                                     "labels": "$'bundles/fake/configs/labels.json'"}))
    with pytest.raises(ValueError, match="labels .*@bundle_root"):
        export_bundle("fake", tmp_path / "out", [("model_path", "x.pt")], bundles_dir=tmp_path / "bundles")
    (tmp_path / "exists").mkdir()
    assert main(["carotid_plaque_ultrasound", str(tmp_path / "exists"), "--weights", "x.pt"]) == 1
    assert "exists" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _network_weights(bundle: str, net_id: str, path: Path, network: dict) -> Path:
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "inference.json"))
    parser.update(network)
    if net_id.startswith("$"):  # a network the config builds in an expression (a factory call)
        parser["exported_network"], net_id = net_id, "exported_network"
    torch.save({"network": parser.get_parsed_content(net_id).state_dict()}, path)
    return path


def _demo_cases(bundle: str, out: Path) -> tuple[Path, list[tuple[str, str]]]:
    """A few demo cases of ``bundle`` in its challenge layout: the input folder and the other files inference reads."""
    size = {
        "carotid_plaque_ultrasound": ["--cases", "1", "--unlabelled-fraction", "0"],
        "angioma_ultrasound_segmentation": ["--cases", "1"],
        "retinal_oct_edema_segmentation": ["--cases", "1", "--slices", "3", "--height", "64", "--width", "32",
                                           "--val-cases", "0", "--test-cases", "1"],
        "fetal_cervix_ultrasound_segmentation": ["--cases", "2", "--height", "32", "--width", "48", "--heldout"],
        "cervical_spine_ct_fracture": ["--cases", "2", "--size", "32", "--slices", "32", "--test-cases", "1"],
    }[bundle]
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_demo_data.py"), bundle, str(out), *size],
                   check=True, capture_output=True)
    return {
        "carotid_plaque_ultrasound": (out / "images", []),
        "angioma_ultrasound_segmentation": (out / "test_data" / "img", []),
        "retinal_oct_edema_segmentation": (out / "Edema_testset" / "original_images", []),
        "fetal_cervix_ultrasound_segmentation": (out, []),
        "cervical_spine_ct_fracture": (out / "test_images", [("prior_csv", str(out / "train.csv"))]),
    }[bundle]


PVT_TINY = {"variant": "b1", "dims": [8, 16, 24, 32], "num_heads": [1, 1, 1, 2], "depths": [1, 1, 1, 1]}
RESNET_TINY = {"variant": "resnet34d", "widths": [8, 16, 16, 24], "stem_width": 4, "layers": [1, 1, 1, 1]}
SPINE_TINY = {"base_channels": 4, "stage_blocks": [1, 1, 1, 1], "decoder_channels": [8, 8, 8, 8], "head_channels": 8,
              "image_size": 32, "classifier_image_size": 32, "classifier_base_channels": 4,
              "classifier_stage_blocks": [1, 1, 1, 1], "window": 16, "vertebra_slices": 8, "vertebra_margin": 2,
              "vertebra_size": 16, "min_vertebra_voxels": 4}
EXPORTS = {
    # bundle: (weight settings -> network id of inference.json, network sizes (the recipe's when empty; else written
    # into the exported inference.json, so the zoo's checks run on a tiny network_def), other run-time overrides that
    # keep the test small)
    "carotid_plaque_ultrasound": ({"model_path": "network_def"}, {}, {}),
    "angioma_ultrasound_segmentation": ({"model_paths": "network_def"}, {}, {"tta": False}),
    "retinal_oct_edema_segmentation": (
        {"model_path": "network_def", "fusion_model_path": "fusion_network_def"}, {},
        {"roi_size": [64, 32], "expected_slices": 3}),
    "fetal_cervix_ultrasound_segmentation": (
        {"pvt_model_path": "pvt_def", "resnet_model_path": "resnet_def"},
        {"pvt_encoder_kwargs": PVT_TINY, "resnet_encoder_kwargs": RESNET_TINY}, {}),
    "cervical_spine_ct_fracture": (
        {"segmentation_model_paths": "network_def", "ir_model_paths": "$@ir_factory()"}, SPINE_TINY,
        {"ip_model_paths": []}),
}


@pytest.mark.parametrize("bundle", sorted(EXPORTS))
def test_exported_bundle_runs_alone_loads_and_passes_the_zoo_checks(bundle, tmp_path):
    settings, network, overrides = EXPORTS[bundle]
    weights = [(s, str(_network_weights(bundle, net_id, tmp_path / f"{s}.pt", network)))
               for s, net_id in settings.items()]
    cases, files = _demo_cases(bundle, tmp_path / "cases")
    exported = export_bundle(bundle, tmp_path / "zoo" / bundle, weights, version="9.9.9", changelog="exported",
                             files=files)
    assert (exported / "models" / "model.pt").is_file() and (exported / "LICENSE").is_file()
    assert not (tmp_path / "zoo" / f"{bundle}.partial").exists()
    metadata = json.loads((exported / "configs" / "metadata.json").read_text(encoding="utf-8"))
    assert metadata["version"] == "9.9.9" and metadata["changelog"]["9.9.9"] == "exported"
    assert {"pytorch-ignite", "tqdm"} <= set(metadata["optional_packages_version"])
    inference = json.loads((REPO / "bundles" / bundle / "configs" / "inference.json").read_text(encoding="utf-8"))
    assert runtime_packages(inference) <= set(metadata["optional_packages_version"])
    large_files = (exported / "large_files.yml").read_text(encoding="utf-8")
    assert '"models/model.pt"' in large_files and "sha256" in large_files
    code = "\n".join(p.read_text(encoding="utf-8") for p in exported.rglob("*.py")) + "".join(
        p.read_text(encoding="utf-8") for p in (exported / "configs").glob("*.json"))
    assert "from networks" not in code and '"networks.' not in code

    # the zoo's checks (ci/verify_bundle.py, full mode) through the MONAI functions it calls, on network_def and
    # models/model.pt; a tiny network's sizes are written into the exported inference.json, as a bundle of that size
    verify_metadata(meta_file=str(exported / "configs" / "metadata.json"), filepath=str(SCHEMA))
    if network:
        inference = json.loads((exported / "configs" / "inference.json").read_text(encoding="utf-8"))
        (exported / "configs" / "inference.json").write_text(json.dumps(inference | network), encoding="utf-8")
    clean_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    check = (
        "import sys, torch; from monai.bundle import ckpt_export, load, verify_net_in_out\n"
        "b = sys.argv[1]\n"
        "verify_net_in_out(net_id='network_def', meta_file=b + '/configs/metadata.json', "
        "config_file=b + '/configs/inference.json', bundle_root=b)\n"
        "ckpt_export(net_id='network_def', filepath=b + '/models/verify_model.ts', ckpt_file=b + '/models/model.pt', "
        "meta_file=b + '/configs/metadata.json', config_file=b + '/configs/inference.json', bundle_root=b)\n"
        "net = load(sys.argv[2], bundle_dir=sys.argv[3], workflow_type='inference', device='cpu')\n"
        "assert type(net).__module__.startswith('scripts.'), type(net)\n"
        "saved, loaded = torch.load(b + '/models/model.pt', weights_only=True), net.state_dict()\n"
        "assert saved.keys() == loaded.keys() and all(torch.equal(v, loaded[k]) for k, v in saved.items())\n"
        "import importlib.util; assert importlib.util.find_spec('networks') is None\n"
    )
    # run from the bundle folder (the zoo's convention) with nothing of this repository on sys.path
    done = subprocess.run([sys.executable, "-c", check, str(exported), bundle, str(exported.parent)],
                          cwd=exported, env=clean_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]

    out = tmp_path / "predictions"
    done = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
         "--input_dir", str(cases), "--output_dir", str(out),
         *[arg for key, value in (network | overrides).items() for arg in (f"--{key}", repr(value))]],
        cwd=exported, env=clean_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "inference_report.json").read_text(encoding="utf-8"))
    assert report["succeeded"] and not report["failed"]
