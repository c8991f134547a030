"""Writes that never leave a half-written file: write a temp file beside the target, then rename.

``os.replace`` is atomic on POSIX within one file system, so a reader (or a rerun after a kill)
sees either the old file or the new one, never a torn one. The file gets the permissions the
umask gives a newly created file (``mkstemp`` alone would make it 0600), so tables, runs CSVs and
run records are as readable as any file the user writes.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def _atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> None:
    _atomic(path, lambda p: p.write_text(text))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def torch_save(path: str | Path, obj: Any) -> None:
    import torch

    _atomic(path, lambda p: torch.save(obj, p))
