"""The workflow's video targets (Tables 7, 13): which runs they schedule, the two stages, the
smarthome_dir requirement of the cpu/paper profiles, and a real tiny run of both tables.

Every test runs Snakemake in a temporary copy of the Snakefile and workflow/ (never the
repository's results/)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_helpers import (
    REPO,
    copy_workflow,
    job_counts,
    needs_snakemake,
    snakemake,
    train_run_ids,
)

from crt_repro.report.tables import MCA_COLUMNS, MEASURED, REFERENCE_ONLY
from crt_repro.plan import plan_workflow, run_checkpoint

pytestmark = needs_snakemake
EXPERIMENTS = yaml.safe_load((REPO / "workflow/config/experiments.yaml").read_text())


@pytest.fixture
def wf(tmp_path) -> Path:
    return copy_workflow(tmp_path)


def settings(profile: str, **kw) -> dict:
    return {**yaml.safe_load((REPO / f"workflow/config/{profile}.yaml").read_text()), **kw}


def test_table7_schedules_exactly_its_video_runs(wf):
    plan = plan_workflow(EXPERIMENTS, settings("smoke"), "smoke", None)
    out = snakemake(wf, "-n", "table7_smarthome", "--config", "profile=smoke")
    assert job_counts(out) == {"train_video": 2, "collect_video_table_runs": 1, "mca_table": 1, "table7_smarthome": 1}
    assert train_run_ids(out) == set(plan.video_tables["table7_smarthome"].run_ids)
    both = snakemake(wf, "-n", "-p", "table7_smarthome", "table13_smarthome_rnn", "--config", "profile=smoke")
    assert job_counts(both)["train_video"] == 3 and train_run_ids(both) == set(plan.video_runs)
    assert all(r.startswith("synthetic-video-") for r in train_run_ids(both))
    # Table 13 alone still trains its first stage: the TimeSformer run whose checkpoint CR-ViT starts from
    t13 = snakemake(wf, "-n", "-p", "table13_smarthome_rnn", "--config", "profile=smoke")
    ts = next(r for r in plan.video_runs if "-timesformer-" in r)
    assert train_run_ids(t13) == set(plan.video_tables["table13_smarthome_rnn"].run_ids) | {ts}
    assert t13.count(f"--set model.init_from={run_checkpoint(ts, 'smoke')}") == 2
    assert "--data-dir" not in t13


def test_smoke_all_tables_includes_the_video_tables(wf):
    (wf / "x").mkdir()  # data_dir must be a folder (checked when the workflow is parsed)
    counts = job_counts(snakemake(wf, "-n", "all_tables", "--config", "profile=smoke", "data_dir=x"))
    assert counts["train_video"] == 3 and counts["mca_table"] == 2 and counts["train"] == 50


def test_cpu_and_paper_need_smarthome_dir(wf, tmp_path):
    (wf / "x").mkdir()  # data_dir must be a folder (checked when the workflow is parsed)
    video_rules = {"train_video", "collect_video_table_runs", "mca_table", "table7_smarthome", "table13_smarthome_rnn"}
    for profile in ("cpu", "paper"):
        out = snakemake(wf, "-n", "table7_smarthome", "--config", f"profile={profile}", "data_dir=x", check=False)
        assert "smarthome_dir" in out and "--config smarthome_dir=DIR" in out, out[-3000:]
        assert "licence" in out and "Nothing to be done" not in out and "Job stats" not in out
        assert "crt-repro workflow: error: " in out and "Traceback" not in out
        # all_tables builds every other table and says once, when parsed, that these two are skipped
        out = snakemake(wf, "-n", "all_tables", "--config", f"profile={profile}", "data_dir=x")
        skip = [line for line in out.splitlines() if "skip table7_smarthome and table13_smarthome_rnn" in line]
        assert len(skip) == 1 and "smarthome_dir is not set" in skip[0] and "--config smarthome_dir=DIR" in skip[0]
        counts = job_counts(out)
        assert counts["ppl_table"] == 9 and counts["runs_csv"] == 1 and not video_rules & set(counts), counts
    # the language tables do not need it
    assert job_counts(snakemake(wf, "-n", "table2_ptb_3layer", "--config", "profile=cpu", "data_dir=x"))["train"] == 30
    clips = tmp_path / "clips"
    clips.mkdir()
    out = snakemake(wf, "-n", "-p", "table13_smarthome_rnn", "--config", "profile=paper", f"smarthome_dir={clips}")
    assert job_counts(out)["train_video"] == 3 and all(r.startswith("smarthome-") for r in train_run_ids(out))
    assert out.count(f"--data-dir {clips}") == 3
    # stage 2 waits for stage 1: the CR-ViT jobs' input is the TimeSformer run's metrics.json
    ts = next(r for r in train_run_ids(out) if "-timesformer-" in r)
    assert out.count(f"input: results/paper/runs/{ts}/metrics.json") == 2
    one = snakemake(wf, "-n", "-p", "table13_smarthome_rnn", "--config", "profile=paper", f"smarthome_dir={clips}",
                    "video_two_stage=false")
    assert job_counts(one)["train_video"] == 2 and "init_from" not in one
    out = snakemake(wf, "-n", "table7_smarthome", "--config", "profile=cpu", f"smarthome_dir={clips / 'nowhere'}",
                    check=False)
    assert "is not a folder" in out and "smarthome_dir" in out


@pytest.mark.slow
def test_real_video_tables_then_nothing_to_do(wf):
    """Tables 7 and 13 for real on the synthetic videos (3 runs of 3 steps)."""
    tiny = ["profile=smoke", "video_set={optim.max_steps: 3, optim.warmup_steps: 1, run.checkpoint_every: 3}"]
    out = snakemake(wf, "--cores", "2", "table7_smarthome", "table13_smarthome_rnn", "--config", *tiny)
    assert job_counts(out)["train_video"] == 3
    t7 = pd.read_csv(wf / "results/smoke/tables/table7_smarthome.csv", keep_default_na=False)
    assert tuple(t7.columns) == MCA_COLUMNS
    measured = t7[t7["source"] == MEASURED]
    assert [(m, r) for m, r in zip(measured["model"], measured["rnn"])] == [("timesformer", ""), ("crvit", "gru")]
    assert all(0 <= float(v) <= 100 for v in measured["mca"]) and set(measured["dataset"]) == {"synthetic-video"}
    (first_stage,) = [p.name for p in (wf / "results/smoke/runs").iterdir() if "-timesformer-" in p.name]
    assert list(measured["init_from"]) == ["", f"run {first_stage}"]
    assert (t7["source"] == REFERENCE_ONLY).sum() == 13
    t13 = pd.read_csv(wf / "results/smoke/tables/table13_smarthome_rnn.csv", keep_default_na=False)
    assert list(t13["rnn"]) == ["ncgru", "gru"] and set(t13["source"]) == {MEASURED}
    # the shared CR-ViT-GRU run gives both tables the same number
    assert float(t13.loc[1, "mca"]) == float(measured.iloc[1]["mca"])
    assert "NOT comparable" in (wf / "results/smoke/tables/table7_smarthome.md").read_text()
    again = snakemake(wf, "-n", "table7_smarthome", "table13_smarthome_rnn", "--config", *tiny)
    assert "Nothing to be done" in again, again[-2000:]
