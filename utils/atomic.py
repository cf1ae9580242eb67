"""Write files atomically: a reader sees either the old file, no file, or the complete new file."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_affixes(path: Path) -> tuple[str, str]:
    """Prefix and suffix of the temporary names of ``path`` (hidden, the target's suffix kept)."""
    return f".{path.stem}.", f".tmp{path.suffix}"


def remove_stale_temp_files(path: str | Path) -> list[Path]:
    """Remove the temporary files that :func:`atomic_path` left beside ``path`` when its process was killed mid-write.

    A killed process cannot run the ``finally`` that removes its temporary file, so e.g. a training run killed while
    saving its checkpoint leaves a hidden ``.latest.<random>.tmp.pt`` of the checkpoint's size. Call this when the
    next run starts, before anything writes ``path`` again. Returns the files removed.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    prefix, suffix = _temp_affixes(path)
    # mkstemp's random part: 8 characters of [a-z0-9_] (tempfile._RandomNameSequence)
    pattern = re.compile(re.escape(prefix) + r"[a-z0-9_]+" + re.escape(suffix))
    stale = [p for p in path.parent.iterdir() if pattern.fullmatch(p.name) and p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


@contextmanager
def atomic_path(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``, on error removed.

    The temporary file lives in the same folder so that the final ``os.replace`` is a rename on one
    file system. The suffix is kept so that writers choosing a format by extension still work.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} already exists; refusing to overwrite it (set overwrite=True to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = _temp_affixes(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private (0600); give it the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str, overwrite: bool = True) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text)
