"""The FUGC 2025 fetal cervix bundle as a user runs it: Model Zoo checks, UniMatch for both networks, automatic
pseudo-label selection, the self-training stage, the logit-ensemble inference and evaluation, the challenge's
model.py exported from the trained bundle, bad inputs, real ultrasound (PSFHS) images, and the CPU deployment
settings (precision, backend) of every prediction."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import itk
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, verify_metadata, verify_net_in_out
from PIL import Image

from data.synthetic.fetal_cervix_ultrasound_segmentation import HIDDEN_LABEL_DIR, generate
from engines.inference import InferenceFailed
from engines.self_training import selection_quality
from formats.errors import CaseReadError
from formats.png import save_png_atomic, save_rgb_png_atomic
from tests.bundles.workflow import missing_workflow_properties, run_bundle
from transforms.fugc import LoadFUGCCased
from utils.precision import cpu_has_native_bf16, resolve_precision

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "fetal_cervix_ultrasound_segmentation" / "configs"
SCHEMA = REPO / "tests" / "data" / "zoo_schema" / "meta_schema_20220324.json"
TRAIN = [str(CONFIGS / "train.json")]
RESNET = [str(CONFIGS / "resnet.json")]
SUPERVISED = [str(CONFIGS / "supervised.json")]
SELF_TRAINING = SUPERVISED + [str(CONFIGS / "self_training.json")]
INFERENCE = [str(CONFIGS / "inference.json")]
PVT_TINY = {"variant": "b1", "dims": [8, 16, 24, 32], "num_heads": [1, 1, 1, 2], "depths": [1, 1, 1, 1]}
RESNET_TINY = {"variant": "resnet34d", "widths": [8, 16, 16, 24], "stem_width": 4, "layers": [1, 1, 1, 1]}
# CPU-test-sized networks and runs; everything else is the bundle's own configuration
TRAIN_TINY = {"num_workers": 0, "num_validation": 2, "batch_size": 2, "unlabelled_batch_size": 2}
NETS_TINY = {"pvt_encoder_kwargs": PVT_TINY, "resnet_encoder_kwargs": RESNET_TINY}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fugc")
    generate(root / "train", cases=12, seed=0, height=32, width=48, labelled=0.5)
    generate(root / "test", cases=3, seed=1, height=32, width=48, heldout=True)
    return root


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> Path:
    """UniMatch (2 iterations) for both networks, the pseudo-label selection, one self-training epoch each."""
    out = tmp_path_factory.mktemp("runs")
    data = {"dataset_dir": str(dataset / "train"), **TRAIN_TINY}
    for name, extra, kwargs in (("pvt_v2_b1", [], PVT_TINY), ("resnet34d", RESNET, RESNET_TINY)):
        run_bundle(TRAIN + extra, output_dir=str(out / "unimatch" / name), max_epochs=1, semi_epoch_length=2,
                   encoder_kwargs=kwargs, **data)
    run_bundle(INFERENCE + [str(CONFIGS / "pseudo_labels.json")], runs_dir=str(out / "unimatch"),
               output_dir=str(out / "pseudo_labels"), min_score=0.0, top_fraction=0.5,
               dataset_dir=str(dataset / "train"), num_validation=2, **NETS_TINY)
    for name, extra, kwargs in (("pvt_v2_b1", [], PVT_TINY), ("resnet34d", RESNET, RESNET_TINY)):
        run_bundle(TRAIN + extra + SELF_TRAINING, output_dir=str(out / "self_training" / name), max_epochs=1,
                   epoch_length=2, encoder_kwargs=kwargs, selection_path=str(out / "pseudo_labels" / "selection.json"),
                   init_model_path=str(out / "unimatch" / name / "models" / "model.pt"), **data)
    return out


def test_metadata_validates_offline_against_the_zoo_schema():
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(SCHEMA),
                    hash_val="662135097106b71067cd1fc657f8720f")


def test_network_matches_the_declared_input_and_output():
    verify_net_in_out(net_id="network_def", meta_file=str(CONFIGS / "metadata.json"), config_file=INFERENCE,
                      device="cpu", n=2, pvt_encoder_kwargs=PVT_TINY)


@pytest.mark.parametrize(
    "files, ids",
    [
        (TRAIN, ["train#trainer", "validate#evaluator", "lr_scheduler"]),
        (TRAIN + RESNET, ["network_def"]),
        (TRAIN + SELF_TRAINING, ["train#trainer", "lr_scheduler"]),
        (TRAIN + [str(CONFIGS / "multi_gpu_train.json")], ["train#mix_sampler"]),
        (INFERENCE + [str(CONFIGS / "evaluate.json")], ["variants"]),
        (INFERENCE + [str(CONFIGS / "pseudo_labels.json")], ["datalist"]),
    ],
)
def test_configs_parse_and_hold_the_recipe_values(files, ids, dataset):
    parser = ConfigParser()
    parser.read_config(files)
    assert parser["learning_rate" if "learning_rate" in parser else "num_classes"] is not None
    for key in ids:
        assert key in parser
    if files == TRAIN:
        assert (parser["conf_threshold"], parser["strong_weights"], parser["fp_weight"], parser["loss_scale"]) == (
            0.95, [0.25, 0.25], 0.5, 0.5)
        assert (parser["learning_rate"], parser["weight_decay"], parser["schedule_milestone"]) == (1e-4, 0.01, 62)


def test_self_training_keeps_its_selection_and_trains_on_it(trained, dataset):
    selection = json.loads((trained / "pseudo_labels" / "selection.json").read_text())
    assert selection["num_predicted"] == 6 and selection["num_kept"] == 3  # top half of the unlabelled images
    assert {"confidence", "agreement", "plausibility", "score", "kept"} <= set(next(iter(selection["cases"].values())))
    quality = selection_quality(trained / "pseudo_labels" / "selection.json", dataset / "train" / HIDDEN_LABEL_DIR)
    assert quality["kept"]["num"] == 3 and quality["dropped"]["num"] == 3
    for name in ("pvt_v2_b1", "resnet34d"):
        assert (trained / "self_training" / name / "models" / "model.pt").is_file()


def test_ensemble_inference_writes_label_maps_and_overlays_at_the_input_size(trained, dataset, tmp_path):
    run_bundle(INFERENCE, input_dir=str(dataset / "test"), runs_dir=str(trained / "self_training"),
               output_dir=str(tmp_path), save_overlay=True, **NETS_TINY)
    pred = np.asarray(Image.open(tmp_path / "0000.png"))
    assert pred.shape == (32, 48) and set(np.unique(pred)) <= {0, 1, 2}
    assert (tmp_path / "overlays" / "0000_overlay.png").is_file()


def test_evaluation_scores_the_ensemble_and_each_network(trained, dataset, tmp_path):
    run_bundle(INFERENCE + [str(CONFIGS / "evaluate.json")], dataset_dir=str(dataset / "test"), evaluate_all=True,
               runs_dir=str(trained / "self_training"), output_dir=str(tmp_path), **NETS_TINY)
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert set(scores) == {"ensemble", "pvt_v2_b1", "resnet34d"}
    for table in scores.values():
        assert table["num_cases"] == 3 and 0 <= table["dice"] <= 1 and table["hd"] >= 0 and table["time_ms"] > 0


def test_submission_exported_from_the_bundle_follows_the_challenge_interface(trained, tmp_path):
    run_bundle(INFERENCE + [str(CONFIGS / "export_submission.json")], runs_dir=str(trained / "self_training"),
               submission_dir=str(tmp_path), **NETS_TINY)
    spec = importlib.util.spec_from_file_location("submission_model", tmp_path / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    submission = module.model()
    submission.load(str(tmp_path))
    X = np.random.default_rng(0).integers(0, 256, (3, 336, 544), dtype=np.uint8)
    pred = submission.predict(X)
    assert pred.shape == (336, 544) and set(np.unique(pred)) <= {0, 1, 2}
    # the same labels as the bundle's ensemble on the same image
    parser = ConfigParser()
    parser.read_config(INFERENCE)
    parser.update({"runs_dir": str(trained / "self_training"), **NETS_TINY, "device": "cpu"})
    with torch.no_grad():
        expected = parser.get_parsed_content("ensemble").eval()(torch.from_numpy(X / 255.0).float()[None])[0].argmax(0)
    assert (torch.from_numpy(pred.astype(np.int64)) == expected).float().mean() > 0.995
    with pytest.raises(ValueError, match="expected an image"):
        submission.predict(X[:, :100])


def _write_case(root: Path, name: str, image: np.ndarray, label: np.ndarray | None = None) -> None:
    if image.ndim == 2:
        save_png_atomic(root / "images" / f"{name}.png", image)
    else:
        Image.fromarray(image).save(root / "images" / f"{name}.png") if image.shape[-1] == 4 else \
            save_rgb_png_atomic(root / "images" / f"{name}.png", image)
    if label is not None:
        save_png_atomic(root / "labels" / f"{name}.png", label)


def test_bad_inputs_are_named_and_good_ones_still_predicted(trained, tmp_path):
    root = tmp_path / "cases"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rgb = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    _write_case(root, "good", rgb, np.zeros((32, 48), np.uint8))
    _write_case(root, "grey", rgb[..., 0])
    _write_case(root, "rgba_opaque", np.dstack([rgb, np.full((32, 48), 255, np.uint8)]))
    _write_case(root, "rgba_transparent", np.dstack([rgb, np.full((32, 48), 7, np.uint8)]))
    _write_case(root, "values", rgb, np.full((32, 48), 3, np.uint8))
    _write_case(root, "size", rgb, np.zeros((30, 48), np.uint8))
    save_png_atomic(root / "labels" / "orphan.png", np.zeros((32, 48), np.uint8))
    (root / "images" / "broken.png").write_bytes(b"not a png")
    loader = LoadFUGCCased()
    with pytest.raises(CaseReadError, match="outside 0..2"):
        loader({"image": str(root / "images" / "values.png"), "label": str(root / "labels" / "values.png")})
    with pytest.raises(CaseReadError, match="differs from its image"):
        loader({"image": str(root / "images" / "size.png"), "label": str(root / "labels" / "size.png")})
    assert loader({"image": str(root / "images" / "grey.png")})["image"].shape == (3, 32, 48)
    out = tmp_path / "pred"
    with pytest.raises(RuntimeError) as failure:  # monai.bundle wraps the workflow's InferenceFailed
        run_bundle(INFERENCE, input_dir=str(root), runs_dir=str(trained / "self_training"), output_dir=str(out),
                   **NETS_TINY)
    assert isinstance(failure.value.__cause__, InferenceFailed)
    report = json.loads((out / "inference_report.json").read_text())
    assert {f["case"] for f in report["failed"]} == {"rgba_transparent", "broken"}  # inference reads no label
    assert {p.stem for p in out.glob("*.png")} == {"good", "grey", "rgba_opaque", "values", "size"}
    # the evaluation reads the labels: the wrong ones fail by name, the others are scored
    run_bundle(INFERENCE + [str(CONFIGS / "evaluate.json")], dataset_dir=str(root), evaluate_all=True,
               runs_dir=str(trained / "self_training"), output_dir=str(tmp_path / "eval"), **NETS_TINY)
    report = json.loads((tmp_path / "eval" / "ensemble" / "inference_report.json").read_text())
    assert {f["case"] for f in report["failed"]} == {"values", "size"}


def test_real_psfhs_ultrasound_runs_through_the_pipeline(real_samples, trained, tmp_path):
    # PSFHS transperineal ultrasound (3-class masks: pubic symphysis, fetal head), the nearest public stand-in
    root = tmp_path / "psfhs"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for path in sorted((real_samples / "fetal_psfhs").glob("img_*.mha")):
        case = path.stem[4:]
        planes = itk.array_from_image(itk.imread(str(path)))  # (3, 256, 256) uint8
        label = itk.array_from_image(itk.imread(str(path.with_name(f"lbl_{case}.mha"))))
        save_rgb_png_atomic(root / "images" / f"{case}.png", np.ascontiguousarray(planes.transpose(1, 2, 0)))
        save_png_atomic(root / "labels" / f"{case}.png", label.astype(np.uint8))
    loaded = LoadFUGCCased()({"image": str(root / "images" / "03744.png"), "label": str(root / "labels" / "03744.png")})
    assert loaded["image"].shape == (3, 256, 256) and set(np.unique(loaded["label"].numpy())) == {0, 1, 2}
    run_bundle(INFERENCE + [str(CONFIGS / "evaluate.json")], dataset_dir=str(root), evaluate_all=True,
               runs_dir=str(trained / "self_training"), output_dir=str(tmp_path / "eval"), **NETS_TINY)
    scores = json.loads((tmp_path / "eval" / "scores.json").read_text())
    assert scores["ensemble"]["num_cases"] == 2 and np.isfinite(scores["ensemble"]["hd"])


def test_configs_expose_monais_train_and_inference_workflow_properties(trained, dataset, tmp_path):
    assert missing_workflow_properties(
        TRAIN, "train", dataset_dir=str(dataset / "train"), output_dir=str(tmp_path / "train"), encoder_kwargs=PVT_TINY,
        **TRAIN_TINY) == []
    assert missing_workflow_properties(
        INFERENCE, "inference", input_dir=str(dataset / "test"), runs_dir=str(trained / "self_training"),
        output_dir=str(tmp_path / "pred"), **NETS_TINY) == []


# ----------------------------------------------------------------------------------------------- CPU deployment


def _benchmark_script():
    spec = importlib.util.spec_from_file_location("benchmark_script", REPO / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _error_text(error: BaseException) -> str:
    """The messages of ``error`` and of every error it was raised from (monai.bundle wraps the original)."""
    messages = []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__ or error.__context__
    return "\n".join(messages)


def _mixed_size_cases(root: Path) -> Path:
    """Images of two sizes: 32 x 48 (a multiple of the networks' strides) and 37 x 53 (where they resize)."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(3)
    for name, size in (("even", (32, 48)), ("odd", (37, 53))):
        _write_case(root, name, rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return root


def _labels(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def test_cpu_settings_exist_resolve_and_reach_every_prediction(trained, dataset):
    parser = ConfigParser()
    parser.read_config(INFERENCE + [str(CONFIGS / "evaluate.json"), str(CONFIGS / "pseudo_labels.json")])
    for consumer in ("runner", "evaluation", "selection"):  # inference, evaluation, pseudo-label prediction
        for key in ("precision", "auto_cpu_precision", "backend", "auto_cpu_backend"):
            assert parser.get(f"{consumer}#{key}") == f"@{key}", (consumer, key)
    parser = ConfigParser()
    parser.read_config(INFERENCE)
    assert (parser["precision"], parser["auto_cpu_precision"], parser["backend"], parser["auto_cpu_backend"]) == (
        "auto", "bf16+channels_last", "auto", "openvino")
    assert "amp" not in parser
    parser.update({"input_dir": str(dataset / "test"), "runs_dir": str(trained / "self_training"), **NETS_TINY,
                   "device": "cpu"})
    runner = parser.get_parsed_content("runner")
    assert runner.precision == resolve_precision("auto", "cpu", "bf16+channels_last")
    assert runner.precision.name == ("bf16+channels_last" if cpu_has_native_bf16() else "fp32")
    # what scripts/benchmark.py prints as "inference.json's default here"
    default = _benchmark_script().default_path("fetal_cervix_ultrasound_segmentation", torch.device("cpu"))
    assert runner.backend == "openvino"
    assert default == {"precision": "auto", "path": runner.precision.name, "backend_setting": "auto", "backend": "openvino"}


def test_fp32_inference_is_the_ensembles_exact_fp32_argmax(trained, tmp_path):
    cases = _mixed_size_cases(tmp_path / "cases")
    run_bundle(INFERENCE, input_dir=str(cases), runs_dir=str(trained / "self_training"),
               output_dir=str(tmp_path / "fp32"), precision="fp32", **NETS_TINY)
    parser = ConfigParser()
    parser.read_config(INFERENCE)
    parser.update({"runs_dir": str(trained / "self_training"), **NETS_TINY, "device": "cpu"})
    ensemble, preprocessing = parser.get_parsed_content("ensemble").eval(), parser.get_parsed_content("preprocessing")
    written = _labels(tmp_path / "fp32")
    assert set(written) == {"even", "odd"}
    for name, labels in written.items():
        image = preprocessing({"case": name, "image": str(cases / "images" / f"{name}.png")})["image"]
        with torch.inference_mode():
            expected = ensemble(image.as_tensor()[None].float())[0].argmax(0).numpy()
        np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_runtime_backends_agree_with_torch_fp32_on_images_of_two_sizes(backend, trained, tmp_path):
    # the logit ensemble exported to ONNX once (dynamic axes), then run on a size it was not traced on
    cases = _mixed_size_cases(tmp_path / "cases")
    common = {"input_dir": str(cases), "runs_dir": str(trained / "self_training"), "precision": "fp32", **NETS_TINY}
    run_bundle(INFERENCE, output_dir=str(tmp_path / "torch"), backend="torch", **common)
    run_bundle(INFERENCE, output_dir=str(tmp_path / backend), backend=backend, **common)
    reference, runtime = _labels(tmp_path / "torch"), _labels(tmp_path / backend)
    assert set(runtime) == set(reference) == {"even", "odd"}
    agree = sum(int((runtime[n] == reference[n]).sum()) for n in reference)
    assert agree / sum(labels.size for labels in reference.values()) >= 0.995


@pytest.mark.parametrize("config", ["inference.json", "evaluate.json", "pseudo_labels.json"])
@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("precision", "fp33", "precision 'fp33' is not 'auto' or '<dtype>[+channels_last]'"),
        ("auto_cpu_precision", "int8", "precision 'int8' is not 'auto' or '<dtype>[+channels_last]'"),
        ("backend", "tensorrt", "backend 'tensorrt' is not one of"),
        ("auto_cpu_backend", "tensorrt", "auto_cpu_backend 'tensorrt' is not one of"),
    ],
)
def test_a_wrong_setting_stops_the_run_naming_it(config, setting, value, message, trained, dataset, tmp_path):
    files = INFERENCE if config == "inference.json" else INFERENCE + [str(CONFIGS / config)]
    data = {"dataset_dir": str(dataset / "train"), "num_validation": 2} if config == "pseudo_labels.json" else {
        "dataset_dir": str(dataset / "test"), "evaluate_all": True}
    with pytest.raises(Exception) as failure:
        run_bundle(files, input_dir=str(dataset / "test"), runs_dir=str(trained / "self_training"),
                   output_dir=str(tmp_path / "out"), **data, **NETS_TINY, **{setting: value})
    assert message in _error_text(failure.value)
    assert not list((tmp_path / "out").rglob("*.png"))  # stopped before any case was written


def test_benchmark_table_gives_every_paths_agreement():
    from benchmarks.common import PathResult, TimingStats
    from benchmarks.fetal_cervix_ultrasound_segmentation import _path_rows

    results = [
        PathResult("fp32", "ok", stats=TimingStats([20.0], warmup=0), agreement=1.0, speedup=1.0),
        PathResult("bf16+channels_last", "ok", stats=TimingStats([8.0], warmup=0), agreement=0.99871, speedup=2.5),
        PathResult("openvino", "skipped: package 'openvino' not installed (pip install openvino)"),
    ]
    rows = _path_rows("logit ensemble", results)
    assert rows[1] == ["logit ensemble", "bf16+channels_last", "8.0", "2.50x", "99.871 %", ""]
    assert rows[2][4] is None and rows[2][5].startswith("skipped: package 'openvino'")
