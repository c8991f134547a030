"""``crt-repro outputs [--all] -- SNAKEMAKE-ARGS ...``: the workflow's output files for some targets,
and whether each is there, non-empty and up to date.

The files come from the workflow itself: Snakemake's ``--summary`` lists every output file of the
targets' DAG, one tab-separated row each (file, date, rule, log, status, plan), where ``status``
says whether the file exists and ``plan`` whether a run would rebuild it (``no update``, as
Snakemake's dry run decides it: ancient() inputs included). So no list of tables or figures is kept
beside the Snakefile, and no human-readable log line is matched. CI (``.ci/run``) checks with it
that the committed cpu results are current in a fresh clone and that the smoke run built
everything and would redo nothing.

Without ``--all`` a missing file is fine (a table whose runs are not all in yet) and every present
one must be up to date; with ``--all`` every file must be present, non-empty and up to date. The
exit status is 1 when a file fails, naming each with why; with ``--list`` the files are printed,
one a line, with their rule and state.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SUMMARY_COLUMNS = ["output_file", "date", "rule", "log-file(s)", "status", "plan"]


@dataclass(frozen=True)
class Output:
    path: str
    rule: str
    status: str  # "ok", "missing", or why Snakemake finds it out of date
    plan: str  # "no update" or "update pending"

    @property
    def present(self) -> bool:
        return self.status != "missing"

    @property
    def current(self) -> bool:
        return self.present and self.plan == "no update"


def parse_summary(text: str) -> list[Output]:
    """The rows of ``snakemake --summary`` (its header line first; lines before it are dropped)."""
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.split("\t") == SUMMARY_COLUMNS)
    except StopIteration:
        raise ValueError("no snakemake --summary table in the output (its header: "
                         f"{' '.join(SUMMARY_COLUMNS)})") from None
    rows = []
    for line in lines[start + 1:]:
        cells = line.split("\t")
        if len(cells) != len(SUMMARY_COLUMNS):
            continue
        path, _, rule, _, status, plan = cells
        rows.append(Output(path, rule, status, plan))
    return rows


def problems(outputs: list[Output], require_all: bool, root: Path = Path(".")) -> list[str]:
    """One line per file that fails: missing (under ``require_all``), empty, or to be rebuilt."""
    found = []
    for out in outputs:
        if not out.present:
            if require_all:
                found.append(f"{out.path}: missing (rule {out.rule})")
            continue
        if require_all and (root / out.path).is_file() and (root / out.path).stat().st_size == 0:
            found.append(f"{out.path}: empty (rule {out.rule})")
        if out.plan != "no update":
            found.append(f"{out.path}: out of date, a run would rebuild it (rule {out.rule}: {out.status}; {out.plan})")
    return found


def summary(snakemake_args: list[str]) -> list[Output]:
    p = subprocess.run(["snakemake", "--summary", *snakemake_args], capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-3000:] + p.stderr[-3000:])
        raise ValueError(f"snakemake --summary {' '.join(snakemake_args)} failed (exit status {p.returncode})")
    return parse_summary(p.stdout)


def cmd_outputs(args: argparse.Namespace) -> int:
    given = args.snakemake_args[1:] if args.snakemake_args[:1] == ["--"] else args.snakemake_args
    if not given:
        raise ValueError("no snakemake arguments given: crt-repro outputs -- TARGET ... --config profile=P")
    outputs = summary(given)
    if args.list:
        for out in outputs:
            print(f"{out.path}\t{out.rule}\t{'current' if out.current else out.status if not out.present else out.plan}")
    failed = problems(outputs, args.all)
    for line in failed:
        print(f"crt-repro outputs: {line}", file=sys.stderr)
    present = sum(out.present for out in outputs)
    print(f"crt-repro outputs: {len(outputs)} output files of {' '.join(given)}: {present} present, "
          f"{len(failed)} failing", file=sys.stderr)
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("outputs", help="the workflow's output files for these snakemake targets (from snakemake "
                       "--summary), and whether each is present, non-empty and up to date; exit status 1 if not")
    p.add_argument("--all", action="store_true",
                   help="every output must be present and non-empty (default: missing ones are fine, present ones "
                   "must be up to date)")
    p.add_argument("--list", action="store_true", help="print each file, its rule and its state")
    p.add_argument("snakemake_args", nargs=argparse.REMAINDER, metavar="-- SNAKEMAKE-ARGS ...")
    p.set_defaults(func=cmd_outputs)
