"""scripts/make_demo_data.py: help text, argument errors, and a tiny run from outside the repository."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_demo_data.py"


def _script_module():
    spec = importlib.util.spec_from_file_location("make_demo_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_lists_bundles_and_options(capsys: pytest.CaptureFixture) -> None:
    script = _script_module()
    with pytest.raises(SystemExit) as done:
        script.main(["--help"])
    assert done.value.code == 0 and "carotid_plaque_ultrasound" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        script.main(["carotid_plaque_ultrasound", "--help"])
    text = capsys.readouterr().out
    assert done.value.code == 0
    for option in ("OUT_DIR", "--cases", "--seed", "--size", "--unlabelled-fraction"):
        assert option in text
    with pytest.raises(SystemExit) as done:
        script.main(["no_such_bundle", "out"])
    assert done.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_tiny_run_from_another_folder(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    command = [sys.executable, str(SCRIPT), "carotid_plaque_ultrasound", str(out), "--cases", "3", "--seed", "1"]
    command += ["--size", "64", "--unlabelled-fraction", "0.34"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (out / "images").iterdir()) == ["0000.h5", "0001.h5", "0002.h5"]
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["0000_label.h5", "0001_label.h5"]
    with h5py.File(out / "images" / "0002.h5") as f:
        assert f["long_img"].shape == (64, 64)
