"""The Snakemake workflow: targets, which runs a target schedules, rerun behaviour, lint, profiles.

Every test runs Snakemake in a temporary copy of the Snakefile and workflow/, so it never touches
the repository's results/ (or a workflow someone runs there).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_helpers import (
    BIN,
    SNAKEMAKE,
    copy_workflow,
    job_counts,
    needs_snakemake,
    snakemake,
    train_run_ids,
)

from crt_repro.report.reference import reference_rows
from crt_repro.report.tables import PPL_COLUMNS
from crt_repro.plan import RunSpec

pytestmark = needs_snakemake

# A smoke config small enough to run for real in a test: the generated corpus (no data_dir), a few
# steps. (--config parses mappings as YAML.)
TINY = ["profile=smoke",
        "set={optim.max_tokens: 300, optim.warmup_steps: 1, data.batch_size: 2, data.eval_batch_size: 2, "
        "data.max_eval_segments: 2}"]


@pytest.fixture
def wf(tmp_path) -> Path:
    return copy_workflow(tmp_path)


def expected_run_ids(table: str, profile: str, dataset: str, layers: int, sets=(), seeds=(0,)) -> set[str]:
    return {RunSpec(profile, dataset, r.model, layers, int(r.seg_len), s, r.rnn or None, tuple(sets)).run_id()
            for r in reference_rows(table, "ppl").itertuples() for s in seeds}


def test_fig5_schedules_exactly_table2s_runs(wf):
    out = snakemake(wf, "-n", "fig5_ptb_3layer")  # default: paper profile, data downloaded
    counts = job_counts(out)
    assert counts["train"] == 9
    assert set(counts) == {"train", "download_ptb", "collect_table_runs", "figure", "fig5_ptb_3layer"}
    assert train_run_ids(out) == expected_run_ids("table2", "paper", "ptb", 3)


def test_default_target_is_all_and_runs_are_shared(wf):
    (wf / "x").mkdir()  # data_dir must be a folder (checked when the workflow is parsed)
    out = snakemake(wf, "-n", "--config", "profile=smoke", "data_dir=x")
    counts = job_counts(out)
    assert counts["all"] == 1
    # 9 cells x 4 tables (2-5) + 2 ablations (Table 8) + 3 GRU cells x 4 tables (9-12): shared runs once
    assert counts["train"] == 50
    assert counts["ppl_table"] == 9 and counts["cost_table"] == 2 and counts["figure"] == 2
    assert "download_ptb" not in counts  # data_dir given


def test_profile_change_changes_the_runs(wf):
    (wf / "x").mkdir()
    smoke = train_run_ids(snakemake(wf, "-n", "table2_ptb_3layer", "--config", "profile=smoke", "data_dir=x"))
    cpu = train_run_ids(snakemake(wf, "-n", "table2_ptb_3layer", "--config", "profile=cpu", "data_dir=x"))
    # cpu: two seeds, and seeds 2 and 3 of the six cells the claims compare (workflow/config/claims.yaml)
    assert len(smoke) == 9 and len(cpu) == 9 * 2 + 6 * 2 and not smoke & cpu
    assert sum("-n35-" in r for r in cpu) == 8 and sum("-n17-" in r for r in cpu) == 12
    # the smoke profile's 16-layer tables run 4 layers; its WikiText tables run WikiText-2
    t5 = train_run_ids(snakemake(wf, "-n", "table5_wt103_16layer", "--config", "profile=smoke", "data_dir=x"))
    assert t5 and all(r.startswith("wikitext-2-") and "-L4-" in r for r in t5)
    two_seeds = train_run_ids(snakemake(wf, "-n", "table2_ptb_3layer", "--config", "profile=smoke", "data_dir=x",
                                        "seeds=[0,1]"))
    assert len(two_seeds) == 18 and smoke < two_seeds


def test_bad_config_is_rejected(wf):
    out = snakemake(wf, "-n", "--config", "profile=huge", check=False)
    assert "profile" in out and "huge" in out and "validat" in out.lower()
    out = snakemake(wf, "-n", "--config", "profil=smoke", check=False)
    assert "'profil' was unexpected" in out


def test_bad_experiments_file_is_one_line_naming_it(wf):
    """--config experiments=FILE: a missing file, broken YAML or a list is named, never a traceback."""
    (wf / "broken.yaml").write_text("tables:\n  mine: [a, b\n")
    (wf / "list.yaml").write_text("- tables\n")
    for name, says in (("absent.yaml", "absent.yaml: cannot read (No such file or directory)"),
                       ("broken.yaml", "broken.yaml:3:1: not valid YAML"),
                       ("list.yaml", "list.yaml: expected a mapping at the top level, got list")):
        out = snakemake(wf, "-n", "--config", "profile=smoke", f"experiments={name}", check=False)
        assert f"crt-repro workflow: error: {says}" in out and "Traceback" not in out, out[-1500:]


@pytest.mark.slow
def test_real_run_then_nothing_to_do_then_profile_change_reruns(wf):
    """Table 8 for real on the generated corpus (4 tiny runs), then the same target again."""
    out = snakemake(wf, "--cores", "2", "table8_ablation", "--config", *TINY)
    assert job_counts(out)["train"] == 4
    table = pd.read_csv(wf / "results/smoke/tables/table8_ablation.csv", keep_default_na=False)
    assert tuple(table.columns) == PPL_COLUMNS
    assert list(table["model"]) == ["transformer", "transformer_rnn_memory", "transformer_rnn_posenc", "crt"]
    assert set(table["dataset"]) == {"synthetic"} and set(table["profile"]) == {"smoke"}
    md = (wf / "results/smoke/tables/table8_ablation.md").read_text()
    assert "NOT comparable" in md and "synthetic" in md
    # every run directory is named by the id of the run it holds, and Table 2 would reuse two of them
    runs = {p.name for p in (wf / "results/smoke/runs").iterdir()}
    assert len(runs) == 4
    sets = tuple(f"{k}={v}" for k, v in sorted(yaml.safe_load(TINY[1].split("=", 1)[1]).items()))
    assert len(runs & expected_run_ids("table2", "smoke", "synthetic", 3, sets)) == 2
    for name in ("train", "collect", "tables"):
        assert any((wf / "results/smoke/logs" / name).iterdir())
        assert any((wf / "results/smoke/benchmarks" / name).iterdir())

    again = snakemake(wf, "-n", "table8_ablation", "--config", *TINY)
    assert "Nothing to be done" in again, again[-2000:]

    # A run that older code trained records no forward cost: rule record_cost counts it into its
    # cost.json, and the table is what it was (issue 27, step 3).
    metrics = sorted((wf / "results/smoke/runs").iterdir())[0] / "metrics.json"
    recorded = json.loads(metrics.read_text())
    metrics.write_text(json.dumps({k: v for k, v in recorded.items() if k != "flops_fwd"}))
    out = snakemake(wf, "--cores", "1", "table8_ablation", "--config", *TINY)
    assert job_counts(out)["record_cost"] == 1 and "train" not in job_counts(out)
    assert json.loads((metrics.parent / "cost.json").read_text())["flops_fwd"] == recorded["flops_fwd"]
    assert pd.read_csv(wf / "results/smoke/tables/table8_ablation.csv", keep_default_na=False).equals(table)

    # the report holds the table (report() flag, category Tables)
    snakemake(wf, "--report", "report.html", "table8_ablation", "--config", *TINY)
    html = (wf / "report.html").read_text(errors="replace")
    assert "table8_ablation.csv" in html and "Tables" in html
    # ... and the profile's report holds what it has and names what it has not (issue 26, item 1)
    out = snakemake(wf, "--report", "all.html", "report_contents", "--config", *TINY)
    html = (wf / "all.html").read_text(errors="replace")
    assert "table8_ablation.csv" in html and "table2_ptb_3layer.csv" not in html
    said = next(line for line in out.splitlines() if line.startswith("crt-repro workflow: the report holds"))
    assert "not built yet, so not in it: " in said and "results/smoke/tables/table2_ptb_3layer.csv" in said

    (wf / "x").mkdir()
    other = snakemake(wf, "-n", "table8_ablation", "--config", *TINY[1:], "profile=cpu", "data_dir=x")
    ids = train_run_ids(other)
    assert job_counts(other)["train"] == 16 and not ids & runs  # the cpu profile: the claims' four seeds


def test_lint_is_clean(wf):
    for config in (["profile=smoke"], ["profile=paper"]):
        out = snakemake(wf, "--lint", "--config", *config)
        assert "Congratulations, your workflow is in a good condition!" in out, out[-3000:]


@pytest.mark.skipif(importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
                    reason="needs snakemake-executor-plugin-slurm (pip install -e '.[slurm]')")
def test_slurm_profile_dry_run(wf):
    out = snakemake(wf, "-n", "--profile", "workflow/profiles/slurm", "fig5_ptb_3layer")
    assert job_counts(out)["train"] == 9
    train_blocks = [b for b in out.split("rule train:")[1:]]
    assert train_blocks and all(re.search(r"resources: .*\bgpu=1\b", b.split("\n\n")[0]) for b in train_blocks)
    (wf / "x").mkdir()
    out = snakemake(wf, "-n", "--profile", "workflow/profiles/slurm", "table2_ptb_3layer",
                    "--config", "profile=smoke", "data_dir=x")
    assert all(re.search(r"resources: .*\bgpu=0\b", b.split("\n\n")[0]) for b in out.split("rule train:")[1:])


def test_every_paper_target_is_a_rule(wf):
    targets = set(snakemake(wf, "--list-target-rules").split())
    assert {"all", "all_tables", "all_figures", "table1_complexity", "table2_ptb_3layer", "table3_ptb_16layer",
            "table4_wt103_3layer", "table5_wt103_16layer", "table6_cost", "table8_ablation", "table9_ptb_3layer_rnn",
            "table10_ptb_16layer_rnn", "table11_wt103_3layer_rnn", "table12_wt103_16layer_rnn", "fig5_ptb_3layer",
            "fig6_ptb_16layer"} <= targets


def test_the_cost_tables_are_told_the_profiles_stand_in_datasets(wf):
    # One declaration of the stand-ins, the profile's `datasets` (issue 27, step 3).
    for profile, stand_in in (("cpu", "--stand-in wt103=wikitext-2"), ("paper", "")):
        out = snakemake(wf, "-n", "-p", "table1_complexity", "--forcerun", "cost_table", "--config", f"profile={profile}")
        command = next(line for line in out.splitlines() if "crt-repro table table1_complexity" in line)
        assert (stand_in in command) if stand_in else ("--stand-in" not in command), command


@pytest.mark.slow
def test_one_command_finishes_a_target_after_a_killed_snakemake(wf):
    """SIGKILL to Snakemake's process group as soon as a run has written its metrics.json (before
    Snakemake marks it complete), --unlock, then the README's one command (crt-repro workflow)."""
    command = ["--cores", "2", "table8_ablation", "--config", *TINY]
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    first = subprocess.Popen([SNAKEMAKE, *command], cwd=wf, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600  # generous: a loaded machine is slow, not wrong
    while not list(wf.glob("results/smoke/runs/*/metrics.json")) and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert list(wf.glob("results/smoke/runs/*/metrics.json")), "no run finished before the kill"
    assert not (wf / "results/smoke/tables/table8_ablation.csv").exists()
    snakemake(wf, "--unlock", *command)
    p = subprocess.run([BIN / "crt-repro", "workflow", "--", *command], cwd=wf, env=env, capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    assert (wf / "results/smoke/tables/table8_ablation.csv").is_file()
    assert "Nothing to be done" in snakemake(wf, "-n", *command)
