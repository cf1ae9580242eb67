from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from utils.atomic import atomic_folder, atomic_group, atomic_path, remove_stale_temp_files, write_text_atomic


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_refuses_to_overwrite_when_asked(tmp_path):
    target = tmp_path / "out.txt"
    write_text_atomic(target, "first")
    with pytest.raises(FileExistsError, match="out.txt"):
        write_text_atomic(target, "second", overwrite=False)
    assert target.read_text() == "first"


def test_temporary_file_keeps_the_suffix(tmp_path):
    with atomic_path(tmp_path / "mask.png") as tmp:
        assert tmp.suffix == ".png"
        tmp.write_bytes(b"x")
    assert (tmp_path / "mask.png").read_bytes() == b"x"


def test_written_files_get_the_usual_permissions_not_private_ones(tmp_path):
    import os
    import stat

    target = tmp_path / "shared.txt"
    write_text_atomic(target, "x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask


def test_a_group_writes_all_its_files_or_none(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_group():
            write_text_atomic(tmp_path / "a_seg.txt", "seg")
            assert not (tmp_path / "a_seg.txt").exists(), "renamed only at the end of the group"
            raise RuntimeError("the second file cannot be written")
    assert list(tmp_path.iterdir()) == []
    with atomic_group():
        write_text_atomic(tmp_path / "a_seg.txt", "seg")
        write_text_atomic(tmp_path / "a_det.txt", "det")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_det.txt", "a_seg.txt"]


def test_a_group_refuses_the_same_file_twice(tmp_path):
    with pytest.raises(FileExistsError, match="twice"):
        with atomic_group():
            write_text_atomic(tmp_path / "a.txt", "one", overwrite=False)
            write_text_atomic(tmp_path / "a.txt", "two", overwrite=False)
    assert list(tmp_path.iterdir()) == []


def test_atomic_folder_appears_complete_or_not_at_all(tmp_path):
    target = tmp_path / "cube"
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as staging:
            (staging / "1.bmp").write_bytes(b"x")
            raise RuntimeError("killed after the first slice")
    assert list(tmp_path.iterdir()) == []
    with atomic_folder(target) as staging:
        (staging / "1.bmp").write_bytes(b"x")
    assert [p.name for p in target.iterdir()] == ["1.bmp"]
    with pytest.raises(FileExistsError, match="cube"):
        with atomic_folder(target):
            pass
    with atomic_folder(target, overwrite=True) as staging:
        (staging / "2.bmp").write_bytes(b"y")
    assert [p.name for p in target.iterdir()] == ["2.bmp"] and [p.name for p in tmp_path.iterdir()] == ["cube"]


def test_stale_temp_files_of_a_killed_write_are_removed_and_nothing_else(tmp_path):
    target = tmp_path / "latest.pt"
    write_text_atomic(target, "complete")
    killed_mid_write = (
        "import os, signal\nfrom utils.atomic import atomic_path\n"
        f"with atomic_path({str(target)!r}) as tmp:\n    tmp.write_text('half')\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", killed_mid_write], cwd=Path(__file__).parents[2], check=False)
    left = [p.name for p in tmp_path.iterdir() if p.name != "latest.pt"]
    assert len(left) == 1 and left[0].startswith(".latest."), "the kill left the temporary file"
    others = [".other.abc12345.tmp.pt", ".latest.abc12345.keep.pt", "latest.tmp.pt"]
    for name in others:
        (tmp_path / name).write_text("not a temporary file of latest.pt")
    assert [p.name for p in remove_stale_temp_files(target)] == left
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*others, "latest.pt"])
    assert target.read_text() == "complete"
    assert remove_stale_temp_files(tmp_path / "absent" / "latest.pt") == []
