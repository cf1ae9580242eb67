"""The angioma bundle as a user runs it: Model Zoo checks, train folds -> ensemble inference -> ablation, bad
inputs, resume, DDP, and the real CCF BDCI images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out
from PIL import Image

from data.synthetic.angioma_ultrasound_segmentation import generate
from engines.inference import InferenceFailed
from metrics.ccf_bdci import dice_score
from tests.bundles.workflow import missing_workflow_properties, run_bundle
from formats.png import fit_mask_to_image, read_mask_png

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "angioma_ultrasound_segmentation" / "configs"
SCHEMA = REPO / "tests" / "data" / "zoo_schema" / "meta_schema_20220324.json"
TRAIN = [str(CONFIGS / "train.json")]
INFERENCE = [str(CONFIGS / "inference.json")]
EVALUATE = INFERENCE + [str(CONFIGS / "evaluate.json")]
# a CPU-test-sized network; everything else is the bundle's own configuration
NET = {"image_size": 64, "encoder": "resnet", "encoder_kwargs": {"variant": "resnet18", "widen_factor": 0.25}}
TINY = {**NET, "num_workers": 0, "batch_size": 4, "val_batch_size": 4}
FOLDS = [0, 1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ccf_bdci")
    generate(root, cases=10, seed=0, test_cases=3)
    return root


@pytest.fixture(scope="module")
def runs(dataset, tmp_path_factory) -> Path:
    """Folds 0 and 1 (of 5) trained for 2 epochs; fold 1 in two runs, the second resuming the first."""
    out = tmp_path_factory.mktemp("runs")
    run_bundle(TRAIN, dataset_dir=str(dataset), fold=0, output_dir=str(out / "fold0"), max_epochs=2, **TINY)
    run_bundle(TRAIN, dataset_dir=str(dataset), fold=1, output_dir=str(out / "fold1"), max_epochs=1, **TINY)
    run_bundle(TRAIN, dataset_dir=str(dataset), fold=1, output_dir=str(out / "fold1"), max_epochs=2, resume=True, **TINY)
    return out


def _predict(images: Path, out: Path, runs: Path, **override) -> ConfigWorkflow:
    return run_bundle(
        INFERENCE, input_dir=str(images), output_dir=str(out), runs_dir=str(runs), folds=FOLDS, **NET, **override
    )


def test_metadata_validates_offline_against_the_zoo_schema():
    verify_metadata(
        meta_file=str(CONFIGS / "metadata.json"),
        filepath=str(SCHEMA),
        hash_val="662135097106b71067cd1fc657f8720f",
    )


def test_network_matches_the_declared_input_and_output():
    verify_net_in_out(
        net_id="network_def", meta_file=str(CONFIGS / "metadata.json"), config_file=INFERENCE, device="cpu", n=2
    )


def test_loss_is_the_seeds_soft_dice_over_the_whole_batch():
    loss = ConfigWorkflow(config_file=TRAIN, workflow_type=None, **TINY).parser.get_parsed_content("loss")
    logits, target = torch.randn(3, 1, 8, 8), (torch.rand(3, 1, 8, 8) > 0.6).float()
    p = torch.sigmoid(logits)
    seed = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)  # the rank-1 calc_loss(bce_weight=0)
    torch.testing.assert_close(loss(logits, target), seed)


def test_model_is_selected_by_the_lowest_validation_loss_of_all_epochs_but_the_last(tmp_path):
    """The seed saves when the validation loss (the batch-size-weighted mean of the batches' soft Dice losses) is
    at most the lowest so far and the 0-based epoch index is at most epochs - 2."""
    out = {"output_dir": str(tmp_path)}  # the handlers it builds open their log folders
    parser = ConfigWorkflow(config_file=TRAIN, workflow_type=None, **TINY, **out, max_epochs=100).parser
    assert list(parser.get_parsed_content("validate#key_metric")) == ["val_loss"]
    assert "val_mean_dice" in parser.get_parsed_content("validate#additional_metrics")
    saver = parser.get_parsed_content("validate#handlers")[-1]
    assert saver.key_metric_max_epoch == 99  # 1-based: the seed's i <= 98
    metric = parser.get_parsed_content("validate#metrics#val_loss")
    loss = parser.get_parsed_content("loss")
    batches = [(torch.randn(3, 1, 8, 8), (torch.rand(3, 1, 8, 8) > 0.5).float()) for _ in range(2)]
    batches.append((torch.randn(1, 1, 8, 8), torch.ones(1, 1, 8, 8)))
    metric.reset()
    for logits, target in batches:
        metric.update((logits, target))
    seed = sum(loss(x, y).item() * len(x) for x, y in batches) / 7  # train.py: valid_loss / len(valid_list)
    assert metric.compute() == pytest.approx(seed)
    dice = ConfigWorkflow(config_file=TRAIN, workflow_type=None, **TINY, **out, select_metric="val_mean_dice").parser
    assert list(dice.get_parsed_content("validate#key_metric")) == ["val_mean_dice"]


def test_training_keeps_the_best_model_and_resumes_from_the_last_epoch(runs):
    best = torch.load(runs / "fold0" / "models" / "model.pt", weights_only=True)
    latest = torch.load(runs / "fold0" / "checkpoints" / "latest.pt", weights_only=True)["network"]
    assert not torch.equal(best["head.conv.weight"], latest["head.conv.weight"]), "the last epoch is never selected"
    for fold in FOLDS:
        best = torch.load(runs / f"fold{fold}" / "models" / "model.pt", weights_only=True)
        assert "head.conv.weight" in best  # the network's state dict
        latest = torch.load(runs / f"fold{fold}" / "checkpoints" / "latest.pt", weights_only=True)
        assert {"trainer", "network", "optimizer", "lr_scheduler"} <= set(latest)
        trainer = latest["trainer"]
        assert trainer["iteration"] == 2 * trainer["epoch_length"] and latest["lr_scheduler"]["last_epoch"] == 2
        # the best score survives the resume (handlers.checkpoint.BestModelState): one key-metric saver's list
        assert latest["best_model"]["best_metric_epoch"] in (1, 2) and len(latest["best_model"]["savers"]) == 1
        assert list((runs / f"fold{fold}" / "logs").glob("events.out.tfevents.*")), "TensorBoard logs expected"
    resumed = torch.load(runs / "fold1" / "checkpoints" / "latest.pt", weights_only=True)["optimizer"]
    assert resumed["state"][0]["step"] == 2 * 2  # 2 epochs of 8 images in batches of 4: the first epoch was kept


def test_exported_torchscript_reproduces_the_network(runs, tmp_path):
    target = tmp_path / "model.ts"
    checkpoint = runs / "fold0" / "models" / "model.pt"
    ckpt_export(
        net_id="network_def",
        filepath=str(target),
        ckpt_file=str(checkpoint),
        meta_file=str(CONFIGS / "metadata.json"),
        config_file=INFERENCE,
        key_in_ckpt="",
        **NET,
    )
    scripted = torch.jit.load(str(target))
    reference = ConfigWorkflow(config_file=INFERENCE, workflow_type=None, **NET).parser.get_parsed_content("network_def")
    reference.load_state_dict(torch.load(checkpoint, weights_only=True))
    x = torch.rand(1, 1, 64, 96)
    torch.testing.assert_close(scripted(x), reference.eval()(x))


def _write_bad_images(folder: Path) -> None:
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    Image.fromarray(np.full((40, 60), 40000, dtype=np.uint16)).save(folder / "deep.png")  # 16-bit grey
    Image.fromarray(np.zeros((40, 60, 4), dtype=np.uint8), mode="RGBA").save(folder / "alpha.png")
    Image.fromarray(np.zeros((40, 60), dtype=np.uint8)).save(folder / "photo.png", format="JPEG")
    frames = [Image.fromarray(np.full((40, 60), v, dtype=np.uint8)) for v in (0, 90)]
    frames[0].save(folder / "cine.png", save_all=True, append_images=frames[1:])
    (folder / "notes.txt").write_text("")
    (folder / "old.png").mkdir()


def test_ensemble_inference_writes_masks_named_and_sized_as_the_inputs_and_reports_bad_images(
    dataset, runs, tmp_path
):
    images = tmp_path / "images"
    images.mkdir()
    sources = sorted((dataset / "test_data" / "img").glob("*.png"))
    for source in sources:
        (images / source.name).write_bytes(source.read_bytes())
    _write_bad_images(images)
    before = {p.name: p.read_bytes() for p in images.iterdir() if p.is_file()}
    out = tmp_path / "pred"
    with pytest.raises(RuntimeError) as failure:  # the bundle runner wraps the workflow's InferenceFailed
        _predict(images, out, runs, save_overlay=True)
    assert isinstance(failure.value.__cause__, InferenceFailed)
    message = str(failure.value.__cause__)
    assert "broken.png" in message and "not a readable PNG" in message
    assert "deep.png" in message and "16-bit" in message
    assert "alpha.png" in message and "alpha channel" in message
    assert "photo.png: holds a JPEG image, not a PNG" in message and "cine.png: animated PNG with 2 frames" in message
    assert sorted(p.name for p in out.glob("*.png") if p.is_file()) == sorted(p.name for p in sources)
    for source in sources:
        mask = Image.open(out / source.name)
        assert mask.mode == "L" and mask.size == Image.open(source).size
        assert set(np.unique(np.asarray(mask)).tolist()) <= {0, 255}
    assert sorted(p.name for p in (out / "overlays").glob("*.png")) == sorted(f"{p.stem}_overlay.png" for p in sources)
    assert not list(out.rglob("*.tmp*")), "no half-written files"
    assert {p.name: p.read_bytes() for p in images.iterdir() if p.is_file()} == before, "inputs must not change"
    report = json.loads((out / "inference_report.json").read_text())
    assert sorted(f["case"] for f in report["failed"]) == ["alpha", "broken", "cine", "deep", "photo"]
    assert sorted(Path(s["entry"]).name for s in report["skipped_entries"]) == ["notes.txt", "old.png"]
    assert report["num_entries"] == len(list(images.iterdir()))


def test_missing_fold_models_are_named_with_the_folds_that_have_one(dataset, runs, tmp_path):
    with pytest.raises(Exception) as failure:
        run_bundle(
            INFERENCE, input_dir=str(dataset / "test_data" / "img"), output_dir=str(tmp_path / "pred"),
            runs_dir=str(runs), folds=[0, 1, 2, 4], **NET,
        )
    cause = failure.value
    while cause.__cause__ is not None:
        cause = cause.__cause__
    message = str(cause)
    assert isinstance(cause, FileNotFoundError) and "2 of the 4 fold models" in message
    for fold in (2, 4):
        assert str(runs / f"fold{fold}" / "models" / "model.pt") in message
    assert '--folds "[0, 1]"' in message and "--model_paths" in message
    assert not (tmp_path / "pred").exists() or not list((tmp_path / "pred").iterdir())


def test_ensemble_really_averages_distinct_fold_models(runs):
    workflow = ConfigWorkflow(config_file=INFERENCE, workflow_type=None, runs_dir=str(runs), folds=FOLDS, **NET)
    ensemble = workflow.parser.get_parsed_content("ensemble")
    first, second = (m.state_dict()["head.conv.weight"] for m in ensemble.models)
    assert not torch.equal(first, second), "each fold model must keep its own weights"
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        expected = torch.stack([torch.sigmoid(ensemble.inferer(x, m)) for m in ensemble.models]).mean(0)
        torch.testing.assert_close(ensemble(x), expected)


def test_evaluation_prints_the_ablation_table_and_its_last_row_is_the_written_submission(
    dataset, runs, tmp_path, capsys
):
    out = tmp_path / "eval"
    run_bundle(EVALUATE, dataset_dir=str(dataset), output_dir=str(out), runs_dir=str(runs), folds=FOLDS, **NET)
    printed = capsys.readouterr().out
    for row in ("single model (#0)", "+ TTA (8-way flips)", "+ RSIP", "+ EMF (19 x 19 median)", "2-model ensemble"):
        assert row in printed
    table = json.loads((out / "ablation.json").read_text())
    assert table["num_images"] == 10 and not table["failed"]
    assert [r["step"] for r in table["rows"]] == ["single model", "+ TTA", "+ RSIP", "+ EMF", "ensemble"]
    for row in table["rows"]:
        assert 0.0 <= row["mean_dice"] <= 1.0
    labels = dataset / "train_data" / "label"
    for case, value in table["dice_per_image"]["ensemble"].items():
        written = np.asarray(Image.open(out / f"{case}.png"))
        label = fit_mask_to_image(read_mask_png(labels / f"{case}.png"), written.shape, labels / f"{case}.png")
        assert dice_score(written, label) == pytest.approx(value, abs=1e-6)


def test_evaluation_names_a_mask_without_an_image(dataset, runs, tmp_path):
    root = tmp_path / "data"
    for sub in ("img", "label"):
        (root / "train_data" / sub).mkdir(parents=True)
        for path in sorted((dataset / "train_data" / sub).glob("*.png"))[:2]:
            (root / "train_data" / sub / path.name).write_bytes(path.read_bytes())
    (root / "train_data" / "label" / "orphan.png").write_bytes((dataset / "train_data" / "label" / "1.png").read_bytes())
    with pytest.raises(RuntimeError) as failure:
        run_bundle(EVALUATE, dataset_dir=str(root), output_dir=str(tmp_path / "eval"), runs_dir=str(runs), folds=FOLDS, **NET)
    cause = failure.value
    while cause.__cause__ is not None:
        cause = cause.__cause__
    assert "masks without a matching image" in str(cause) and "orphan.png" in str(cause)


def test_real_ccf_bdci_test_images_go_through_inference(real_samples, runs, tmp_path):
    images = real_samples / "angioma_ccf_bdci" / "test_data" / "img"
    out = tmp_path / "pred"
    workflow = _predict(images, out, runs)
    sources = sorted(images.glob("*.png"))
    assert len(sources) == 8 and sorted(workflow.parser.get_parsed_content("runner").report.succeeded) == sorted(
        p.stem for p in sources
    )
    for source in sources:
        mask = Image.open(out / source.name)
        assert mask.mode == "L" and mask.size == Image.open(source).size
        assert set(np.unique(np.asarray(mask)).tolist()) <= {0, 255}


@pytest.mark.slow
def test_multi_gpu_config_trains_with_two_cpu_processes(dataset, tmp_path):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run",
        "--config_file", json.dumps(TRAIN + [str(CONFIGS / "multi_gpu_train.json")]),
        f"--dataset_dir={dataset}", f"--output_dir={tmp_path}", "--max_epochs=1",
        *[f"--{k}={json.dumps(v)}" if isinstance(v, (list, dict)) else f"--{k}={v}" for k, v in TINY.items()],
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, encoding="utf-8", errors="replace", timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    trainer = torch.load(tmp_path / "checkpoints" / "latest.pt", weights_only=True)["trainer"]
    assert trainer["iteration"] == trainer["epoch_length"] > 0
    assert (tmp_path / "models" / "model.pt").is_file()


def test_configs_expose_monais_train_and_inference_workflow_properties(dataset, runs, tmp_path):
    assert missing_workflow_properties(
        TRAIN, "train", dataset_dir=str(dataset), output_dir=str(tmp_path / "train"), **TINY) == []
    assert missing_workflow_properties(
        INFERENCE, "inference", input_dir=str(dataset / "test_data" / "img"), output_dir=str(tmp_path / "pred"),
        runs_dir=str(runs), folds=FOLDS, **NET) == []
