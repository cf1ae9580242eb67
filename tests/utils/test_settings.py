from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import utils.settings
from utils.errors import BriefErrors
from utils.settings import SettingsError, check_settings

ROOT = Path(__file__).parents[2]
CONFIG = {
    "output_dir": "out",
    "overwrite": False,
    "train": {"trainer": {"max_epochs": 3, "amp": True}, "handlers": [{"_target_": "StatsHandler", "log": True}]},
    "run": ["$print(@overwrite)"],
}


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # restored after the test
    path = tmp_path / "train.json"
    path.write_text(json.dumps(CONFIG))
    return str(path)


def test_an_unknown_setting_stops_the_run_naming_the_nearest_keys(config):
    with pytest.raises(SettingsError, match=r"--max_epoch \(nearest known keys: train#trainer#max_epochs") as error:
        check_settings(argv=["--config_file", config, "--max_epoch", "1", "--overwrit=True"])
    assert "--overwrit (nearest known keys: overwrite)" in str(error.value)
    with pytest.raises(SettingsError, match="--zzz_qqq .no similar key"):
        check_settings(argv=["--config_file", config, "--zzz_qqq", "1"])


def test_known_settings_pass(config):
    argv = ["run", "--config_file", config, "--train#trainer#max_epochs", "2", "--train::handlers::0::log", "False",
            "--meta_file", "m.json", "--logging_file=l.conf", "--run_id", "run", "--workflow_type", "train",
            "--_meta_#version", "1", "--output_dir", "-1", "--overwrite", "$1 > 2", "--train#trainer#amp"]  # fmt: skip
    assert check_settings(argv=argv) is None


def test_boolean_spellings_become_booleans_and_others_stop_the_run(config):
    argv = ["--config_file", config, "--overwrite", "false", "--train#trainer#amp=0", "--output_dir", "true"]
    assert check_settings(argv=argv) == [
        "--config_file", config, "--overwrite", "False", "--train#trainer#amp=False", "--output_dir", "true"
    ], "output_dir is not a boolean setting"  # fmt: skip
    assert check_settings(argv=["--config_file", config, "--overwrite", "1"])[-1] == "True"
    assert check_settings(argv=["--config_file", config, "--overwrite=True"]) is None
    with pytest.raises(SettingsError, match=r"--overwrite 'maybe': overwrite is a boolean setting \(default false\)"):
        check_settings(argv=["--config_file", config, "--overwrite", "maybe"])


def test_the_settings_of_an_args_file_are_checked(config, tmp_path):
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"config_file": config, "overwrit": True}))
    with pytest.raises(SettingsError, match="--overwrit .nearest known keys: overwrite"):
        check_settings(argv=["--args_file", str(args)])
    args.write_text(json.dumps({"config_file": config, "overwrite": "false"}))
    with pytest.raises(SettingsError, match="--overwrite 'false'"):  # a JSON file says false
        check_settings(argv=["--args_file", str(args)])


def test_merged_config_files_are_known_and_the_excepthook_installed(config, tmp_path):
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"train#trainer#patience": 4}))
    check_settings(tmp_path / "log.txt", argv=["--config_file", f"{config},{extra}", "--train#trainer#patience", "2"])
    assert isinstance(sys.excepthook, BriefErrors) and sys.excepthook.log_path == tmp_path / "log.txt"
    assert check_settings(argv=["--config_file", f"['{config}', '{extra}']", "--train#trainer#patience", "2"]) is None


def test_outside_monai_bundle_run_nothing_is_checked(config, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest", "--max_epoch", "1"])
    hook = sys.excepthook
    assert check_settings("log.txt") is None and sys.excepthook is hook


def test_the_command_is_restarted_with_real_booleans(config, monkeypatch):
    main = str(Path(utils.settings.__file__).parents[1] / ".venv/lib/monai/bundle/__main__.py")
    argv = ["run", "--config_file", config, "--overwrite", "false"]
    monkeypatch.setattr(sys, "argv", [main, *argv])
    monkeypatch.setattr(sys, "orig_argv", ["python", "-u", "-m", "monai.bundle", *argv])
    started = []
    monkeypatch.setattr(utils.settings.os, "execv", lambda *command: started.append(command))
    check_settings()
    assert started == [(sys.executable, [sys.executable, "-u", "-m", "monai.bundle", *argv[:-1], "False"])]


@pytest.mark.parametrize(
    "path", sorted(ROOT.glob("bundles/*/configs/*.json")), ids=lambda p: f"{p.parent.parent.name}/{p.name}"
)
def test_every_bundle_config_with_an_initialize_list_checks_the_settings_first(path):
    """A later config file's ``initialize`` replaces the earlier one's: each list must start with the check."""
    config = json.loads(path.read_text())
    if "initialize" in config:
        assert config["initialize"][0] == utils.settings.SETTINGS_CHECK
    if "run" in config and path.name in ("train.json", "inference.json"):
        assert "initialize" in config, "the entry configs define initialize"
