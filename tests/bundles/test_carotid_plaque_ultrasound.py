"""The carotid bundle as a user runs it: Model Zoo checks, train -> infer -> evaluate, resume, DDP, real images."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out

from data.csv2026 import pack_png_as_csv2026_case
from data.synthetic.carotid_plaque_ultrasound import generate
from engines.inference import InferenceFailed, OutputNotWritable
from tests.bundles.workflow import missing_workflow_properties, run_bundle

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "carotid_plaque_ultrasound" / "configs"
SCHEMA = REPO / "tests" / "data" / "zoo_schema" / "meta_schema_20220324.json"
TRAIN = [str(CONFIGS / "train.json")]
MEAN_TEACHER = TRAIN + [str(CONFIGS / "mean_teacher.json")]
INFERENCE = [str(CONFIGS / "inference.json")]
EVALUATE = INFERENCE + [str(CONFIGS / "evaluate.json")]
# a CPU-test-sized network and schedule; everything else is the bundle's own configuration
TINY = {
    "image_size": 64,
    "encoder_depths": [1, 1, 1, 1],
    "encoder_dims": [8, 16, 32, 64],
    "num_workers": 0,
    "n_folds": 3,
    "val_batch_size": 4,
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("csv2026")
    generate(root, cases=16, seed=0, size=128, unlabelled_fraction=0.25)
    return root


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> Path:
    """A Mean Teacher run of 3 epochs, the teacher starting at the 2nd (teacher reset, EMA, consistency)."""
    out = tmp_path_factory.mktemp("train")
    run_bundle(
        MEAN_TEACHER,
        dataset_dir=str(dataset),
        output_dir=str(out),
        max_epochs=3,
        mt_warmup_epochs=1,
        cls_warmup_epochs=1,
        cls_consistency_start_epoch=1,
        encoder_freeze_epochs=1,
        **TINY,
    )
    return out


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


def test_mean_teacher_training_writes_student_teacher_and_resumable_checkpoints(trained):
    best = torch.load(trained / "models" / "model.pt", weights_only=True)
    assert set(best) == {"network", "teacher"}
    latest = torch.load(trained / "checkpoints" / "latest.pt", weights_only=True)
    assert {"trainer", "network", "teacher", "optimizer", "lr_scheduler"} <= set(latest)
    assert latest["trainer"]["current_epoch"] == 3 and latest["trainer"]["mt_global_step"] > 0
    teacher_differs = any(
        not torch.equal(latest["teacher"][k], latest["network"][k])
        for k in latest["network"]
        if latest["network"][k].is_floating_point()
    )
    assert teacher_differs, "after an EMA step the teacher must differ from the student"
    assert list((trained / "logs").glob("events.out.tfevents.*")), "TensorBoard logs expected"


def test_exported_torchscript_reproduces_the_network(trained, tmp_path):
    target = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(target),
        ckpt_file=str(trained / "models" / "model.pt"),
        meta_file=str(CONFIGS / "metadata.json"),
        config_file=INFERENCE,
        key_in_ckpt="network",
        **{k: v for k, v in TINY.items() if k.startswith("encoder")},
    )
    scripted = torch.jit.load(str(target))
    reference = ConfigWorkflow(config_file=INFERENCE, workflow_type=None, **TINY).parser.get_parsed_content(
        "network_def"
    )
    reference.load_state_dict(torch.load(trained / "models" / "model.pt", weights_only=True)["network"])
    x = torch.rand(1, 2, 64, 64)
    torch.testing.assert_close(scripted(x), reference.eval()(x))


def _write_bad_cases(images: Path) -> None:
    (images / "9001.h5").write_bytes(b"not an hdf5 file")
    with h5py.File(images / "9002.h5", "w") as f:
        f.create_dataset("long_img", data=np.zeros((64, 64), np.uint8))


def test_inference_writes_submissions_and_reports_bad_cases_by_name(dataset, trained, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for source in sorted((dataset / "images").glob("*.h5"))[:3]:
        (images / source.name).write_bytes(source.read_bytes())
    _write_bad_cases(images)
    before = {p.name: p.read_bytes() for p in images.iterdir()}
    out = tmp_path / "pred"
    with pytest.raises(RuntimeError) as failure:  # the bundle runner wraps the workflow's InferenceFailed
        run_bundle(
            INFERENCE,
            input_dir=str(images),
            output_dir=str(out),
            model_path=str(trained / "models" / "model.pt"),
            save_overlay=True,
            **TINY,
        )
    assert isinstance(failure.value.__cause__, InferenceFailed)
    message = str(failure.value.__cause__)
    assert "9001" in message and "9002" in message and "trans_img" in message
    written = sorted(p.name for p in out.glob("*_pred.h5"))
    assert written == [f"{p.stem}_pred.h5" for p in sorted((dataset / "images").glob("*.h5"))[:3]]
    with h5py.File(out / written[0]) as f:
        assert f["long_mask"].dtype == np.uint8 and f["long_mask"].shape == (128, 128)
        assert set(np.unique(f["trans_mask"][()])) <= {0, 1, 2}
        assert f["cls"].shape == (1,) and f["cls"].dtype == np.uint8
    assert len(list((out / "overlays").glob("*.png"))) == 3
    assert not list(out.glob("*.tmp*")), "no half-written files"
    assert {p.name: p.read_bytes() for p in images.iterdir()} == before, "inputs must not change"
    report = json.loads((out / "inference_report.json").read_text())
    assert sorted(f["case"] for f in report["failed"]) == ["9001", "9002"]


def test_rerun_does_only_missing_cases_and_every_input_entry_is_accounted_for(dataset, trained, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    sources = sorted((dataset / "images").glob("*.h5"))[:2]
    for source in sources:
        (images / source.name).write_bytes(source.read_bytes())
    (images / "notes.txt").write_text("scanned 2026-01-02")
    (images / "9003.h5").mkdir()
    (images / "9004.h5").symlink_to(tmp_path / "moved.h5")
    out = tmp_path / "pred"
    settings = {"input_dir": str(images), "output_dir": str(out), "model_path": str(trained / "models" / "model.pt")}
    run_bundle(INFERENCE, save_overlay=True, **settings, **TINY)
    report = json.loads((out / "inference_report.json").read_text())
    assert report["num_entries"] == 5 and report["num_cases"] == 2
    assert sorted(Path(s["entry"]).name for s in report["skipped_entries"]) == ["9003.h5", "9004.h5", "notes.txt"]
    first, second = (p.stem for p in sources)
    for path in (out / f"{second}_pred.h5", out / "overlays" / f"{second}_overlay.png"):
        path.unlink()
    (out / f"{first}_pred.h5").unlink()  # the overlay of the first case is left: a new _pred.h5 would not match it
    with pytest.raises(RuntimeError) as failure:
        run_bundle(INFERENCE, save_overlay=True, **settings, **TINY)
    message = str(failure.value.__cause__)
    assert f"{first}_overlay.png" in message and "outputs exist" in message
    assert not (out / f"{first}_pred.h5").exists(), "no new submission beside an old overlay"
    assert (out / f"{second}_pred.h5").is_file() and (out / "overlays" / f"{second}_overlay.png").is_file()
    run_bundle(INFERENCE, save_overlay=True, skip_existing=True, overwrite=True, **settings, **TINY)
    report = json.loads((out / "inference_report.json").read_text())
    assert report["skipped"] == [second] and report["succeeded"] == [first]


def test_an_unwritable_output_folder_stops_inference_before_any_case(dataset, trained, tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(RuntimeError) as failure:
        run_bundle(INFERENCE, input_dir=str(dataset / "images"), output_dir=str(tmp_path / "a_file" / "pred"),
                   model_path=str(trained / "models" / "model.pt"), **TINY)  # fmt: skip
    assert isinstance(failure.value.__cause__, OutputNotWritable)
    assert "a_file/pred is not writable" in str(failure.value.__cause__)


def test_evaluate_prints_and_saves_the_official_score_table(dataset, trained, tmp_path, capsys):
    out = tmp_path / "eval"
    run_bundle(EVALUATE, dataset_dir=str(dataset), output_dir=str(out), model_path=str(trained / "models" / "model.pt"), **TINY)
    scores = json.loads((out / "scores.json").read_text())
    assert scores["num_cases"] >= 3 and 0.0 <= scores["score"] <= 0.8
    assert {"f1_high_risk", "f1_macro", "long_plaque_nsd", "trans_vessel_dsc", "seg_score", "time_ms"} <= set(scores)
    confusion = ["cm_low_pred_low", "cm_low_pred_high", "cm_high_pred_low", "cm_high_pred_high"]
    assert sum(scores[k] for k in confusion) == scores["num_cases"]
    printed = capsys.readouterr().out
    assert "score = 0.4 F1_high_risk + 0.4 S_seg" in printed and "risk confusion matrix" in printed


def test_demo_standardizes_the_risk_head_inputs_and_the_recipe_keeps_magnets_head():
    from monai.bundle import ConfigParser

    def network(*configs: str):
        parser = ConfigParser()
        parser.read_config([str(CONFIGS / c) for c in configs])
        parser.update({"encoder_depths": [1, 1, 1, 1], "encoder_dims": [8, 16, 32, 64]})
        return parser.get_parsed_content("network_def"), parser

    recipe, parser = network("train.json", "mean_teacher.json")
    assert recipe.cls_input_norm is None and parser["encoder_freeze_epochs"] == 5
    assert not any("cls_input_norm" in key for key in recipe.state_dict())
    demo, _ = network("train.json", "mean_teacher.json", "demo.json")
    assert demo.cls_input_norm is not None
    inference, _ = network("inference.json", "evaluate.json", "demo.json")
    assert inference.cls_input_norm is not None  # the demo checkpoint's buffers load into the inference network


def test_real_carotid_images_packed_as_cases_go_through_inference(real_samples, trained, tmp_path):
    images = tmp_path / "images"
    pngs = sorted((real_samples / "carotid_momot_cca").glob("example_US_image*.png"))
    for index, png in enumerate(pngs):
        pack_png_as_csv2026_case(png, images / f"{index:04d}.h5")
    out = tmp_path / "pred"
    run_bundle(INFERENCE, input_dir=str(images), output_dir=str(out), model_path=str(trained / "models" / "model.pt"), **TINY)
    for index in range(len(pngs)):
        with h5py.File(out / f"{index:04d}_pred.h5") as f:
            assert f["long_mask"].shape == (512, 512) and f["trans_mask"].shape == (512, 512)


def _train_command(dataset: Path, out: Path, max_epochs: int, resume: bool) -> list[str]:
    overrides = {**TINY, "max_epochs": max_epochs, "mt_warmup_epochs": 1, "resume": resume}
    args = [f"--{k}={json.dumps(v)}" if isinstance(v, list) else f"--{k}={v}" for k, v in overrides.items()]
    return [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", json.dumps(MEAN_TEACHER),
        f"--dataset_dir={dataset}", f"--output_dir={out}", *args,
    ]  # fmt: skip


@pytest.mark.slow
def test_training_killed_mid_run_resumes_from_its_last_checkpoint(dataset, tmp_path):
    out = tmp_path / "run"
    latest = out / "checkpoints" / "latest.pt"
    process = subprocess.Popen(_train_command(dataset, out, 50, False), cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline and not latest.exists():
        time.sleep(0.5)
    time.sleep(1.0)  # let it get into the next epoch before the kill
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    epoch_at_kill = torch.load(latest, weights_only=True)["trainer"]["current_epoch"]
    assert 1 <= epoch_at_kill < 50
    resumed = subprocess.run(_train_command(dataset, out, epoch_at_kill + 1, True), cwd=REPO, capture_output=True,
                             encoding="utf-8", errors="replace", timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {latest} after epoch {epoch_at_kill}" in resumed.stdout + resumed.stderr
    state = torch.load(latest, weights_only=True)["trainer"]
    assert state["current_epoch"] == epoch_at_kill + 1


@pytest.mark.slow
def test_multi_gpu_config_trains_with_two_cpu_processes(dataset, tmp_path):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run",
        "--config_file", json.dumps(MEAN_TEACHER + [str(CONFIGS / "multi_gpu_train.json")]),
        f"--dataset_dir={dataset}", f"--output_dir={tmp_path}", "--max_epochs=2", "--mt_warmup_epochs=1",
        *[f"--{k}={json.dumps(v)}" if isinstance(v, list) else f"--{k}={v}" for k, v in TINY.items()],
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, encoding="utf-8", errors="replace", timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.load(tmp_path / "checkpoints" / "latest.pt", weights_only=True)["trainer"]["current_epoch"] == 2


def test_supervised_only_checkpoint_feeds_inference(dataset, tmp_path):
    """Without Mean Teacher the best checkpoint holds the network alone (a plain state dict)."""
    run_bundle(TRAIN, dataset_dir=str(dataset), output_dir=str(tmp_path / "train"), max_epochs=1, **TINY)
    model = tmp_path / "train" / "models" / "model.pt"
    assert "network" not in torch.load(model, weights_only=True)
    images = tmp_path / "images"
    images.mkdir()
    source = sorted((dataset / "images").glob("*.h5"))[0]
    (images / source.name).write_bytes(source.read_bytes())
    run_bundle(INFERENCE, input_dir=str(images), output_dir=str(tmp_path / "pred"), model_path=str(model), **TINY)
    assert (tmp_path / "pred" / f"{source.stem}_pred.h5").is_file()


def test_configs_expose_monais_train_and_inference_workflow_properties(dataset, trained, tmp_path):
    assert missing_workflow_properties(
        TRAIN, "train", dataset_dir=str(dataset), output_dir=str(tmp_path / "train"), **TINY) == []
    model = str(trained / "models" / "model.pt")
    assert missing_workflow_properties(
        INFERENCE, "inference", input_dir=str(dataset / "images"), output_dir=str(tmp_path / "pred"),
        model_path=model, **TINY) == []
