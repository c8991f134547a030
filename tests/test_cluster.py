"""The Slurm profile: what Snakemake's Slurm plugin submits for the paper profile's runs.

The dry run shows each train job's rule, resources and shell command; the submissions themselves
come from running the workflow against stand-ins of the Slurm commands (sbatch records its
arguments and answers a job id; nothing runs; sacct may report a job cut at its time limit),
stopped once the jobs are submitted."""
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


def stand_in_slurm(tmp_path, sacct: str = "exit 0") -> tuple[dict, object]:
    """sbatch, sacct and friends as scripts: sbatch records its arguments and answers job ids 1, 2, ...;
    sacctmgr knows the account `proj`. Returns the environment to run Snakemake in and the record."""
    fake = tmp_path / "slurm_bin"
    fake.mkdir()
    log = tmp_path / "slurm_calls.txt"
    (fake / "sbatch").write_text(f'#!/bin/sh\nprintf "%s\\n" "sbatch $*" >> {log}\nwc -l < {log}\n')
    (fake / "sacctmgr").write_text("#!/bin/sh\necho proj\n")
    (fake / "sacct").write_text(f"#!/bin/sh\n{sacct}\n")
    for name in set(SLURM_COMMANDS) - {"sacctmgr", "sacct"}:
        (fake / name).write_text("#!/bin/sh\nexit 0\n")
    for f in fake.iterdir():
        f.chmod(0o755)
    return dict(os.environ, PATH=f"{fake}{os.pathsep}{BIN}{os.pathsep}{os.environ.get('PATH', '')}"), log


def submissions(wd, env, log, args, count: int, timeout: float = 120) -> list[str]:
    """The sbatch lines of a Slurm run of the workflow, stopped once ``count`` jobs are submitted."""
    p = subprocess.Popen([SNAKEMAKE, "--profile", "workflow/profiles/slurm", *args], cwd=wd, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and p.poll() is None:
            if log.exists() and log.read_text().count("sbatch ") >= count:
                break
            time.sleep(0.5)
    finally:
        os.killpg(p.pid, signal.SIGKILL)  # the workflow would poll the stand-in sacct forever
        p.wait()
    return log.read_text().splitlines() if log.exists() else []


def test_a_job_per_run_and_seed_on_one_node_sized_by_the_run(workflow, tmp_path):
    wd, data = workflow
    config = ["--config", "profile=paper", f"data_dir={data}", "seeds=[0,1]", "slurm_partition=gpu",
              "slurm_account=proj"]
    runs = [j["shell"].rsplit("--out ", 1)[1].split()[0] for j in jobs_of(snakemake(
        wd, "-n", "-p", "--profile", "workflow/profiles/slurm", "table2_ptb_3layer", "table5_wt103_16layer", *config))
        if j["rule"].startswith("train")]
    xl_wt103 = next(r for r in runs if "wt103-transformer_xl-L16-n150-s0" in r)
    ptb_seeds = sorted(r for r in runs if re.search(r"ptb-transformer-L3-n70-s[01]-", r))
    assert len(ptb_seeds) == 2

    env, log = stand_in_slurm(tmp_path)
    calls = submissions(wd, env, log, [f"{r}/metrics.json" for r in (xl_wt103, *ptb_seeds)] + config, 3)
    assert len(calls) == 3, calls
    for call in calls:
        assert " --nodes=1" in call and " --gpus=1" in call and " -p gpu" in call and " -A proj" in call
        assert "--array" not in call and "--ntasks" not in call
    wt103 = next(c for c in calls if "run_id=wt103-transformer_xl" in c)
    assert " -t 1440 " in wt103 and " --mem 14607 " in wt103  # the 24 h cap; 8000 + 64 x 103.2M tokens
    ptb = [c for c in calls if "run_id=ptb-transformer-L3-n70" in c]
    assert {re.search(r"run_id=(\S+?)'", c).group(1) for c in ptb} == {r.rsplit("/", 1)[1] for r in ptb_seeds}
    assert all(" -t 35 " in c and " --mem 8060 " in c for c in ptb)  # test_the_job_size_formulas


def test_a_job_cut_at_its_time_limit_is_submitted_again_with_twice_the_time(workflow, tmp_path):
    wd, data = workflow
    (run,) = [j["shell"].rsplit("--out ", 1)[1].split()[0] for j in jobs_of(snakemake(
        wd, "-n", "-p", "--profile", "workflow/profiles/slurm", "table2_ptb_3layer", "--config", "profile=paper",
        f"data_dir={data}")) if j["rule"] == "train" and "ptb-transformer-L3-n70-s0" in j["shell"]]
    env, log = stand_in_slurm(tmp_path, sacct='echo "1|TIMEOUT"')
    calls = submissions(wd, env, log, [f"{run}/metrics.json", "--config", "profile=paper", f"data_dir={data}",
                                       "slurm_account=proj", "--slurm-init-seconds-before-status-checks=1"], 2)
    assert len(calls) == 2, calls
    assert " -t 35 " in calls[0] and " -t 70 " in calls[1]


def test_only_training_timing_and_gradient_reach_are_submitted(workflow):
    wd, _ = workflow
    listed = snakemake(wd, "--list-rules", "--config", "profile=paper").splitlines()
    rules = {line for line in listed if re.fullmatch(r"\w+", line)}
    # the workflow's own verdict: the localrules directive and the rules that say `localrule: True`
    # (the generated table, figure and download rules)
    snakefile = wd / "Snakefile"
    source = snakefile.read_text()
    snakefile.write_text(source + '\nprint("LOCALRULES", *sorted(workflow._localrules))\n')
    try:
        out = snakemake(wd, "--list-rules", "--config", "profile=paper")
    finally:
        snakefile.write_text(source)
    local = set(next(line for line in out.splitlines() if line.startswith("LOCALRULES ")).split()[1:])
    assert local <= rules
    assert rules - local == {"train", "train_multi_gpu", "train_video", "table6_timing", "cost_table", "gradient_reach"}


def test_the_job_size_formulas():
    from crt_repro.config import build_config
    from crt_repro.plan import job_mem_mb, job_minutes

    # A cpu-profile PTB run, at the reference shape of the profile's speed: 15 epochs of 929,589
    # tokens at 4,500 tokens/s are 51.6 minutes, and 30 more for start-up and evaluations.
    ptb = build_config("cpu", "ptb", {"model": {"n_layer": 3}})
    assert job_minutes(ptb, "cpu") == 82
    assert [job_minutes(ptb, "cpu", attempt) for attempt in (2, 3, 5, 6)] == [164, 327, 1307, 1440]
    # At the paper's scale a 16-layer PTB token costs 1.34x a 3-layer one (the softmax is shared).
    paper_ptb = [build_config("paper", "ptb", {"model": {"n_layer": n}}) for n in (3, 16)]
    assert [job_minutes(c, "paper") for c in paper_ptb] == [35, 47]
    wt103 = build_config("paper", "wt103")
    assert job_minutes(wt103, "paper") == 1440 and job_mem_mb(wt103) == 14607
    assert job_mem_mb(build_config("smoke", "synthetic")) == 8000


def test_on_one_local_gpu_a_4_gpu_run_trains_in_one_process(workflow):
    wd, data = workflow
    out = snakemake(wd, "-n", "-p", "--workflow-profile", "workflow/profiles/default", "table5_wt103_16layer",
                    "--config", "profile=paper", f"data_dir={data}", "train_gpus={wt103: 4}")
    train = [j for j in jobs_of(out) if j["rule"] == "train_multi_gpu"]
    assert len(train) == 9
    assert all(j["resources"]["gpu"] == "1" and j["shell"].startswith("crt-repro with-gpus 1 -- ")
               and "--nproc" not in j["shell"] for j in train)
