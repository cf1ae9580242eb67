"""The cervical spine CT fracture bundle as a user runs it: Model Zoo checks, stage-1 training and prediction,
stage-2 training and checkpoint averaging, two-stage inference from DICOM folders, evaluation, bad studies, real
CT (a neck CT packed as DICOM, a JPEG 2000 series without a cervical spine)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow, verify_metadata, verify_net_in_out

from data.rsna_cervical import load_rsna_cervical_datalist
from data.synthetic.cervical_spine_ct_fracture import generate, write_dicom_series
from engines.inference import InferenceFailed
from formats.rsna_cervical import read_submission
from networks.cervical_spine import CervicalFractureClassifier, CervicalSpineUNet
from networks.runtime import OnnxRuntimeNetwork, OpenVINONetwork, TorchRuntime
from tests.bundles.workflow import missing_workflow_properties, run_bundle
from transforms.rsna_cervical import SaveVertebraMapd, PreprocessStudyd
from utils.errors import error_summary
from utils.precision import Precision, resolve_precision

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "cervical_spine_ct_fracture" / "configs"
SCHEMA = REPO / "tests" / "data" / "zoo_schema" / "meta_schema_20220324.json"
TRAIN = [str(CONFIGS / "train.json")]
CLASSIFIER = TRAIN + [str(CONFIGS / "classifier.json")]
INFERENCE = [str(CONFIGS / "inference.json")]
PREDICT = INFERENCE + [str(CONFIGS / "predict_segmentation.json")]
EVALUATE = INFERENCE + [str(CONFIGS / "evaluate.json")]
# CPU-test-sized networks and studies of 32 x 32 x 32 (16 slices after [::2]); the rest is the bundle's configuration
SEG = {"base_channels": 4, "stage_blocks": [1, 1, 1, 1], "decoder_channels": [8, 8, 8, 8], "head_channels": 8,
       "image_size": 32}  # fmt: skip
CROP = {"vertebra_slices": 8, "vertebra_margin": 2, "vertebra_size": 16, "min_vertebra_voxels": 4}
TRAIN_SEG = SEG | {"crop_slices": 16, "val_window": 16, "num_workers": 0, "dataset_multiplier": 1, "batch_size": 2,
                   "max_epochs": 1, "num_folds": 2, "fold": 0}  # fmt: skip
TRAIN_CLS = CROP | {"classifier_base_channels": 4, "classifier_stage_blocks": [1, 1, 1, 1], "classifier_image_size": 32, "num_workers": 0,
                    "dataset_multiplier": 1, "batch_size": 2, "max_epochs": 2, "num_folds": 2, "fold": 0,
                    "average_top_k": 2}  # fmt: skip
#: the UNet's size settings (of SEG) that the tests build it with directly
UNET_SIZES = ("base_channels", "stage_blocks", "decoder_channels", "head_channels")
INFER = SEG | CROP | {"classifier_image_size": 32, "window": 16, "classifier_base_channels": 4,
                      "classifier_stage_blocks": [1, 1, 1, 1]}  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rsna")
    generate(root, cases=4, seed=0, size=32, slices=32, test_cases=2, segmented_fraction=1.0)
    return root


@pytest.fixture(scope="module")
def runs(dataset, tmp_path_factory) -> Path:
    """Stage 1 trained one epoch and run over every study; stage 2 (ir) trained two epochs on ground-truth label
    maps written as stage-1 outputs, its two checkpoints averaged."""
    out = tmp_path_factory.mktemp("runs")
    run_bundle(TRAIN, dataset_dir=str(dataset), output_dir=str(out / "segmentation"), **TRAIN_SEG)
    run_bundle(PREDICT, input_dir=str(dataset / "train_images"), output_dir=str(out / "predicted"),
               segmentation_model_paths=[str(out / "segmentation" / "models" / "model.pt")], **INFER)  # fmt: skip
    items, _ = load_rsna_cervical_datalist(dataset)
    writer = SaveVertebraMapd(output_dir=out / "truth")
    for item in items:
        data = PreprocessStudyd(segmentation_key="vertebrae", spatial_size=32)(dict(item, vertebrae=item["segmentation"]))
        writer({"study": item["study"], "image": data["image"], "vertebrae": data["vertebrae"].permute(0, 3, 2, 1)})
    run_bundle(CLASSIFIER, dataset_dir=str(dataset), segmentation_dir=str(out / "truth"),
               output_dir=str(out / "classifier"), **TRAIN_CLS)  # fmt: skip
    subprocess.run([sys.executable, str(REPO / "scripts" / "average_checkpoints.py"), str(out / "classifier" / "top_k"),
                    "--top-k", "2", "--output", str(out / "classifier" / "models" / "averaged.pt")], check=True)  # fmt: skip
    return out


def _models(runs: Path) -> dict:
    return {
        "segmentation_model_paths": [str(runs / "segmentation" / "models" / "model.pt")],
        "ir_model_paths": [str(runs / "classifier" / "models" / "averaged.pt")],
        "ip_model_paths": [],
    }


def test_metadata_validates_offline_against_the_zoo_schema():
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(SCHEMA),
                    hash_val="662135097106b71067cd1fc657f8720f")  # fmt: skip


def test_full_size_network_matches_the_declared_input_and_output():
    verify_net_in_out(net_id="network_def", meta_file=str(CONFIGS / "metadata.json"), config_file=INFERENCE,
                      device="cpu", n=1, any=1)  # fmt: skip


def test_configs_hold_the_recipe():
    stage1 = ConfigWorkflow(config_file=TRAIN, workflow_type=None).parser
    assert isinstance(stage1.get_parsed_content("network_def"), CervicalSpineUNet)
    assert [stage1[k] for k in ("learning_rate", "weight_decay", "max_epochs", "batch_size", "crop_slices")] == [
        2e-4, 0.01, 40, 4, 64]
    loss = stage1.get_parsed_content("loss")
    assert (loss.jaccard_weight, loss.min_voxels) == (0.1, 16)
    stage2 = ConfigWorkflow(config_file=CLASSIFIER, workflow_type=None).parser
    network = stage2.get_parsed_content("network_def")
    assert isinstance(network, CervicalFractureClassifier) and network.fc.in_features == 2048
    assert [stage2[k] for k in ("learning_rate", "max_epochs", "vertebra_slices", "vertebra_size", "visible_threshold")] == [
        3e-4, 50, 40, 256, 0.3]
    ip = ConfigWorkflow(config_file=CLASSIFIER, workflow_type=None, classifier_variant="ip_csn_152").parser
    assert ip.get_parsed_content("output_dir").endswith("ip_csn_152/fold0")


def test_a_short_study_sits_at_the_same_slices_in_training_validation_and_inference():
    """A study shorter than the crop and the window is padded the same way by the training crop, the validation
    pipeline + sliding window and the inference sliding window (MONAI's inferer pads symmetrically): a network
    that places the vertebra levels by their distance to the padding must see one layout."""
    sizes = {"crop_slices": 48, "val_window": 48, "window": 48, "pad_multiple": 16}
    stage1 = ConfigWorkflow(config_file=TRAIN, workflow_type=None, **sizes).parser
    inference = ConfigWorkflow(config_file=INFERENCE, workflow_type=None, **sizes).parser
    study = torch.arange(1.0, 37.0).reshape(1, 36, 1, 1).expand(1, 36, 4, 4).contiguous()  # slice k holds k + 1
    crop = [stage1.get_parsed_content(f"train#crop#{i}") for i in range(3)]
    trained = {"image": study, "label": study}
    for transform in crop:
        trained = transform(trained)
    seen = []

    def network(x):
        seen.append(x[0].clone())
        return x

    validation = stage1.get_parsed_content("validate#pad")({"image": study, "label": study})["image"]
    stage1.get_parsed_content("validate#inferer")(validation[None], network)
    inference.get_parsed_content("sliding_window")(study[None], network)
    assert len(seen) == 2
    torch.testing.assert_close(seen[0], torch.as_tensor(trained["image"]))
    torch.testing.assert_close(seen[1], torch.as_tensor(trained["image"]))


def test_training_writes_models_logs_and_top_k_checkpoints(runs):
    assert (runs / "segmentation" / "models" / "model.pt").is_file()
    summary = json.loads((runs / "segmentation" / "validation_summary.json").read_text())
    assert summary["key_metric"] == "val_mean_dice"
    classifier = json.loads((runs / "classifier" / "validation_summary.json").read_text())
    assert classifier["key_metric"] == "val_log_loss" and classifier["epochs_validated"] == 2
    assert len(list((runs / "classifier" / "top_k").glob("*key_metric=*.pt"))) == 2
    averaged = torch.load(runs / "classifier" / "models" / "averaged.pt", weights_only=True)
    assert "fc.weight" in averaged


def test_stage1_prediction_writes_label_maps_and_metadata_for_every_study(dataset, runs):
    studies = sorted(p.name for p in (dataset / "train_images").iterdir())
    for study in studies:
        volume = nib.load(runs / "predicted" / f"{study}_vertebrae.nii.gz")
        assert volume.shape == (32, 32, 16) and volume.get_data_dtype() == np.uint8
        meta = json.loads((runs / "predicted" / f"{study}_vertebrae.json").read_text())
        assert meta["study"] == study and meta["shape_zyx"] == [16, 32, 32]


def _copy_study(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_inference_writes_submission_maps_overlays_and_reports_bad_studies(dataset, runs, tmp_path):
    tests = sorted((dataset / "test_images").iterdir())
    studies = tmp_path / "studies"
    for study in tests:
        _copy_study(study, studies / study.name)
    gap = _copy_study(tests[0], studies / "gap")
    (gap / "16.dcm").unlink()
    mixed = _copy_study(tests[0], studies / "mixed")
    shutil.copy(tests[1] / "3.dcm", mixed / "extra.dcm")
    corrupt = _copy_study(tests[0], studies / "corrupt")
    (corrupt / "5.dcm").write_bytes(b"not a dicom file" * 20)
    (studies / "empty").mkdir()
    out = tmp_path / "pred"
    with pytest.raises(RuntimeError) as failure:
        run_bundle(INFERENCE, input_dir=str(studies), output_dir=str(out), prior_csv=str(dataset / "train.csv"),
                   **_models(runs), **INFER)  # fmt: skip
    assert isinstance(failure.value.__cause__, InferenceFailed)
    report = json.loads((out / "inference_report.json").read_text())
    failed = {f["case"]: f["error"] for f in report["failed"]}
    assert sorted(failed) == ["corrupt", "empty", "gap", "mixed"]
    assert "5.dcm" in failed["corrupt"] and "2 series" in failed["mixed"]
    assert report["succeeded"] == [s.name for s in tests]
    submission = read_submission(out / "submission.csv")
    assert sorted(submission) == [s.name for s in tests]
    for study, probabilities in submission.items():
        assert ((probabilities >= 0.01) & (probabilities <= 0.99)).all()
        assert nib.load(out / f"{study}_vertebrae.nii.gz").shape == (32, 32, 16)
        assert (out / f"{study}_overlay.png").stat().st_size > 0
    assert not list(out.glob(".*tmp*")), "no half-written files"


def test_evaluation_scores_dice_log_loss_against_the_prior_and_auc(dataset, runs, tmp_path, capsys):
    out = tmp_path / "eval"
    run_bundle(EVALUATE, dataset_dir=str(dataset), output_dir=str(out), prior_csv=str(dataset / "train.csv"),
               **_models(runs), **INFER)  # fmt: skip
    scores = json.loads((out / "scores.json").read_text())
    assert scores["num_segmented"] == 4 and scores["num_predicted"] == 4 and not scores["missing"]
    assert set(scores["dice"]) == {f"C{i}" for i in range(1, 8)} | {"mean"}
    assert scores["fracture"]["num_studies"] == 4 and scores["prior_weighted_log_loss"] > 0
    printed = capsys.readouterr().out
    assert "vertebra Dice" in printed and "all-prevalence prior" in printed and "AUC" in printed


def test_a_label_map_that_does_not_fit_its_study_is_named(dataset, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(dataset, root, ignore=shutil.ignore_patterns("preprocessed"))
    seg = sorted((root / "segmentations").glob("*.nii"))[0]
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 30), np.uint8), np.eye(4)), seg)
    parser = ConfigWorkflow(config_file=TRAIN, workflow_type=None, dataset_dir=str(root), **TRAIN_SEG).parser
    items = parser.get_parsed_content("segmented_items")
    item = next(i for i in items if i["label"] == str(seg))
    with pytest.raises(RuntimeError) as failure:  # MONAI's Compose wraps the reader's CaseReadError
        parser.get_parsed_content("validate#preprocessing")(item)
    message = error_summary(failure.value)
    assert message.startswith("CaseReadError") and seg.name in message and "(32, 32, 30)" in message


def _neck_ct_as_dicom(real_samples: Path, folder: Path) -> None:
    """The real OpenKBP neck CT (NIfTI, P-R-I) written as an axial DICOM series (LPS, feet to head)."""
    image = nib.as_closest_canonical(nib.load(real_samples / "neck_ct_openkbp" / "derived_pt_4_ct_hu.nii.gz"))
    hu = np.asarray(image.dataobj).astype(np.int16)[::-1, ::-1, :]  # RAS -> LPS
    spacing = np.abs(np.diag(image.affine)[:3])
    corner = image.affine @ np.array([hu.shape[0] - 1, hu.shape[1] - 1, 0, 1])
    origin = np.array([-corner[0], -corner[1], corner[2]])
    write_dicom_series(folder, hu, origin, spacing, "1.2.826.0.1.3680043.8.498.4")


def test_real_neck_ct_and_a_jpeg2000_series_without_spine_go_through_inference(real_samples, dataset, runs, tmp_path):
    studies = tmp_path / "real"
    _neck_ct_as_dicom(real_samples, studies / "neck_ct_openkbp")
    (studies / "ct_dicom_series").mkdir()
    for number, path in enumerate(sorted((real_samples / "ct_dicom_series").glob("CT.*")), start=1):
        shutil.copy(path, studies / "ct_dicom_series" / f"{number}.dcm")  # named as the challenge names slices
    out = tmp_path / "pred"
    run_bundle(INFERENCE, input_dir=str(studies), output_dir=str(out), prior_csv=str(dataset / "train.csv"),
               **_models(runs), **(INFER | {"min_vertebra_voxels": 10**6}))  # fmt: skip
    submission = read_submission(out / "submission.csv")
    prior = np.clip(np.mean([[int(v) for v in line.split(",")[1:]] for line in
                             (dataset / "train.csv").read_text().splitlines()[1:]], axis=0), 0, 1)  # fmt: skip
    for study in ("neck_ct_openkbp", "ct_dicom_series"):
        np.testing.assert_allclose(submission[study], prior, atol=1e-6)  # nothing found above the threshold: prior
        assert (out / f"{study}_overlay.png").is_file()


@pytest.mark.parametrize("stage", ["segmentation", "classifier"])
def test_multi_gpu_config_trains_both_stages_with_two_cpu_processes(dataset, runs, tmp_path, stage):
    configs = (TRAIN if stage == "segmentation" else CLASSIFIER) + [str(CONFIGS / "multi_gpu_train.json")]
    # one step per process: a study per step in stage 1, two crops (BatchNorm of a 1x1x1 map needs two) in stage 2
    if stage == "segmentation":
        overrides = TRAIN_SEG | {"batch_size": 1}
    else:
        overrides = TRAIN_CLS | {"segmentation_dir": str(runs / "truth"), "dataset_multiplier": 2}
    overrides = overrides | {"max_epochs": 1}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run",
        "--config_file", json.dumps(configs), f"--dataset_dir={dataset}", f"--output_dir={tmp_path}",
        *[f"--{k}={json.dumps(v)}" if isinstance(v, list) else f"--{k}={v}" for k, v in overrides.items()],
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "models" / "model.pt").is_file()


def test_configs_expose_monais_train_and_inference_workflow_properties(dataset, runs, tmp_path):
    assert missing_workflow_properties(
        TRAIN, "train", dataset_dir=str(dataset), output_dir=str(tmp_path / "train"), **TRAIN_SEG) == []
    assert missing_workflow_properties(
        INFERENCE, "inference", input_dir=str(dataset / "test_images"), output_dir=str(tmp_path / "pred"),
        prior_csv=str(dataset / "train.csv"), **_models(runs), **INFER) == []


@pytest.fixture(scope="module")
def random_models(tmp_path_factory) -> dict:
    """Tiny random segmentation and classifier weights; the UNet's logits centred per class (on a random volume) so
    that its argmax varies over the volume: an untrained net otherwise labels one class everywhere, which any
    backend reproduces trivially."""
    folder = tmp_path_factory.mktemp("random_models")
    torch.manual_seed(0)
    seg = CervicalSpineUNet(**{k: INFER[k] for k in UNET_SIZES})
    with torch.no_grad():
        logits = seg.head[-1].conv
        logits.bias.sub_(seg.eval()(torch.randn(1, 1, 16, 32, 32)).mean((0, 2, 3, 4)))
    classifier = CervicalFractureClassifier("ir_csn_152", base_channels=4, stage_blocks=[1, 1, 1, 1])
    torch.save(seg.state_dict(), folder / "seg.pt")
    torch.save(classifier.state_dict(), folder / "ir.pt")
    return {"segmentation_model_paths": [str(folder / "seg.pt")], "ir_model_paths": [str(folder / "ir.pt")],
            "ip_model_paths": []}  # fmt: skip


def _inference_parser(dataset: Path, models: dict, out: Path, **override):
    return ConfigWorkflow(config_file=INFERENCE, workflow_type=None, input_dir=str(dataset / "test_images"),
                          output_dir=str(out), prior_csv=str(dataset / "train.csv"), **models,
                          **(INFER | override)).parser  # fmt: skip


def test_precision_wraps_each_fold_model_and_the_runner_adds_nothing(dataset, random_models, tmp_path):
    """The precision and backend settings apply to each fold model inside the sliding window (and to each
    classifier); the runner runs the ensemble as it is (fp32, torch), so nothing is wrapped twice."""
    parser = _inference_parser(dataset, random_models, tmp_path, precision="bf16+channels_last", backend="torch")
    for key in ("segmentation_models", "classifier_models"):
        (model,) = parser.get_parsed_content(key)
        assert isinstance(model, TorchRuntime) and model.precision == Precision(torch.bfloat16, channels_last=True)
    runner = parser.get_parsed_content("runner")
    assert (runner.precision, runner.backend) == (Precision(), "torch")
    auto = _inference_parser(dataset, random_models, tmp_path)
    expected = resolve_precision("auto", "cpu", auto["auto_cpu_precision"])
    (model,) = auto.get_parsed_content("segmentation_models")
    assert isinstance(model, TorchRuntime) and model.precision == expected  # backend auto on the CPU: torch


def test_fp32_runs_the_fold_models_exactly(dataset, random_models, tmp_path):
    parser = _inference_parser(dataset, random_models, tmp_path, precision="fp32", backend="torch")
    (runtime,) = parser.get_parsed_content("segmentation_models")
    model = CervicalSpineUNet(**{k: INFER[k] for k in UNET_SIZES})
    model.load_state_dict(torch.load(random_models["segmentation_model_paths"][0], weights_only=True))
    x = torch.randn(1, 1, 16, 32, 32)
    with torch.inference_mode():
        assert torch.equal(runtime(x), model.eval()(x))
    with pytest.raises(RuntimeError) as failure:  # MONAI's config parser wraps the ValueError
        _inference_parser(dataset, random_models, tmp_path, precision="fp64").get_parsed_content("segmentation_models")
    assert error_summary(failure.value).startswith("ValueError: precision 'fp64'")


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_runtime_backends_agree_with_torch_fp32_through_the_inference_config(dataset, random_models, tmp_path, backend):
    """Each fold model is exported to ONNX alone (the sliding window stays in Python): the label maps agree with
    PyTorch fp32 on >= 99.5 % of the voxels and the fracture probabilities within 1e-3."""
    outputs = {}
    for name in ("torch", backend):
        out = tmp_path / name
        workflow = run_bundle(INFERENCE, input_dir=str(dataset / "test_images"), output_dir=str(out),
                              prior_csv=str(dataset / "train.csv"), precision="fp32", backend=name,
                              **random_models, **INFER)  # fmt: skip
        outputs[name] = out
        if name != "torch":
            runtime = OnnxRuntimeNetwork if backend == "onnxruntime" else OpenVINONetwork
            assert all(isinstance(m, runtime) for m in workflow.parser.get_parsed_content("segmentation_models"))
    reference, other = (read_submission(outputs[n] / "submission.csv") for n in ("torch", backend))
    assert sorted(reference) == sorted(other)
    for study in reference:
        maps = [np.asarray(nib.load(outputs[n] / f"{study}_vertebrae.nii.gz").dataobj) for n in ("torch", backend)]
        assert len(np.unique(maps[0])) > 2, "the random network should label several classes"
        assert (maps[0] == maps[1]).mean() >= 0.995
        np.testing.assert_allclose(other[study], reference[study], atol=1e-3)


def test_a_missing_runtime_package_is_named(dataset, random_models, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    parser = _inference_parser(dataset, random_models, tmp_path, backend="openvino")
    with pytest.raises(RuntimeError) as failure:  # MONAI's config parser wraps the error of the expression
        parser.get_parsed_content("segmentation_models")
    message = error_summary(failure.value)
    assert "'openvino'" in message and "pip install openvino" in message


def test_the_docs_torchscript_export_command_writes_a_scripted_network(tmp_path):
    """``monai.bundle ckpt_export network_def ...`` as the bundle docs give it (scripted; tiny sizes): the
    TorchScript file loads and gives the eager network's output, also at a size whose slices, rows and columns
    are not multiples of the encoder's strides (which a trace would refuse)."""
    torch.manual_seed(0)
    sizes = {k: INFER[k] for k in UNET_SIZES}
    network = CervicalSpineUNet(**sizes).eval()
    torch.save(network.state_dict(), tmp_path / "model.pt")
    command = [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def",
               "--filepath", str(tmp_path / "seg.ts"), "--ckpt_file", str(tmp_path / "model.pt"),
               "--meta_file", str(CONFIGS / "metadata.json"), "--config_file", str(CONFIGS / "inference.json"),
               *[f"--{k}={json.dumps(v)}" for k, v in sizes.items()]]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    scripted = torch.jit.load(tmp_path / "seg.ts")
    for shape in ((2, 1, 32, 64, 64), (1, 1, 20, 40, 56)):
        x = torch.randn(shape)
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), network(x))
