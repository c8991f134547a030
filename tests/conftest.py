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


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The word-level PTB/WikiText-2 copy beside the repository (see its README.md)."""
    path = REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip("needs ../shared/data (word-level PTB/WikiText-2)")
    return path


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Token-id caches go to a per-session folder, never to the user's ~/.cache."""
    monkeypatch.setenv("CRT_REPRO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
