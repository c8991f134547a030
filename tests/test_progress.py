"""crt-repro progress: each run's state read from its directory, and the time left."""
from __future__ import annotations

import json

import pytest
import yaml

from crt_repro import progress
from crt_repro.cli import main as cli_main
from crt_repro.corpora import TRAIN_TOKENS
from crt_repro.outputs import Output

EPOCH = TRAIN_TOKENS["ptb"]


def _run(root, name, *, config=True, log=(), metrics=None):
    d = root / name
    d.mkdir(parents=True)
    if config:
        (d / "config.yaml").write_text(yaml.safe_dump({"data": {"dataset": "ptb"}, "optim": {"max_epochs": 2}}))
    if log:
        (d / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log))
    if metrics:
        (d / "metrics.json").write_text(json.dumps(metrics))
    return d


@pytest.fixture
def grid(tmp_path):
    done = _run(tmp_path, "ptb-done", log=[{"step": 1, "items": 10, "items_per_s": 5.0}],
                metrics={"train_epochs": 1.5, "stopped_early": True, "valid_ppl": 101.25, "test_ppl": 97.5,
                         "train_items": int(1.5 * EPOCH), "train_tokens_per_s": 2000.0})
    started = _run(tmp_path, "ptb-started", log=[
        {"step": 10, "items": 400_000, "items_per_s": 900.0},
        {"step": 20, "split": "valid", "items": EPOCH, "ppl": 180.0},
        {"step": 30, "items": EPOCH + 0, "items_per_s": 1000.0}])
    fresh = tmp_path / "ptb-not-started"
    return done, started, fresh


def test_each_run_state_is_read_from_its_directory(grid):
    done, started, fresh = (progress.read_run(d) for d in grid)
    assert (done.state, done.epochs, done.stopped_early, done.test_ppl, done.tokens_per_s) == \
        ("done", 1.5, True, 97.5, 2000.0)  # its whole-run average, not its log's last reading
    assert (started.state, started.epochs, started.valid_ppl, started.tokens, started.tokens_per_s) == \
        ("running", 1, 180.0, EPOCH, 1000.0)
    later = (grid[1] / "log.jsonl").stat().st_mtime + progress.RUNNING_WITHIN + 1
    assert progress.read_run(grid[1], now=later).state == "stopped"  # its log went quiet: killed
    assert started.budget_tokens == 2 * EPOCH and started.max_epochs == 2
    assert (fresh.state, fresh.budget_tokens, fresh.tokens_per_s) == ("not started", None, None)


def test_time_left_counts_a_run_not_started_at_the_others_budget_and_speed(grid):
    runs = [progress.read_run(d) for d in grid]
    text = progress.report(runs, parallel=2)
    # started: one epoch left at its 1000 tokens/s; not started: two epochs at the median of the
    # finished run's 2000 and the running one's 1000
    left = EPOCH / 1000 + 2 * EPOCH / 1500
    assert f"at most {left / 3600:.1f} h of run time left ({left / 7200:.1f} h at 2 at once)" in text
    assert "3 runs: 1 done, 1 running, 0 stopped, 1 not started" in text
    assert "the 1 not started counted at the median budget and tokens/s of the others" in text
    row = next(line for line in text.splitlines() if line.startswith("ptb-started")).split()
    assert row[1:4] == ["running", "1/2", "180.0"]
    assert "(early)" in next(line for line in text.splitlines() if line.startswith("ptb-done"))


def test_no_estimate_before_any_run_has_measured_a_speed(tmp_path):
    runs = [progress.read_run(_run(tmp_path, "a")), progress.read_run(tmp_path / "b")]
    assert "2 with no estimate" in progress.report(runs)


def test_the_budget_of_every_kind_of_config():
    assert progress.budget_tokens({"optim": {"max_tokens": 1000}}) == 1000
    assert progress.budget_tokens({"optim": {"max_epochs": 3}, "data": {"dataset": "wikitext-2"}}) == \
        3 * TRAIN_TOKENS["wikitext-2"]
    assert progress.budget_tokens({"optim": {"max_steps": 10, "bptt_segments": 2},
                                   "data": {"batch_size": 4, "seg_len": 5}}) == 400
    assert progress.budget_tokens({"optim": {"max_epochs": 3}, "data": {"dataset": "synthetic"}}) is None


def test_cli_reads_the_runs_of_the_targets_from_the_workflow(grid, monkeypatch, capsys):
    outputs = [Output(str(d / "metrics.json"), "train", "missing", "update pending") for d in grid]
    outputs.append(Output("results/smoke/tables/table2.md", "table", "missing", "update pending"))
    seen = []
    monkeypatch.setattr("crt_repro.outputs.summary", lambda args: seen.append(args) or outputs)
    assert cli_main(["progress", "--parallel", "2", "--", "table2_ptb_3layer", "--config", "profile=smoke"]) == 0
    assert seen == [["table2_ptb_3layer", "--config", "profile=smoke"]]
    out = capsys.readouterr().out
    assert "3 runs: 1 done, 1 running, 0 stopped, 1 not started" in out and "table2" not in out


def test_cli_without_targets_or_with_a_bad_parallel_is_one_line(capsys):
    assert cli_main(["progress"]) != 0
    assert "no snakemake arguments given" in capsys.readouterr().err
    assert cli_main(["progress", "--parallel", "0", "--", "all"]) != 0
    assert "--parallel must be >= 1" in capsys.readouterr().err
