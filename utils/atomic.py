"""Write files atomically: a reader sees either the old file, no file, or the complete new file.

:func:`atomic_group` extends this to the several files of one case (a mask and its overlay, a label volume and its
detection table): inside it, the files written through :func:`atomic_path` are renamed into place together when
the group ends without error, and none of them is when it raises.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path


_GROUP: ContextVar[list[tuple[Path, Path, bool]] | None] = ContextVar("atomic_group", default=None)
"""The (temporary file, target, overwrite) renames waiting for the end of the current :func:`atomic_group`."""


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
    file system. The suffix is kept so that writers choosing a format by extension still work. Inside an
    :func:`atomic_group` the rename waits for the end of the group.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    group = _GROUP.get()
    if group is not None and any(target == path for _, target, _ in group):
        raise FileExistsError(f"{path} is written twice in one atomic group (one case)")
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
        if group is None:
            os.replace(tmp, path)
        else:
            group.append((tmp, path, overwrite))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if group is None:
            tmp.unlink(missing_ok=True)


@contextmanager
def atomic_folder(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path`` to fill; on success it is renamed to ``path``, on error removed.

    A reader never sees a folder holding only part of its files (a cube missing its last slices reads as a shorter
    cube). With ``overwrite`` an existing ``path`` is moved aside, replaced, then deleted.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} already exists; refusing to overwrite it (set overwrite=True to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes the folder private (0700)
    aside = None
    try:
        yield staging
        if path.exists():
            aside = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, aside / path.name)
        os.replace(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)


@contextmanager
def atomic_group() -> Iterator[None]:
    """All files written through :func:`atomic_path` inside the block appear together at its end, or none does.

    Each file is first written to its temporary path; when the block ends without error, targets that may not be
    overwritten are checked once more, then every temporary file is renamed to its target. If the block raises (or
    a rename fails, in which case the targets renamed so far are removed again), no target is created and the
    temporary files are deleted. A group opened inside another one joins it.

    Raises:
        FileExistsError: a target that may not be overwritten appeared while the block ran.
    """
    if _GROUP.get() is not None:
        yield
        return
    pending: list[tuple[Path, Path, bool]] = []
    token = _GROUP.set(pending)
    try:
        yield
        clashes = [str(path) for _, path, overwrite in pending if not overwrite and path.exists()]
        if clashes:
            raise FileExistsError(f"{', '.join(clashes)} already exist(s); refusing to overwrite")
        renamed: list[Path] = []
        try:
            for tmp, path, _ in pending:
                os.replace(tmp, path)
                renamed.append(path)
        except BaseException:
            for path in renamed:
                path.unlink(missing_ok=True)
            raise
    finally:
        _GROUP.reset(token)
        for tmp, _, _ in pending:
            tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str, overwrite: bool = True) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text)
