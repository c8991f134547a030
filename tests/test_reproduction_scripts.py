"""The scripts of the decisive cpu reproduction (REPRODUCTION.md), which trains in a worktree
of its launch commit. scripts/resume_reproduction.sh starts and resumes it: on a fresh machine it
trains none of the runs already committed, after a kill it finishes the started runs first, and
it never runs in a worktree at another commit. scripts/commit_finished_runs.sh commits to main the
records of the runs that finished there, and only those. scripts/park_started_runs.sh stops the
runs in flight at a checkpoint and parks them in git, for a fresh machine to resume. Snakemake and
crt-repro are stand-ins that log their arguments."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from workflow_helpers import REPO

SCRIPT = REPO / "scripts/resume_reproduction.sh"
LAUNCH = "0bb85a8"
TARGETS = ("table2_ptb_3layer table8_ablation table9_ptb_3layer_rnn fig5_ptb_3layer curves_ptb_3layer beyond_paper "
           "claims_3layer")
RUN = "ptb-transformer-L3-n70-s9-0000000000"


def git(*args, cwd=REPO):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)


@pytest.fixture
def setup(tmp_path):
    """A clone of this repository with this checkout's script, a finished run in its results that
    the launch commit lacks, and the stand-ins on PATH."""
    if git("cat-file", "-e", f"{LAUNCH}^{{commit}}").returncode:
        pytest.skip(f"the launch commit {LAUNCH} is not in this clone's history")
    main = tmp_path / "main"
    subprocess.run(["git", "clone", "-q", "--shared", str(REPO), str(main)], check=True)
    shutil.copy(SCRIPT, main / "scripts/resume_reproduction.sh")
    run = main / "results/cpu/runs" / RUN
    run.mkdir(parents=True)
    for name in ("config.yaml", "log.jsonl", "metrics.json"):
        (run / name).write_text(f"{name} of a finished run\n")
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for tool in ("crt-repro", "snakemake"):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\n')
        (bin_dir / tool).chmod(0o755)
    data = tmp_path / "data"
    data.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return main, tmp_path / "repro", data, env, log


def resume(main: Path, tree: Path, data: Path, env: dict, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(main / "scripts/resume_reproduction.sh"), str(data), str(tree)],
                          env={**env, **extra_env}, capture_output=True, text=True)


def test_a_fresh_machine_gets_the_launch_worktree_and_the_committed_runs(setup):
    main, tree, data, env, log = setup
    done = resume(main, tree, data, env)
    assert done.returncode == 0, done.stderr
    assert git("rev-parse", "HEAD", cwd=tree).stdout.strip() == git("rev-parse", LAUNCH).stdout.strip()
    copied = tree / "results/cpu/runs" / RUN
    assert sorted(p.name for p in copied.iterdir()) == ["config.yaml", "log.jsonl", "metrics.json"]
    assert (copied / "metrics.json").read_text() == "metrics.json of a finished run\n"
    unlock, workflow = log.read_text().splitlines()
    config = f"--config profile=cpu data_dir={data} beyond_paper=true threads=1"
    assert unlock == f"snakemake --cores 2 --unlock {TARGETS} {config}"
    assert workflow == f"crt-repro workflow -- --cores 2 --keep-going {TARGETS} {config}"


def test_after_a_kill_the_started_runs_go_first(setup):
    main, tree, data, env, log = setup
    assert resume(main, tree, data, env).returncode == 0
    started = tree / "results/cpu/runs/ptb-crt-ncgru-L3-n17-s1-1111111111"
    started.mkdir()
    (started / "checkpoint.pt").write_bytes(b"")
    log.unlink()
    done = resume(main, tree, data, env)
    assert done.returncode == 0, done.stderr
    assert "1 started run(s) first" in done.stdout
    workflow = log.read_text().splitlines()[-1]
    # --prioritize takes every word up to the next option: after the targets, before --config
    assert f"{TARGETS} --prioritize results/cpu/runs/{started.name}/metrics.json --config " in workflow


def test_run_threads_2_gives_one_run_both_cores_and_other_values_are_refused(setup):
    main, tree, data, env, log = setup
    done = resume(main, tree, data, env, RUN_THREADS="2")
    assert done.returncode == 0, done.stderr
    assert log.read_text().splitlines()[-1].endswith(f"data_dir={data} beyond_paper=true threads=2")
    log.unlink()
    bad = resume(main, tree, data, env, RUN_THREADS="4")
    assert bad.returncode == 1 and not log.exists()
    assert bad.stderr.strip() == "resume_reproduction: RUN_THREADS is 1 or 2 (two cores), not '4'"


def test_a_worktree_at_another_commit_is_refused(setup):
    main, tree, data, env, log = setup
    assert git("worktree", "add", "-q", "--detach", str(tree), "HEAD", cwd=main).returncode == 0
    done = resume(main, tree, data, env)
    assert done.returncode == 1 and not log.exists()
    assert done.stderr.strip().endswith(f"not the launch commit {LAUNCH}")


def test_only_finished_runs_are_committed_and_only_once(setup):
    main, tree, data, env, log = setup
    shutil.copy(REPO / "scripts/commit_finished_runs.sh", main / "scripts/commit_finished_runs.sh")
    runs = tree / "results/cpu/runs"
    for run, files in {"ptb-crt-gru-L3-n17-s0-2222222222": ("config.yaml", "log.jsonl", "metrics.json", "best.pt",
                                                            "checkpoint.pt"),
                       "ptb-crt-gru-L3-n17-s1-3333333333": ("config.yaml", "log.jsonl", "checkpoint.pt")}.items():
        (runs / run).mkdir(parents=True)
        for name in files:
            (runs / run / name).write_text(name)
    git("config", "user.email", "ci@example.org", cwd=main)
    git("config", "user.name", "ci", cwd=main)
    # Work of one's own staged in main when the runs land stays staged, out of their commit.
    (main / "NOTES.md").write_text("staged, not for this commit\n")
    git("add", "NOTES.md", cwd=main)
    before = git("rev-parse", "HEAD", cwd=main).stdout

    def commit():
        return subprocess.run(["bash", "scripts/commit_finished_runs.sh", str(tree)], cwd=main, env=env,
                              capture_output=True, text=True)

    done = commit()
    assert done.returncode == 0, done.stderr
    added = git("diff", "--name-only", before.strip(), "HEAD", cwd=main).stdout.split()
    assert added == [f"results/cpu/runs/ptb-crt-gru-L3-n17-s0-2222222222/{n}"
                     for n in ("config.yaml", "log.jsonl", "metrics.json")]
    assert git("diff", "--cached", "--name-only", cwd=main).stdout.split() == ["NOTES.md"]
    assert log.read_text() == "crt-repro record-costs results/cpu/runs/ptb-crt-gru-L3-n17-s0-2222222222\n"
    again = commit()
    assert again.returncode == 0 and again.stdout.startswith("no new finished runs")


def test_a_run_copied_by_a_pass_that_failed_is_committed_by_the_next(setup):
    main, tree, data, env, log = setup
    shutil.copy(REPO / "scripts/commit_finished_runs.sh", main / "scripts/commit_finished_runs.sh")
    run = "ptb-crt-gru-L3-n35-s0-4444444444"
    (tree / "results/cpu/runs" / run).mkdir(parents=True)
    for name in ("config.yaml", "log.jsonl", "metrics.json"):
        (tree / "results/cpu/runs" / run / name).write_text(name)
    git("config", "user.email", "ci@example.org", cwd=main)
    git("config", "user.name", "ci", cwd=main)
    # Another git holding the index (the background loop's twin, say) makes this pass fail after its copy.
    lock = main / ".git/index.lock"
    lock.write_text("")

    def commit():
        return subprocess.run(["bash", "scripts/commit_finished_runs.sh", str(tree)], cwd=main, env=env,
                              capture_output=True, text=True)

    assert commit().returncode != 0
    assert (main / "results/cpu/runs" / run / "metrics.json").exists()
    lock.unlink()
    done = commit()
    assert done.returncode == 0, done.stderr
    assert git("ls-files", f"results/cpu/runs/{run}", cwd=main).stdout.split() == [
        f"results/cpu/runs/{run}/{n}" for n in ("config.yaml", "log.jsonl", "metrics.json")]
    assert not list((main / "results/cpu/runs" / run).glob(".*"))


def test_started_runs_parked_before_a_stop_come_back_on_a_fresh_machine(setup, tmp_path):
    main, tree, data, env, log = setup
    shutil.copy(REPO / "scripts/park_started_runs.sh", main / "scripts/park_started_runs.sh")
    git("config", "user.email", "ci@example.org", cwd=main)
    git("config", "user.name", "ci", cwd=main)
    assert resume(main, tree, data, env).returncode == 0
    runs = tree / "results/cpu/runs"
    started, finished = runs / "ptb-crt-gru-L3-n70-s3-5555555555", runs / "ptb-crt-gru-L3-n70-s2-6666666666"
    for run, files in {started: ("config.yaml", "log.jsonl", "best.pt", "checkpoint.pt"),
                       finished: ("config.yaml", "log.jsonl", "metrics.json", "checkpoint.pt")}.items():
        run.mkdir(parents=True)
        for name in files:
            (run / name).write_text(f"{name} before the stop\n")
    # Stand-ins for the started run's training process, which checkpoints on SIGTERM, and for one of
    # another checkout's, which must be left running.
    trainer = f'trap "echo checkpoint.pt at the stop > {started}/checkpoint.pt; exit 143" TERM; while sleep 0.1; do :; done'
    ours = subprocess.Popen(["bash", "-c", trainer, "crt-repro", "train"], cwd=tree)
    other = subprocess.Popen(["bash", "-c", "while sleep 0.1; do :; done", "crt-repro", "train"], cwd=tmp_path)
    try:
        park = subprocess.run(["bash", "scripts/park_started_runs.sh", str(tree)], cwd=main, env=env,
                              capture_output=True, text=True, timeout=60)
        assert park.returncode == 0, park.stderr
        assert ours.wait(timeout=10) == 143
        assert other.poll() is None
    finally:
        other.kill()
    assert git("ls-tree", "-r", "--name-only", "parked-runs", cwd=main).stdout.split() == [
        f"results/cpu/runs/{started.name}/{n}" for n in ("best.pt", "checkpoint.pt", "config.yaml", "log.jsonl")]
    assert git("rev-list", "--count", "parked-runs", cwd=main).stdout.strip() == "1"
    assert git("diff", "--cached", "--name-only", cwd=main).stdout == ""   # main's own index untouched

    # A fresh machine: no worktree. The started run comes back, checkpoint and all, and goes first.
    shutil.rmtree(tree)
    git("worktree", "prune", cwd=main)
    log.unlink()
    done = resume(main, tree, data, env)
    assert done.returncode == 0, done.stderr
    assert "restored 1 parked run(s)" in done.stdout and "1 started run(s) first" in done.stdout
    assert (started / "checkpoint.pt").read_text() == "checkpoint.pt at the stop\n"
    assert (started / "best.pt").read_text() == "best.pt before the stop\n"
    assert not finished.exists() and not list(started.glob(".*"))
    assert f"--prioritize results/cpu/runs/{started.name}/metrics.json" in log.read_text()

    # A kept machine: its own, later checkpoint wins over the parked one.
    (started / "checkpoint.pt").write_text("a later checkpoint\n")
    again = resume(main, tree, data, env)
    assert again.returncode == 0 and "restored" not in again.stdout
    assert (started / "checkpoint.pt").read_text() == "a later checkpoint\n"

    # Once no run is started, parking removes the branch: nothing stale is restored later.
    (started / "metrics.json").write_text("finished\n")
    park = subprocess.run(["bash", "scripts/park_started_runs.sh", str(tree)], cwd=main, env=env,
                          capture_output=True, text=True, timeout=60)
    assert park.returncode == 0 and "branch parked-runs removed" in park.stdout
    assert git("rev-parse", "-q", "--verify", "refs/heads/parked-runs", cwd=main).returncode != 0
