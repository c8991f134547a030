"""Committed results in a fresh clone: a real `git clone` of a temporary repository that holds a
cpu-profile Table 2 made by the workflow (tiny runs), with the mtimes git gives checked-out files.

A cpu table whose runs are committed has nothing to do; deleted, it is rebuilt from the committed
runs without retraining; the smoke DAG builds its own outputs from scratch and never reads the
cpu runs.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from workflow_helpers import REPO, job_counts, needs_snakemake, snakemake, train_run_ids

pytestmark = [needs_snakemake, pytest.mark.skipif(shutil.which("git") is None, reason="needs git")]

TABLE = "table2_ptb_3layer"
FIGURE = "fig5_ptb_3layer"  # figures/ sorts before results/: git checks it out first, i.e. older


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args], cwd=cwd,
                         capture_output=True, text=True, check=True)
    return out.stdout


@pytest.mark.slow
def test_committed_cpu_table_survives_a_fresh_clone(tmp_path, shared_data):
    # Tiny cpu-profile runs: the plan (and so the run ids) is the cpu profile's with these
    # overrides, the same in the origin and in the clone.
    config = ["profile=cpu", f"data_dir={shared_data}", "seeds=[0]", "extra_seeds={}", "declared_claims=null",
              "set={model.d_model: 16, model.n_head: 2, model.d_inner: 32, optim.max_tokens: 400, "
              "data.batch_size: 2, data.eval_batch_size: 2, data.max_eval_segments: 2, run.n_evals: 0, "
              "run.early_stop_patience: null}"]
    origin = tmp_path / "origin"
    origin.mkdir()
    for name in ("Snakefile", ".gitignore"):
        shutil.copy(REPO / name, origin / name)
    shutil.copytree(REPO / "workflow", origin / "workflow")
    out = snakemake(origin, "--cores", "2", TABLE, FIGURE, "--config", *config)
    assert job_counts(out)["train"] == 9
    git(origin, "init", "-q")
    git(origin, "add", "-A")
    git(origin, "commit", "-qm", "cpu Table 2")
    committed = git(origin, "ls-files").split()
    assert f"results/cpu/tables/{TABLE}.csv" in committed and f"figures/cpu/{FIGURE}.png" in committed
    runs = [f for f in committed if f.startswith("results/cpu/runs/")]
    assert {Path(f).name for f in runs} == {"config.yaml", "log.jsonl", "metrics.json"}  # never checkpoints
    assert not [f for f in committed if "/logs/" in f or "/benchmarks/" in f]

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    dry = snakemake(clone, "-n", TABLE, FIGURE, "--config", *config)
    assert "Nothing to be done" in dry, dry[-3000:]
    # Nor in any other checkout order: the run records newer than everything made from them.
    for f in runs:
        (clone / f).touch()
    dry = snakemake(clone, "-n", TABLE, FIGURE, "--config", *config)
    assert "Nothing to be done" in dry, dry[-3000:]

    table = clone / f"results/cpu/tables/{TABLE}.csv"
    original = table.read_text()
    table.unlink()
    (clone / f"results/cpu/tables/{TABLE}.md").unlink()
    rebuilt = snakemake(clone, "--cores", "1", TABLE, "--config", *config)
    assert job_counts(rebuilt) == {"ppl_table": 1, TABLE: 1}, rebuilt[-3000:]
    assert table.read_text() == original

    smoke = snakemake(clone, "-n", "-p", TABLE, "--config", "profile=smoke", f"data_dir={shared_data}")
    counts = job_counts(smoke)
    assert counts["train"] == 9 and counts["collect_table_runs"] == 1 and counts["ppl_table"] == 1
    assert all(r.startswith("ptb-") for r in train_run_ids(smoke))
    assert "results/cpu/" not in smoke and f"results/smoke/tables/{TABLE}.csv" in smoke
