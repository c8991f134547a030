"""A newcomer's first hour on a fresh clone (issue 13, items 2-5, 7 and 11): the README's
commands and data set-up work as written, the workflow's default targets run without the
licensed video data, and a failing or finished DAG says where to look."""
from __future__ import annotations

import re

import pandas as pd
import pytest
import yaml
from conftest import shared_data_dir
from test_bad_input import TINY, write_ptb
from workflow_helpers import REPO, copy_workflow, job_counts, needs_snakemake, snakemake, train_run_ids

from crt_repro.cli import main

pytest_plugins = ["pytester"]

README = (REPO / "README.md").read_text()
DOCS = {p.name: p.read_text() for p in (REPO / "docs").glob("*.md")}
VIDEO_RULES = {"train_video", "collect_video_table_runs", "mca_table", "table7_smarthome", "table13_smarthome_rnn"}


def code_blocks(text: str) -> str:
    return "\n".join(re.findall(r"```bash\n(.*?)```", text, flags=re.S))


def readme_section(title: str, text: str = README) -> str:
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def smoke_row() -> str:
    """The smoke scale's row of the scales table (docs/reproduction-choices.md)."""
    table = readme_section("Scales", DOCS["reproduction-choices.md"])
    return next(line for line in table.splitlines() if line.startswith("| `smoke`"))


# --- item 2: data from a fresh clone; CRT_REPRO_DATA -----------------------------------------


def test_readme_examples_download_the_data_before_using_it():
    commands = code_blocks(README)
    assert "../shared/data" not in commands
    workflow_examples = re.findall(r"```\n(.*?)```", (REPO / "workflow/README.md").read_text(), flags=re.S)
    assert workflow_examples and "../shared/data" not in "".join(workflow_examples)
    download = commands.index("crt-repro download ptb --to data")
    uses = [m.start() for m in re.finditer(r"--data-dir data\b|data_dir=data\b|CRT_REPRO_DATA=", commands)]
    assert uses and download < min(uses)


def test_readme_snakemake_commands_that_run_jobs_give_cores():
    # Snakemake refuses to run jobs locally without --cores (outside an execution profile).
    inline = [" ".join(span.split()) for span in re.findall(r"`(snakemake [^`]*)`", README)]
    lines = [line.split("#")[0] for line in code_blocks(README).splitlines() + inline if line.startswith("snakemake ")]
    running = [line for line in lines if not re.search(r" (-n|--report|--unlock|--lint)\b", line)]
    assert running and all(re.search(r"--cores|--profile|--workflow-profile", line) for line in running), running


def test_crt_repro_data_is_the_clis_default_data_dir(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("CRT_REPRO_DATA", str(write_ptb(tmp_path / "data", 5000)))
    with pytest.warns(UserWarning, match="sha256 differs"):  # not the canonical PTB files
        assert main(["train", *TINY, "--dataset", "ptb", "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_tests_find_the_corpora_through_crt_repro_data(monkeypatch, tmp_path):
    monkeypatch.setenv("CRT_REPRO_DATA", str(tmp_path))
    assert shared_data_dir() == tmp_path
    monkeypatch.delenv("CRT_REPRO_DATA")
    assert shared_data_dir() == REPO.parent / "shared" / "data"


def test_a_skipped_data_test_says_how_to_enable_it(pytester, monkeypatch, tmp_path):
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text())
    pytester.makepyfile("def test_needs_the_corpora(shared_data):\n    assert shared_data.is_dir()\n")
    monkeypatch.setenv("CRT_REPRO_DATA", str(tmp_path / "nowhere"))
    skipped = pytester.runpytest("-rs", "-p", "no:cacheprovider")
    skipped.assert_outcomes(skipped=1)
    reason = skipped.stdout.str()
    assert str(tmp_path / "nowhere") in reason and "set CRT_REPRO_DATA" in reason and "crt-repro download" in reason
    monkeypatch.setenv("CRT_REPRO_DATA", str(tmp_path))
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


# --- item 3: smoke without a data dir ---------------------------------------------------------


def test_missing_ptb_says_how_to_download_and_that_synthetic_needs_none(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("CRT_REPRO_DATA", str(tmp_path / "nowhere"))
    assert main(["train", *TINY, "--dataset", "ptb", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(tmp_path / "nowhere" / "ptb" / "ptb.train.txt") in err
    assert f"crt-repro download ptb --to {tmp_path / 'nowhere'}" in err and "--dataset synthetic" in err
    assert main(["train", *TINY, "--dataset", "synthetic", "--out", str(tmp_path / "run")]) == 0


def test_the_docs_say_which_smoke_runs_use_the_generated_corpus():
    assert "datasets_without_data_dir" in smoke_row() and "--dataset synthetic" in smoke_row()
    for text in (README, *DOCS.values()):
        assert "generated corpus when no data dir is given" not in text  # the CLI does not do that
    workflow_smoke = yaml.safe_load((REPO / "workflow/config/smoke.yaml").read_text())
    assert set(workflow_smoke["datasets_without_data_dir"].values()) == {"synthetic"}


# --- item 4: the headline targets run without Toyota Smarthome -------------------------------


@needs_snakemake
@pytest.mark.parametrize("command", [["all_tables"], ["all", "--config", "profile=cpu"]],
                         ids=["paper all_tables", "cpu all"])
def test_headline_targets_plan_without_the_video_data(tmp_path, command):
    assert "snakemake --cores 8 all_tables " in code_blocks(README)
    assert "snakemake --cores 2 all --config profile=cpu " in code_blocks(DOCS["running.md"])
    out = snakemake(copy_workflow(tmp_path), "-n", *command)
    counts = job_counts(out)
    assert counts["ppl_table"] == 9 and counts["cost_table"] == 2 and not VIDEO_RULES & set(counts), counts
    assert sum("skip table7_smarthome and table13_smarthome_rnn" in line for line in out.splitlines()) == 1


@needs_snakemake
def test_smarthome_dir_brings_the_video_tables_back(tmp_path):
    wf = copy_workflow(tmp_path)
    (wf / "clips").mkdir()
    out = snakemake(wf, "-n", "all_tables", "--config", "profile=cpu", "smarthome_dir=clips")
    counts = job_counts(out)
    seeds = yaml.safe_load((REPO / "workflow/config/cpu.yaml").read_text())["seeds"]
    assert counts["mca_table"] == 2 and counts["train_video"] == 3 * len(seeds) and "skip table7" not in out


# --- item 5: the smoke step counts in the README ---------------------------------------------


def test_the_smoke_budget_in_the_docs_is_the_workflows_and_the_training_presets():
    row = smoke_row()
    workflow_tokens = yaml.safe_load((REPO / "workflow/config/smoke.yaml").read_text())["set"]["optim.max_tokens"]
    package_steps = yaml.safe_load((REPO / "crt_repro/profiles/smoke.yaml").read_text())["optim"]["max_steps"]
    assert f"{workflow_tokens:,} tokens each" in row and f"trains {package_steps} steps" in row


@needs_snakemake
def test_workflow_readme_job_counts_are_the_smoke_dags(tmp_path):
    text = " ".join((REPO / "workflow/README.md").read_text().split())
    with_dir = re.search(r"with a data_dir is (\d+) jobs: (\d+) language runs", text)
    without = re.search(r"Without a data_dir it is (\d+) jobs and (\d+) runs", text)
    assert with_dir and without
    wf = copy_workflow(tmp_path)
    (wf / "corpora").mkdir()
    for config, (jobs, runs) in ((["data_dir=corpora"], with_dir.groups()), ([], without.groups())):
        counts = job_counts(snakemake(wf, "-n", "all_tables", "all_figures", "--config", "profile=smoke", *config))
        assert (sum(counts.values()), counts["train"]) == (int(jobs), int(runs)), counts


# --- item 7: a run off a terminal says what it does; where a DAG's outputs went, why a job failed


def test_a_run_off_a_terminal_logs_its_steps_its_resume_and_its_end(capsys, tmp_path):
    run = ["train", *TINY, "--dataset", "synthetic", "--set", "optim.max_steps=4", "--set", "run.log_every=2",
           "--out", str(tmp_path / "run")]
    assert main(run) == 0  # capsys's stderr is no terminal: no progress bar, log lines instead
    err = capsys.readouterr().err
    steps = re.findall(r"^step (\d+)/4 loss \d+\.\d{3} \d+ tokens/s eta \d+:\d\d:\d\d$", err, flags=re.M)
    assert steps == ["2", "4"], err
    (tmp_path / "run" / "metrics.json").unlink()  # killed after its last checkpoint
    assert main(run) == 0
    assert re.search(r"^\S+: resuming from step 4 of 4 \(checkpoint\.pt\)$", capsys.readouterr().err, flags=re.M)
    assert main(run) == 0
    assert f"already finished: {tmp_path / 'run' / 'metrics.json'} present" in capsys.readouterr().err


# --- item 7: where a DAG's outputs went, and why a job failed --------------------------------


@needs_snakemake
def test_a_finished_dag_lists_its_outputs(tmp_path):
    wf = copy_workflow(tmp_path)
    for path in ("results/cpu/tables/table1_complexity.csv", "results/cpu/tables/table1_complexity.md",
                 "results/cpu/runs.csv", "figures/cpu/fig5_ptb_3layer.png", "figures/cpu/fig5_ptb_3layer.pdf"):
        (wf / path).parent.mkdir(parents=True, exist_ok=True)
        (wf / path).write_text("made earlier\n")
    # --touch runs the DAG (and its onsuccess handler) without running the jobs' commands
    out = snakemake(wf, "--cores", "1", "--touch", "--forceall", "table1_complexity", "--config", "profile=cpu")
    summary = out[out.index("Outputs of the cpu scale:"):]
    assert "results/cpu/tables/ (.csv and .md): table1_complexity" in summary
    assert "figures/cpu/ (.png and .pdf): fig5_ptb_3layer" in summary and "  results/cpu/runs.csv" in summary
    assert "not built: table7_smarthome, table13_smarthome_rnn (smarthome_dir is not set)" in summary


@needs_snakemake
def test_a_failed_jobs_cause_reaches_the_console(tmp_path):
    wf = copy_workflow(tmp_path)
    (wf / "empty").mkdir()  # a data_dir without the corpus: the first train job fails
    command = ["--cores", "1", "table8_ablation", "--config", "profile=smoke", "data_dir=empty"]
    out = snakemake(wf, *command, check=False)
    assert "Exiting because a job execution failed" in out
    assert re.search(r"---- rule train failed; the last lines of results/smoke/logs/train/\S+\.log:", out), out[-3000:]
    assert "ptb.train.txt not found; fetch it with: crt-repro download ptb" in out
    # Snakemake's own --show-failed-logs (the default profile's) prints the whole log: not twice
    out = snakemake(wf, "--show-failed-logs", *command, check=False)
    assert out.count("ptb.train.txt not found") == 1 and "---- rule train failed" not in out


# --- item 11: a data_dir that is not there ----------------------------------------------------


@needs_snakemake
def test_a_missing_data_dir_stops_the_workflow_when_parsed(tmp_path):
    wf = copy_workflow(tmp_path)
    out = snakemake(wf, "-n", "table2_ptb_3layer", "--config", "profile=cpu", "data_dir=/nonexistent", check=False)
    assert "crt-repro workflow: error: data_dir='/nonexistent' is not a folder" in out, out[-3000:]
    assert "Job stats" not in out and "Traceback" not in out and "ValueError" not in out
    (wf / "corpora").mkdir()
    assert job_counts(snakemake(wf, "-n", "table2_ptb_3layer", "--config", "profile=cpu", "data_dir=corpora"))


# --- issue 26, item 8: `crt-repro --help` -----------------------------------------------------


def test_help_describes_the_tool_in_whole_sentences():
    from crt_repro.cli import build_parser

    help_text = build_parser().format_help()
    description = " ".join(help_text.split("\n\n")[1].split())  # after the usage lines
    assert description.endswith(".") and "``" not in description, description  # it stopped at "the work and"
    assert "Compact Recurrent Transformer" in description


# --- issue 26, item 0: runs.csv from the runs that have finished ------------------------------


@needs_snakemake
@pytest.mark.slow
def test_runs_csv_alone_collects_the_finished_runs_with_their_tables(tmp_path):
    wf = copy_workflow(tmp_path)
    tiny = ["profile=smoke", "set={optim.max_tokens: 300, optim.warmup_steps: 1, data.batch_size: 2, "
            "data.eval_batch_size: 2, data.max_eval_segments: 2}"]
    run = next(r for r in train_run_ids(snakemake(wf, "-n", "table8_ablation", "--config", *tiny))
               if r.startswith("synthetic-transformer-L3-n70-"))
    snakemake(wf, "--cores", "1", f"results/smoke/runs/{run}/metrics.json", "--config", *tiny)
    out = snakemake(wf, "--cores", "1", "runs_csv", "--config", *tiny)
    assert job_counts(out) == {"runs_csv": 1}, out[-2000:]  # no training: the one run that finished
    runs = pd.read_csv(wf / "results/smoke/runs.csv", keep_default_na=False)
    assert list(runs["run_id"]) == [run]
    assert {"table2_ptb_3layer", "table8_ablation"} <= set(runs["tables"].iloc[0].split(";"))
    # all_tables still waits for every run before it builds runs.csv
    assert job_counts(snakemake(wf, "-n", "all_tables", "--config", *tiny))["train"] > 1


# --- issue 26, item 2: what a target will cost, when it starts --------------------------------


@needs_snakemake
def test_a_started_dag_says_how_many_runs_and_hours_each_target_needs(tmp_path):
    wf = copy_workflow(tmp_path)
    (wf / "corpora").mkdir()
    # --touch starts the DAG (onstart) without running the jobs' commands
    out = snakemake(wf, "--cores", "1", "--touch", "all", "table3_ptb_16layer", "table1_complexity",
                    "--config", "profile=cpu", "data_dir=corpora")
    lines = [line for line in out.splitlines() if " training runs under the cpu scale" in line]
    assert len(lines) == 2, out[-3000:]  # table1_complexity trains nothing
    assert re.fullmatch(r"crt-repro workflow: all needs 122 of its 122 training runs under the cpu scale, "
                        r"about [0-9,]+ core-hours", lines[0]), lines
    assert lines[1].startswith("crt-repro workflow: table3_ptb_16layer needs 18 of its 18 training runs")
    assert "hours are an estimate from ~4,500 tokens/s per core at 3 x 128" in out
    hours = [int(re.search(r"about ([0-9,]+) core-hours", line).group(1).replace(",", "")) for line in lines]
    assert hours[0] > hours[1] > 0


# --- issue 26, item 4: the README's set-up on an ordinary machine -----------------------------


def test_readme_installs_the_cpu_wheel_and_names_no_path_beside_the_repository():
    setup = code_blocks(readme_section("Set up"))
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in setup
    for text in (README, (REPO / "REPRODUCTION.md").read_text(), *DOCS.values()):
        assert "../shared/data" not in text and "the issue" not in text


# --- issue 26, item 11: more processes than CPU cores ----------------------------------------


def test_more_processes_than_cpu_cores_warns_in_one_line(capsys, monkeypatch):
    import torch

    from crt_repro import distributed

    monkeypatch.setattr(distributed.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    distributed.warn_cpu_oversubscribed(3, torch.device("cpu"))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--nproc 3 starts 3 processes on 2 CPU cores" in err
    distributed.warn_cpu_oversubscribed(2, torch.device("cpu"))
    assert capsys.readouterr().err == ""


# --- issue 26, item 10: workflow config that cannot work --------------------------------------


@needs_snakemake
@pytest.mark.parametrize("setting, message", [
    ("bogus_key=1", "workflow config fails validation: Additional properties are not allowed ('bogus_key' was unexpected)"),
    ("set={model.d_model: 0}", "workflow config (set, layers, seeds or experiments): model.d_model=0: must be >= 1"),
    ("set={model.n_layer: 4}", "--layers 3 and --set model.n_layer=4 disagree"),
    ("data_dir=", "data_dir is empty: give the folder that holds ptb/ and wikitext-2/"),
])
def test_a_workflow_config_that_cannot_work_stops_in_one_line(tmp_path, setting, message):
    """Before planning: the offending key and why, in one line, not a traceback or a schema dump."""
    wf = copy_workflow(tmp_path)
    out = snakemake(wf, "-n", "table2_ptb_3layer", "--config", "profile=smoke", setting, check=False)
    errors = [line for line in out.splitlines() if line.startswith("crt-repro workflow: error: ")]
    assert len(errors) == 1 and message in errors[0], out[-3000:]
    assert "Traceback" not in out and "Job stats" not in out and "properties:" not in out


def test_a_malformed_configfile_is_named_with_its_line_by_the_workflow_command(tmp_path, capsys):
    """Snakemake reads --configfile before the workflow's code and names neither file nor line;
    `crt-repro workflow -- ...` checks each one first."""
    from crt_repro.cli import main
    from crt_repro.resume import config_files

    assert config_files(["--cores", "2", "--configfile", "a.yaml", "b.yaml", "-n", "--configfile=c.yaml"]) == [
        "a.yaml", "b.yaml", "c.yaml"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: smoke\nseeds: [0\n")
    assert main(["workflow", "--", "-n", "all", "--configfile", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"crt-repro workflow: error: {bad}:3:1: not valid YAML"), err


def test_the_workflow_command_runs_a_mode_that_builds_nothing_once(monkeypatch):
    """`crt-repro workflow -- --unlock TARGETS` (the step after a killed run) unlocks and returns
    Snakemake's status, instead of looping over passes and reporting the targets unbuilt."""
    import crt_repro.resume as resume
    from crt_repro.cli import main

    calls = []
    monkeypatch.setattr(resume.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    monkeypatch.setattr(resume, "nothing_to_do", lambda cmd: pytest.fail("a dry run after --unlock"))
    assert main(["workflow", "--", "--cores", "2", "--unlock", "all", "--config", "profile=smoke"]) == 0
    assert calls == [["snakemake", "--cores", "2", "--unlock", "all", "--config", "profile=smoke"]]
    calls.clear()
    monkeypatch.setattr(resume, "nothing_to_do", lambda cmd: len(calls) == 2)
    monkeypatch.setattr(resume, "started_runs", lambda args: [])
    assert main(["workflow", "--", "--cores", "2", "all"]) == 0
    assert calls == [["snakemake", "--cores", "2", "all", "--rerun-incomplete"]] * 2


def test_the_workflow_command_finishes_the_runs_a_kill_left_started_first(tmp_path, monkeypatch, capsys):
    import crt_repro.resume as resume
    from crt_repro.cli import main
    from crt_repro.outputs import Output

    runs = {name: tmp_path / "runs" / name for name in ("begun", "done", "fresh")}
    for name in ("begun", "done"):
        runs[name].mkdir(parents=True)
        (runs[name] / "checkpoint.pt").write_bytes(b"")
    (runs["done"] / "metrics.json").write_text("{}")
    dag = [Output(str(d / "metrics.json"), "train", "missing", "update pending") for d in runs.values()]
    monkeypatch.setattr("crt_repro.outputs.summary", lambda args: dag)
    calls = []
    monkeypatch.setattr(resume.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    monkeypatch.setattr(resume, "nothing_to_do", lambda cmd: True)
    assert main(["workflow", "--", "--cores", "2", "all"]) == 0
    assert calls == [["snakemake", "--cores", "2", "all", "--rerun-incomplete", "--prioritize",
                      str(runs["begun"] / "metrics.json")]]
    assert "1 started run(s) first: begun" in capsys.readouterr().err
