"""Running Snakemake from the tests: in a temporary copy of the Snakefile and workflow/ (never
the repository's results/), with this interpreter's console scripts on PATH."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SNAKEMAKE = shutil.which("snakemake", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
needs_snakemake = pytest.mark.skipif(SNAKEMAKE is None, reason="snakemake is not installed")


def copy_workflow(dest: Path) -> Path:
    shutil.copy(REPO / "Snakefile", dest / "Snakefile")
    shutil.copytree(REPO / "workflow", dest / "workflow")
    return dest


def snakemake(wd: Path, *args: str, check: bool = True) -> str:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    p = subprocess.run([SNAKEMAKE, *args], cwd=wd, env=env, capture_output=True, text=True, timeout=600)
    out = p.stdout + p.stderr
    if check:
        assert p.returncode == 0, out[-4000:]
    return out


def job_counts(out: str) -> dict[str, int]:
    """The 'Job stats' table of a (dry) run."""
    block = out.split("Job stats:", 1)[1]
    counts = {}
    for line in block.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    counts.pop("total", None)
    return counts


def train_run_ids(out: str) -> set[str]:
    return set(re.findall(r"wildcards: run_id=(\S+)", out))
