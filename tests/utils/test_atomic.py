from __future__ import annotations

import pytest

from utils.atomic import atomic_path, write_text_atomic


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
