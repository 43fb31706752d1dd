"""The one way bind writes files: atomically, durably, with the permissions the user's umask asks for.

Every writer (models, adapters, indexes, embeddings, checkpoints) goes through :func:`atomic_file` or
:func:`atomic_directory`: the data is written to a temporary beside the target, fsynced, renamed over the target
with ``os.replace`` and the parent directory fsynced, so a kill at any point leaves either the old or the new
version, never a mix. Temporaries carry the writer's pid (``.NAME.tmp-PID-RAND``) so that
:func:`remove_stale_temporaries` can delete what dead writers left behind without touching a live writer's files.
``tempfile`` creates 0600 files and 0700 directories; we chmod them to what ``open()`` / ``mkdir`` would have
given (``0666 & ~umask`` / ``0777 & ~umask``) so a model saved on a shared server is readable by others.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

TMP_MARK = ".tmp-"


def umask() -> int:
    """The process umask (read without changing it for longer than one call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_file(path: str | Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: str | Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened / fsynced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _tmp_name(target: Path) -> str:
    return f".{target.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Like :func:`atomic_file` for writers that want a file name (``safetensors``, ``faiss``, ``np.savez``):
    yields a temporary path (with ``path``'s suffix) that replaces ``path`` once the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(_tmp_name(path) + path.suffix)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask())
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary beside ``path`` for writing; on success it replaces ``path`` (fsynced), on error it is
    removed and ``path`` is untouched."""
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding if "b" not in mode else None) as f:
        yield f


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_file(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; when the block succeeds its files are fsynced and it
    replaces ``path`` (an existing ``path`` is moved aside first and deleted only after the new one is in place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(_tmp_name(path))
    tmp.mkdir(mode=0o777)  # mkdir applies the umask itself
    try:
        yield tmp
        file_mode, dir_mode = 0o666 & ~umask(), 0o777 & ~umask()
        for p in tmp.rglob("*"):
            if p.is_symlink():
                continue
            if p.is_file():
                os.chmod(p, file_mode)
                fsync_file(p)
            elif p.is_dir():  # e.g. copied with shutil.copytree from a private tempfile directory
                os.chmod(p, dir_mode)
        fsync_dir(tmp)
        old = None
        if path.exists() or path.is_symlink():
            old = path.with_name(_tmp_name(path) + ".old")
            os.replace(path, old)
        os.replace(tmp, path)
        fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() and not old.is_symlink() else old.unlink()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(directory: str | Path, prefix: str = ".") -> list[Path]:
    """Delete temporaries in ``directory`` that were left by writers that no longer run; returns what was removed.
    ``prefix`` limits it to temporaries of one target (``".NAME.tmp-"``)."""
    removed: list[Path] = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for p in directory.iterdir():
        name = p.name
        if not name.startswith(prefix) or not name.startswith(".") or TMP_MARK not in name:
            continue
        pid_part = name.split(TMP_MARK, 1)[1].split("-", 1)[0].split(".", 1)[0]
        if not pid_part.isdigit() or _pid_alive(int(pid_part)):
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            removed.append(p)
    return removed
