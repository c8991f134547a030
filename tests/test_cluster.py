"""The Slurm profile: what Snakemake's Slurm plugin submits for the paper profile's runs.

The dry run shows each train job's rule, resources and shell command; the submissions themselves
come from running the workflow against stand-ins of the Slurm commands (sbatch records its
arguments and answers a job id; nothing runs), stopped once the jobs are submitted."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from workflow_helpers import BIN, SNAKEMAKE, copy_workflow, needs_snakemake, snakemake

pytest.importorskip("snakemake_executor_plugin_slurm")
pytestmark = needs_snakemake

SLURM_COMMANDS = ("sinfo", "squeue", "sacct", "sacctmgr", "scontrol", "sshare", "scancel", "srun")


def jobs_of(out: str) -> list[dict]:
    """rule, resources and shell command of every job a dry run (-n -p) lists."""
    jobs = []
    for block in re.split(r"\n(?=\[.*\]\nrule )", out):
        rule = re.search(r"^rule (\w+):", block, re.M)
        if not rule:
            continue
        res = re.search(r"resources: (.*)", block)
        shell = re.search(r"Shell command: (.*)", block)
        jobs.append({"rule": rule.group(1), "resources": dict(kv.split("=", 1) for kv in res.group(1).split(", ")),
                     "shell": shell.group(1) if shell else ""})
    return jobs


@pytest.fixture
def workflow(tmp_path):
    (tmp_path / "wf").mkdir()
    wd = copy_workflow(tmp_path / "wf")
    (tmp_path / "data" / "wikitext-103").mkdir(parents=True)
    (tmp_path / "data" / "ptb").mkdir()
    return wd, tmp_path / "data"


def test_every_paper_run_trains_on_one_gpu_of_its_own(workflow):
    wd, data = workflow
    out = snakemake(wd, "-n", "-p", "--profile", "workflow/profiles/slurm", "table2_ptb_3layer", "table5_wt103_16layer",
                    "--config", "profile=paper", f"data_dir={data}")
    train = [j for j in jobs_of(out) if j["rule"].startswith("train")]
    wt103 = [j for j in train if "--dataset wt103" in j["shell"]]
    assert len(wt103) == 9 and len(train) == 18
    for j in train:
        assert j["rule"] == "train" and j["resources"]["gpu"] == "1"
        assert j["shell"].startswith("crt-repro with-gpus 1 -- crt-repro train ") and "--nproc" not in j["shell"]


def test_train_gpus_makes_a_wt103_run_one_4_gpu_torchrun_job(workflow):
    wd, data = workflow
    out = snakemake(wd, "-n", "-p", "--profile", "workflow/profiles/slurm", "table5_wt103_16layer",
                    "--config", "profile=paper", f"data_dir={data}", "train_gpus={wt103: 4}")
    train = [j for j in jobs_of(out) if j["rule"].startswith("train")]
    assert len(train) == 9
    for j in train:
        assert j["rule"] == "train_multi_gpu"
        assert j["resources"]["gpu"] == "4" and j["resources"]["tasks_per_gpu"] == "0"
        assert re.search(r"^crt-repro with-gpus 4 -- crt-repro train .* --nproc 4 --out ", j["shell"])


def test_cpu_jobs_start_without_the_gpu_allocator(workflow):
    wd, data = workflow
    out = snakemake(wd, "-n", "-p", "table2_ptb_3layer", "--config", "profile=smoke", f"data_dir={data}")
    train = [j for j in jobs_of(out) if j["rule"] == "train"]
    assert len(train) == 9
    assert all(j["resources"]["gpu"] == "0" and j["shell"].startswith("crt-repro train ") for j in train)


def test_slurm_submits_one_task_on_4_gpus_for_wt103_and_an_array_for_a_seed_sweep(workflow, tmp_path):
    wd, data = workflow
    config = ["--config", "profile=paper", f"data_dir={data}", "seeds=[0,1]", "train_gpus={wt103: 4}"]
    runs = [j["shell"].rsplit("--out ", 1)[1].split()[0] for j in jobs_of(snakemake(
        wd, "-n", "-p", "--profile", "workflow/profiles/slurm", "table2_ptb_3layer", "table5_wt103_16layer", *config))
        if j["rule"].startswith("train")]
    xl_wt103 = next(r for r in runs if "wt103-transformer_xl-L16-n150-s0" in r)
    ptb_seeds = [r for r in runs if re.search(r"ptb-transformer-L3-n70-s[01]-", r)]
    assert len(ptb_seeds) == 2

    fake = tmp_path / "slurm_bin"
    fake.mkdir()
    log = tmp_path / "slurm_calls.txt"
    (fake / "sbatch").write_text(f'#!/bin/sh\nprintf "%s\\n" "sbatch $*" >> {log}\necho 4242\n')
    for name in SLURM_COMMANDS:
        (fake / name).write_text("#!/bin/sh\nexit 0\n")
    for f in fake.iterdir():
        f.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}{os.pathsep}{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    targets = [f"{r}/metrics.json" for r in (xl_wt103, *ptb_seeds)]
    p = subprocess.Popen([SNAKEMAKE, "--profile", "workflow/profiles/slurm", *targets, *config], cwd=wd, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and p.poll() is None:
            if log.exists() and log.read_text().count("sbatch ") >= 2:
                break
            time.sleep(0.5)
    finally:
        os.killpg(p.pid, signal.SIGKILL)  # the workflow would poll the stand-in sacct forever
        p.wait()
    calls = log.read_text().splitlines()
    assert len(calls) == 2, calls
    multi = next(c for c in calls if "rule_train_multi_gpu" in c)
    sweep = next(c for c in calls if c != multi)
    # One job on 4 GPUs whose script runs once (no --ntasks-per-gpu), training on those 4 through torchrun.
    assert " --gpus=4" in multi and "--ntasks" not in multi and "--array" not in multi
    assert "--cpus-per-task=32" in multi and "--target-jobs 'train_multi_gpu:run_id=wt103-transformer_xl" in multi
    # Both seeds in one array job, one GPU each.
    assert "--array=" in sweep and " --gpus=1" in sweep


def test_on_one_local_gpu_a_4_gpu_run_trains_in_one_process(workflow):
    wd, data = workflow
    out = snakemake(wd, "-n", "-p", "--workflow-profile", "workflow/profiles/default", "table5_wt103_16layer",
                    "--config", "profile=paper", f"data_dir={data}", "train_gpus={wt103: 4}")
    train = [j for j in jobs_of(out) if j["rule"] == "train_multi_gpu"]
    assert len(train) == 9
    assert all(j["resources"]["gpu"] == "1" and j["shell"].startswith("crt-repro with-gpus 1 -- ")
               and "--nproc" not in j["shell"] for j in train)
