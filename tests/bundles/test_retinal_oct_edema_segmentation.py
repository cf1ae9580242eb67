"""The retinal OCT edema bundle as a user runs it: Model Zoo checks, UNet++ and UNet training, fused inference and
evaluation, bad cubes, resume, real B-scans."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out
from PIL import Image

from data.ai_challenger_oct import pack_bscans_as_cube
from data.synthetic.retinal_oct_edema_segmentation import generate
from engines.inference import InferenceFailed
from losses.exp_log import BatchDiceLoss
from networks.unet_plus_plus import UNet, UNetPlusPlus
from tests.bundles.workflow import missing_workflow_properties, run_bundle

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "retinal_oct_edema_segmentation" / "configs"
SCHEMA = REPO / "tests" / "data" / "zoo_schema" / "meta_schema_20220324.json"
TRAIN = [str(CONFIGS / "train.json")]
TRAIN_UNET = TRAIN + [str(CONFIGS / "unet.json")]
INFERENCE = [str(CONFIGS / "inference.json")]
EVALUATE = INFERENCE + [str(CONFIGS / "evaluate.json")]
WIDTHS = [4, 8, 16, 32, 64]
# CPU-test-sized networks, cubes of 6 B-scans of 64 x 32; everything else is the bundle's own configuration
TINY = {
    "features": WIDTHS, "fusion_features": WIDTHS, "roi_size": [64, 32], "slice_batch_size": 4, "num_workers": 0,
    "expected_slices": 6,
}  # fmt: skip
TRAIN_TINY = {k: v for k, v in TINY.items() if k not in ("fusion_features", "expected_slices")} | {"batch_size": 4}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("oct")
    generate(root, cases=2, seed=0, slices=6, height=64, width=32, val_cases=2, test_cases=2)
    return root


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> dict[str, Path]:
    """The fusion pair: UNet++ (EL-Dice, poly) for 2 epochs and UNet (plain Dice, step schedule) for 1."""
    out = tmp_path_factory.mktemp("train")
    run_bundle(TRAIN, dataset_dir=str(dataset), output_dir=str(out / "unet_plus_plus"), max_epochs=2, **TRAIN_TINY)
    run_bundle(TRAIN_UNET, dataset_dir=str(dataset), output_dir=str(out / "unet"), max_epochs=1, **TRAIN_TINY)
    return {name: out / name for name in ("unet_plus_plus", "unet")}


def _epochs_done(run: Path) -> int:
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)["trainer"]
    return state["iteration"] // state["epoch_length"]


def _models(trained: dict[str, Path]) -> dict[str, str]:
    return {
        "model_path": str(trained["unet_plus_plus"] / "models" / "model.pt"),
        "fusion_model_path": str(trained["unet"] / "models" / "model.pt"),
    }


def test_metadata_validates_offline_against_the_zoo_schema():
    verify_metadata(
        meta_file=str(CONFIGS / "metadata.json"),
        filepath=str(SCHEMA),
        hash_val="662135097106b71067cd1fc657f8720f",
    )


@pytest.mark.parametrize("net_id", ["network_def", "fusion_network_def"])
def test_networks_match_the_declared_input_and_output(net_id):
    verify_net_in_out(net_id=net_id, meta_file=str(CONFIGS / "metadata.json"), config_file=INFERENCE, device="cpu", n=2)


def test_unet_config_switches_network_loss_schedule_and_batch():
    parser = ConfigWorkflow(config_file=TRAIN_UNET, workflow_type=None).parser
    assert type(parser.get_parsed_content("network_def")) is UNet
    assert isinstance(parser.get_parsed_content("loss").dice, BatchDiceLoss)
    scheduler = parser.get_parsed_content("lr_scheduler")
    assert isinstance(scheduler, torch.optim.lr_scheduler.StepLR)
    assert (scheduler.step_size, scheduler.gamma) == (20, 0.1)
    assert parser.get_parsed_content("batch_size") == 32
    default = ConfigWorkflow(config_file=TRAIN, workflow_type=None).parser
    network = default.get_parsed_content("network_def")
    assert isinstance(network, UNetPlusPlus) and sum(p.numel() for p in network.parameters()) == 2_953_027
    assert isinstance(default.get_parsed_content("lr_scheduler"), torch.optim.lr_scheduler.PolynomialLR)


@pytest.mark.parametrize("reference_order", [False, True])
def test_channel_order_setting_reaches_every_neighbour_stack(reference_order):
    """(i-1, i, i+1) by default; ``reference_channel_order`` gives the authors' (i+1, i, i-1) for their checkpoints."""
    overrides = {"reference_channel_order": reference_order}
    train = ConfigWorkflow(config_file=TRAIN, workflow_type=None, **overrides).parser
    inference = ConfigWorkflow(config_file=INFERENCE, workflow_type=None, **overrides).parser
    stacks = [train.get_parsed_content(f"{part}#stack") for part in ("train", "validate")]
    stacks.append(next(t for t in inference.get_parsed_content("preprocessing").transforms if hasattr(t, "reverse")))
    cube = np.arange(5, dtype=np.uint8)[:, None, None] * np.ones((1, 2, 2), np.uint8)
    expected = [3, 2, 1] if reference_order else [1, 2, 3]
    for stack in stacks:
        assert stack({"image": cube, "label": cube, "slice": 2})["image"][:, 0, 0].tolist() == expected


@pytest.mark.parametrize("extra", [[], [str(CONFIGS / "demo.json")]])
def test_poly_schedule_stays_above_zero_until_the_last_epoch(extra):
    """The learning rate of every trained epoch is (1 - e / max_epochs) ** 0.9 > 0, at full and demo size."""
    parser = ConfigWorkflow(config_file=TRAIN + extra, workflow_type=None).parser
    optimizer, scheduler = parser.get_parsed_content("optimizer"), parser.get_parsed_content("lr_scheduler")
    epochs, lr = parser.get_parsed_content("max_epochs"), parser.get_parsed_content("learning_rate")
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([lr * (1 - e / epochs) ** 0.9 for e in range(epochs)], rel=1e-6)
    assert min(rates) > 0


def test_training_keeps_the_best_cube_dice_model_and_a_resumable_checkpoint(trained):
    for name, epochs in (("unet_plus_plus", 2), ("unet", 1)):
        best = torch.load(trained[name] / "models" / "model.pt", weights_only=True)
        assert "encoder.blocks.0.conv_0.conv.weight" in best
        latest = torch.load(trained[name] / "checkpoints" / "latest.pt", weights_only=True)
        assert {"trainer", "network", "optimizer", "lr_scheduler"} <= set(latest)
        assert _epochs_done(trained[name]) == epochs
    assert list((trained["unet_plus_plus"] / "logs").glob("events.out.tfevents.*")), "TensorBoard logs expected"


def test_training_leaves_a_log_a_progress_picture_and_a_validation_summary(trained):
    run = trained["unet_plus_plus"]
    log = (run / "log.txt").read_text()
    assert log.startswith("===== ") and "run started" in log and "val_mean_dice" in log
    with Image.open(run / "progress.png") as picture:
        assert picture.format == "PNG"
    summary = json.loads((run / "validation_summary.json").read_text())
    assert summary["key_metric"] == "val_mean_dice" and summary["last_epoch"] == 2 and summary["epochs_validated"] == 2
    assert summary["best_epoch"] in (1, 2) and summary["best_weights_epoch"] == summary["best_epoch"]
    assert summary["best_weights"].endswith("models/model.pt")
    history = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)["history"]["rows"]
    assert [row["epoch"] for row in history] == [1, 2] and history[0]["lr"] == 0.001


def test_exported_torchscript_reproduces_the_network(trained, tmp_path):
    target = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(target),
        ckpt_file=str(trained["unet_plus_plus"] / "models" / "model.pt"),
        meta_file=str(CONFIGS / "metadata.json"),
        config_file=INFERENCE,
        features=WIDTHS,
    )
    scripted = torch.jit.load(str(target))
    reference = UNetPlusPlus(features=WIDTHS)
    reference.load_state_dict(torch.load(trained["unet_plus_plus"] / "models" / "model.pt", weights_only=True))
    x = torch.randn(2, 3, 64, 32)
    torch.testing.assert_close(scripted(x), reference.eval()(x))


def test_evaluate_prints_and_saves_single_model_and_fused_scores(dataset, trained, tmp_path, capsys):
    out = tmp_path / "eval"
    run_bundle(EVALUATE, dataset_dir=str(dataset), output_dir=str(out), **_models(trained), **TINY)
    printed = capsys.readouterr().out
    assert "## fusion" in printed and "## unet_plus_plus" in printed and "## unet\n" in printed
    scores = json.loads((out / "scores.json").read_text())
    assert list(scores) == ["fusion", "unet_plus_plus", "unet"]
    for table in scores.values():
        assert 0.0 <= table["dice"]["mean"] <= 1.0 and table["auc"] is not None
        assert table["seconds_per_cube"]["mean"] > 0 and table["peak_memory_mb"]["max"] > 0
        assert len(table["cases"]) == 2 and not table["missing_predictions"]
    for variant in scores:
        assert len(list((out / variant).glob("*_seg.nii.gz"))) == 2


def _copy_cube(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_inference_writes_volumes_and_reports_bad_cubes_by_name(dataset, trained, tmp_path):
    test_cubes = sorted((dataset / "Edema_testset" / "original_images").iterdir())
    images = tmp_path / "images"
    for cube in test_cubes:
        _copy_cube(cube, images / cube.name)
    gap = _copy_cube(test_cubes[0], images / "gap.img")
    (gap / "3.bmp").unlink()
    odd = _copy_cube(test_cubes[0], images / "odd.img")
    Image.fromarray(np.zeros((48, 32), np.uint8)).save(odd / "5.bmp")
    (images / "empty.img").mkdir()
    cut = _copy_cube(test_cubes[0], images / "cut.img")
    (cut / "6.bmp").unlink()  # a cube missing its last slice
    (images / "readme.txt").write_text("exported 2026-01-02")
    before = {p: p.read_bytes() for p in images.rglob("*.bmp")}
    out = tmp_path / "pred"
    with pytest.raises(RuntimeError) as failure:  # the bundle runner wraps the workflow's InferenceFailed
        run_bundle(INFERENCE, input_dir=str(images), output_dir=str(out), **_models(trained), **TINY)
    assert isinstance(failure.value.__cause__, InferenceFailed)
    message = str(failure.value.__cause__)
    assert "gap.img: missing slice 3.bmp" in message
    assert "odd.img: slice 5.bmp is 48x32" in message
    assert "empty.img: no slice images" in message
    assert "cut.img: 5 slices (1.bmp..5.bmp), expected 6 (allow_fewer_slices" in message
    report = json.loads((out / "inference_report.json").read_text())
    assert sorted(f["case"] for f in report["failed"]) == ["cut", "empty", "gap", "odd"]
    assert [Path(s["entry"]).name for s in report["skipped_entries"]] == ["readme.txt"]
    assert report["num_entries"] == len(list(images.iterdir()))
    assert report["succeeded"] == [cube.name.removesuffix(".img") for cube in test_cubes]
    assert set(report["peak_memory_mb"]) == set(report["succeeded"])
    for case in report["succeeded"]:
        volume = nib.load(out / f"{case}_seg.nii.gz")
        assert volume.shape == (32, 64, 6) and volume.get_data_dtype() == np.uint8
        assert set(np.unique(np.asarray(volume.dataobj)).tolist()) <= {0, 1, 2, 3}
        rows = (out / f"{case}_det.csv").read_text().splitlines()
        assert rows[0] == "slice,REA,SRF,PED" and [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4", "5", "6"]
    assert not list(out.glob(".*tmp*")), "no half-written files"
    assert {p: p.read_bytes() for p in images.rglob("*.bmp")} == before, "inputs must not change"


def test_real_duke_bscans_go_through_inference_as_a_short_cube(real_samples, tmp_path):
    source = real_samples / "retina_duke_dme_oct" / "image"
    scans = sorted(source.glob("img_*.png"), key=lambda p: int(p.stem.split("_")[1]))
    pack_bscans_as_cube(scans, tmp_path / "images" / "DUKE.img")
    widths = [2, 4, 8, 16, 32]  # the real size costs: the narrowest network, untrained, single model
    torch.save(UNetPlusPlus(features=widths).state_dict(), tmp_path / "model.pt")
    out = tmp_path / "pred"
    # B-scans of 496 x 768 in 512 x 768 windows: padded in height, cropped back
    run_bundle(INFERENCE, input_dir=str(tmp_path / "images"), output_dir=str(out), model_path=str(tmp_path / "model.pt"),
         fusion=False, features=widths, roi_size=[512, 768], slice_batch_size=7, allow_fewer_slices=True)  # fmt: skip
    assert nib.load(out / "DUKE_seg.nii.gz").shape == (768, 496, len(scans))
    assert len((out / "DUKE_det.csv").read_text().splitlines()) == len(scans) + 1


def test_training_resumes_after_the_last_completed_epoch(dataset, trained, tmp_path):
    run = shutil.copytree(trained["unet"], tmp_path / "unet")
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("handlers.checkpoint")  # the bundle's logging.conf replaces the root's handlers
    logger.addHandler(handler)
    try:
        run_bundle(TRAIN_UNET, dataset_dir=str(dataset), output_dir=str(run), max_epochs=2, resume=True, **TRAIN_TINY)
    finally:
        logger.removeHandler(handler)
    assert any(m.endswith("after epoch 1") for m in messages), messages
    assert _epochs_done(run) == 2
    assert (run / "log.txt").read_text().count("run started") == 2, "the resumed run appends to the log"
    summary = json.loads((run / "validation_summary.json").read_text())
    assert summary["last_epoch"] == 2 and summary["epochs_validated"] == 2


@pytest.mark.slow
def test_multi_gpu_config_trains_with_two_cpu_processes(dataset, tmp_path):
    overrides = TRAIN_TINY | {"max_epochs": 1}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run",
        "--config_file", json.dumps(TRAIN + [str(CONFIGS / "multi_gpu_train.json")]),
        f"--dataset_dir={dataset}", f"--output_dir={tmp_path}",
        *[f"--{k}={json.dumps(v)}" if isinstance(v, list) else f"--{k}={v}" for k, v in overrides.items()],
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _epochs_done(tmp_path) == 1
    assert (tmp_path / "models" / "model.pt").is_file()


def test_configs_expose_monais_train_and_inference_workflow_properties(dataset, trained, tmp_path):
    assert missing_workflow_properties(
        TRAIN, "train", dataset_dir=str(dataset), output_dir=str(tmp_path / "train"), **TRAIN_TINY) == []
    assert missing_workflow_properties(
        INFERENCE, "inference", input_dir=str(dataset / "Edema_testset" / "original_images"),
        output_dir=str(tmp_path / "pred"), **_models(trained), **TINY) == []
