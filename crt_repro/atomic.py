"""Writes that never leave a half-written file: write a temp file beside the target, then rename.

``os.replace`` is atomic on POSIX within one file system, so a reader (or a rerun after a kill)
sees either the old file or the new one, never a torn one. The file gets the permissions the
umask gives a newly created file (``mkstemp`` alone would make it 0600), so tables, runs CSVs and
run records are as readable as any file the user writes. A write that fails (a full disk) is an
error naming the file, whose previous version is left as it was.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


class WriteError(OSError):
    """A file that could not be written; the message names it and the cause."""


def temp_beside(path: str | Path) -> Path:
    """A new empty temp file in ``path``'s folder (made if missing), to be renamed onto ``path``,
    with the permissions the umask gives a newly created file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


def temp_dir_beside(path: str | Path) -> Path:
    """``temp_beside`` for a folder: a new empty one, with the permissions the umask gives a new
    folder (``mkdtemp`` alone would make it 0700)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def write_with(path: str | Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` fills a temp file beside ``path``, which then replaces ``path``: a kill or a
    failed write leaves the old file (or none), never a half-written one."""
    path = Path(path)
    tmp = temp_beside(path)
    try:
        try:
            write(Path(tmp))
        except (OSError, RuntimeError) as e:  # OSError of a write has no file name; torch's errors name none either
            kept = "; its previous version is kept" if path.exists() else ""
            raise WriteError(f"cannot write {path}: {_cause(e)}{kept}") from e
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cause(e: Exception) -> str:
    if getattr(e, "errno", None) == errno.ENOSPC or "no space left on device" in str(e).lower():
        return "no space left on device"
    return " ".join(str(e).split())


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> None:
    write_with(path, lambda p: p.write_text(text))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def torch_save(path: str | Path, obj: Any) -> None:
    import torch

    def save(p: Path) -> None:
        # Through a Python file: a full disk then raises OSError ENOSPC, where torch's own file
        # writer says only "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598".
        with p.open("wb") as f:
            torch.save(obj, f)

    write_with(path, save)
