"""CI (.ci/run) installs and tests as README.md says, and checks the workflow's outputs through
`crt-repro outputs` (Snakemake's --summary), not through lists of its own or Snakemake's log text."""
from __future__ import annotations

import os
import re

import pytest
from workflow_helpers import BIN, REPO, copy_workflow, needs_snakemake

from crt_repro.outputs import Output, parse_summary, problems

CI = (REPO / ".ci/run").read_text()
README = (REPO / "README.md").read_text()
COMMANDS = [line.split("#")[0].strip() for line in CI.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_ci_installs_and_tests_as_the_readme_says():
    readme_code = "\n".join(re.findall(r"```bash\n(.*?)```", README, flags=re.S))
    installs = [c for c in COMMANDS if c.startswith("pip install")]
    assert installs == ["pip install torch==2.13.0", 'pip install -e ".[test]"'], installs
    assert 'pip install -e ".[test]"' in readme_code and "\npytest\n" in f"\n{readme_code}\n"
    # CI's torch line is the README's row for the reference machine and CI (the CPU wheel on disk)
    assert re.search(r"\| the reference machine and CI [^|]*\| `pip install torch==2\.13\.0` \|", README)
    assert "pytest" in COMMANDS


def test_ci_runs_the_cheap_checks_before_the_tests():
    order = [next(i for i, c in enumerate(COMMANDS) if c.startswith(p))
             for p in ("ruff check", "snakemake --lint", "snakemake -n", "crt-repro outputs --", "pytest",
                       "snakemake --cores", "crt-repro outputs --all")]
    assert order == sorted(order), COMMANDS
    assert "Nothing to be done" not in CI and "table2_ptb_3layer" not in CI and "fig5" not in CI


SUMMARY = """Building DAG of jobs...
output_file\tdate\trule\tlog-file(s)\tstatus\tplan
results/x/tables/t.csv\tSun Dec  6 23:15:03 2026\tppl_table\tresults/x/logs/t.log\tok\tno update
results/x/tables/u.csv\t-\tppl_table\t-\tmissing\tupdate pending
results/x/tables/v.csv\tSun Dec  6 23:15:03 2026\tppl_table\t-\tupdated input files\tupdate pending
"""


def test_summary_rows_and_what_fails(tmp_path):
    rows = parse_summary(SUMMARY)
    assert [r.path.rsplit("/", 1)[1] for r in rows] == ["t.csv", "u.csv", "v.csv"]
    assert rows[0].current and not rows[1].present and rows[2].present and not rows[2].current
    # present files must be current; missing ones fail only when all are required
    assert [p.split(":")[0] for p in problems(rows, require_all=False, root=tmp_path)] == ["results/x/tables/v.csv"]
    assert len(problems(rows, require_all=True, root=tmp_path)) == 2
    (tmp_path / "results/x/tables").mkdir(parents=True)
    (tmp_path / "results/x/tables/t.csv").write_text("")
    assert problems([rows[0]], require_all=True, root=tmp_path) == [
        "results/x/tables/t.csv: empty (rule ppl_table)"]
    with pytest.raises(ValueError, match="no snakemake --summary table"):
        parse_summary("Building DAG of jobs...\n")
    assert Output("a", "r", "ok", "no update").current


@needs_snakemake
def test_outputs_reads_the_workflows_files(tmp_path, monkeypatch, capsys):
    from crt_repro.cli import main

    wf = copy_workflow(tmp_path)
    monkeypatch.chdir(wf)
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    args = ["--", "table2_ptb_3layer", "--config", "profile=smoke"]
    assert main(["outputs", "--list", *args]) == 0  # nothing built: nothing out of date
    listed = capsys.readouterr().out.splitlines()
    assert "results/smoke/tables/table2_ptb_3layer.md\tppl_table\tmissing" in listed
    assert sum("\ttrain\t" in line for line in listed) > 1
    assert main(["outputs", "--all", *args]) == 1
    assert "results/smoke/tables/table2_ptb_3layer.csv: missing (rule ppl_table)" in capsys.readouterr().err
