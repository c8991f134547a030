"""Where things live on disk by default: the corpora, the per-user cache, a profile's runs.

One module so that a reader of one (the C scan's compiled library, the tokenised corpora, the
generated videos) finds the others, and so that none imports another's module for a path.
"""
from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    """The corpora: ``$CRT_REPRO_DATA``, else ./data (``crt-repro download`` fills it)."""
    return Path(os.environ.get("CRT_REPRO_DATA", "data"))


def default_cache_dir() -> Path:
    """Tokenised corpora, generated videos, the compiled C scan: ``$CRT_REPRO_CACHE``, else ~/.cache/crt-repro."""
    return Path(os.environ.get("CRT_REPRO_CACHE", Path.home() / ".cache" / "crt-repro"))


def runs_dir(profile: str) -> str:
    """Where the workflow keeps the runs of one profile (relative to the repository root)."""
    return f"results/{profile}/runs"
