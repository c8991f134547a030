"""``crt-repro workflow -- SNAKEMAKE-ARGS ...``: run the workflow until its targets are built.

After a killed Snakemake (and ``snakemake --unlock``), ``snakemake --rerun-incomplete`` reruns the
jobs it killed and may then stop, exit 0, with jobs of the target still unbuilt: a killed train
job whose metrics.json had been written is forced, and Snakemake (9.x) does not follow a forced
job to the jobs that read its output as ancient() and find it present (the workflow marks the
runs' metrics.json ancient; workflow/rules/common.smk says why), so those jobs and the other runs
they need are left out of that pass. This command runs ``snakemake --rerun-incomplete ARGS``
until a dry run finds nothing to do (at most MAX_PASSES passes).

The runs of the targets that a kill left started (a checkpoint, no metrics.json) go first
(``--prioritize``): otherwise Snakemake may begin new runs before them, and a machine lent for a
few hours at a time gathers partial runs instead of finished ones.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

MAX_PASSES = 3
# Modes in which Snakemake builds nothing: they run once, as given (a pass loop would report the
# targets they leave unbuilt as a failure).
NOT_BUILDING = {"--unlock", "-n", "--dry-run", "--dryrun", "--lint", "--list", "-l", "--list-rules",
                "--summary", "-S", "--detailed-summary", "-D", "--dag", "--rulegraph", "--filegraph",
                "--report", "--cleanup-metadata", "--touch", "-t", "--list-target-rules", "--lt"}


def nothing_to_do(command: list[str]) -> bool:
    dry = subprocess.run([*command, "--dry-run"], capture_output=True, text=True)
    return dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr


def started_runs(snakemake_args: list[str]) -> list[str]:
    """The metrics.json of every run of the targets' DAG that has a checkpoint and no record yet."""
    from crt_repro.progress import run_dirs
    from crt_repro.run_directory import CHECKPOINT, METRICS

    return [str(d / METRICS) for d in run_dirs(snakemake_args)
            if (d / CHECKPOINT).exists() and not (d / METRICS).exists()]


def config_files(args: list[str]) -> list[str]:
    """The files of ``--configfile``/``--configfiles`` in snakemake arguments."""
    files, taking = [], False
    for a in args:
        if a.startswith("--configfile"):
            taking = "=" not in a
            files += [a.split("=", 1)[1]] if "=" in a else []
        elif a.startswith("-"):
            taking = False
        elif taking:
            files.append(a)
    return files


def cmd_workflow(args: argparse.Namespace) -> int:
    from crt_repro.config import read_yaml_file

    given = args.snakemake_args[1:] if args.snakemake_args[:1] == ["--"] else args.snakemake_args
    if not given:
        raise ValueError("no snakemake arguments given: crt-repro workflow -- --cores 2 TARGET --config ...")
    # Snakemake reads these before the workflow's code runs, and says only "Config file is not
    # valid JSON or YAML": name the file and the line here.
    for path in config_files(given):
        read_yaml_file(path)
    if NOT_BUILDING.intersection(a.split("=", 1)[0] for a in given):
        return subprocess.call(["snakemake", *given])
    started = started_runs(given)
    if started:
        print(f"crt-repro workflow: {len(started)} started run(s) first: "
              f"{', '.join(Path(p).parent.name for p in started)}", file=sys.stderr)
    command = ["snakemake", *given, "--rerun-incomplete"] + (["--prioritize", *started] if started else [])
    for n in range(1, MAX_PASSES + 1):
        rc = subprocess.call(command)
        if rc != 0 or nothing_to_do(command):
            return rc
        print(f"crt-repro workflow: pass {n} left jobs of the targets unbuilt; running again", file=sys.stderr)
    print(f"crt-repro workflow: error: jobs still unbuilt after {MAX_PASSES} passes: {' '.join(command)} -n "
          f"lists them", file=sys.stderr)
    return 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("workflow", help="run snakemake with these arguments (and --rerun-incomplete) until its targets "
                       "are built: the one command that finishes a target after a killed Snakemake")
    p.add_argument("snakemake_args", nargs=argparse.REMAINDER, metavar="-- SNAKEMAKE-ARGS ...")
    p.set_defaults(func=cmd_workflow)
