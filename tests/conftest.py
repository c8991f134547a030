from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The word-level PTB/WikiText-2 copy beside the repository (see its README.md)."""
    path = REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip("needs ../shared/data (word-level PTB/WikiText-2)")
    return path
