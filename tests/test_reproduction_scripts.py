"""The two scripts of the decisive cpu reproduction (REPRODUCTION.md), which trains in a worktree
of its launch commit. scripts/resume_reproduction.sh starts and resumes it: on a fresh machine it
trains none of the runs already committed, after a kill it finishes the started runs first, and
it never runs in a worktree at another commit. scripts/commit_finished_runs.sh commits to main the
records of the runs that finished there, and only those. Snakemake and crt-repro are stand-ins
that log their arguments."""
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
