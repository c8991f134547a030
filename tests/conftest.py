from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent

# The suite's models are tiny: a second intra-op thread only adds synchronisation, and on a
# loaded 2-core machine it makes small matrix products orders of magnitude slower.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


def shared_data_dir() -> Path:
    """Where the tests look for the real corpora: $CRT_REPRO_DATA (the package's default data
    dir too), else the copy beside the repository (../shared/data, see its README.md)."""
    env = os.environ.get("CRT_REPRO_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"needs the word-level PTB/WikiText-2 corpora, not found at {path}: set CRT_REPRO_DATA to a "
                    "folder holding them, or fill one with `crt-repro download ptb --to data` and "
                    "`crt-repro download wikitext-2 --to data` and set CRT_REPRO_DATA=data")
    return path.absolute()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Token-id caches go to a per-session folder, never to the user's ~/.cache."""
    monkeypatch.setenv("CRT_REPRO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


class Stop(Exception):
    pass


def stop_at(n: int):
    """An ``on_step`` that interrupts a run after step ``n`` (as a kill would, after its checkpoint)."""
    def on_step(step):
        if step == n:
            raise Stop
    return on_step
