"""Every entry of an inference input folder is a case or skipped with its reason, for the three bundles' lists."""

from __future__ import annotations

import os
from pathlib import Path

from data.ai_challenger_oct import list_cubes
from data.ccf_bdci import image_folder_datalist
from data.csv2026 import list_cases
from data.listing import CaseList


def _reasons(items: CaseList) -> dict[str, str]:
    return {Path(s["entry"]).name: s["reason"] for s in items.skipped}


def _strays(folder: Path) -> None:
    (folder / "notes.txt").write_text("")
    (folder / ".DS_Store").write_bytes(b"")
    os.symlink(folder / "gone", folder / "link")


def test_csv2026_cases_and_skipped_entries_add_up(tmp_path):
    (tmp_path / "0001.h5").write_bytes(b"")
    (tmp_path / "0002.h5").mkdir()
    (tmp_path / "0003_label.h5").write_bytes(b"")
    os.symlink(tmp_path / "gone.h5", tmp_path / "0004.h5")
    _strays(tmp_path)
    items = list_cases(tmp_path)
    assert [i["case"] for i in items] == ["0001"]
    reasons = _reasons(items)
    assert reasons["0002.h5"] == "a folder, not an .h5 file" and "label file" in reasons["0003_label.h5"]
    assert "dangling symbolic link" in reasons["0004.h5"] and "not an .h5 file" in reasons["notes.txt"]
    assert reasons[".DS_Store"] == "hidden entry"
    assert len(items) + len(items.skipped) == len(list(tmp_path.iterdir()))


def test_ccf_bdci_image_folder_skips_are_reported(tmp_path):
    (tmp_path / "1.png").write_bytes(b"")
    (tmp_path / "2.png").mkdir()
    (tmp_path / "3.jpg").write_bytes(b"")
    _strays(tmp_path)
    items = image_folder_datalist(tmp_path)
    assert [i["case"] for i in items] == ["1"]
    reasons = _reasons(items)
    assert reasons["2.png"] == "a folder, not a .png file" and "extension '.jpg'" in reasons["3.jpg"]
    assert "dangling symbolic link" in reasons["link"]
    assert len(items) + len(items.skipped) == len(list(tmp_path.iterdir()))


def test_oct_cube_folder_skips_are_reported(tmp_path):
    (tmp_path / "A.img").mkdir()
    (tmp_path / "A_labelMark").mkdir()
    _strays(tmp_path)
    items = list_cubes(tmp_path)
    assert [i["case"] for i in items] == ["A"]
    reasons = _reasons(items)
    assert "label cube folder" in reasons["A_labelMark"] and "not a cube folder" in reasons["notes.txt"]
    assert len(items) + len(items.skipped) == len(list(tmp_path.iterdir()))
