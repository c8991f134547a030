"""``crt-repro collect | record-costs | merge | table | figure``: run records, CSVs from several
machines, paper tables and figures. The workflow's rules call these; they work by hand on any runs CSV too."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_collect(args: argparse.Namespace) -> int:
    from crt_repro.results import collect, write_runs_csv

    df = collect(args.runs, tags=args.tag or [], check_dir_names=args.check_dir_names)
    write_runs_csv(df, args.output)
    print(f"wrote {len(df)} run(s) to {args.output}", file=sys.stderr)
    return 0


def cmd_record_costs(args: argparse.Namespace) -> int:
    from crt_repro.results import record_cost

    for run in args.runs:
        path = record_cost(run)
        print(f"wrote {path}" if path else f"{run}: cost already recorded (or a video run)", file=sys.stderr)
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from crt_repro.results import merge_files, write_runs_csv

    df = merge_files(args.csvs)
    write_runs_csv(df, args.output)
    print(f"merged {len(args.csvs)} file(s) into {len(df)} run(s): {args.output}", file=sys.stderr)
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from crt_repro import atomic
    from crt_repro.report.reference import load_reference
    from crt_repro.report.tables import cost_table, ppl_markdown, ppl_table_from_csv, table_info

    info = table_info(args.name)
    reference = load_reference(args.reference)
    if args.name == "table6_cost":
        if not args.timings:
            raise ValueError("table6_cost needs --timings (CSVs from `crt-repro time-table6`)")
        import pandas as pd

        from crt_repro.report.cost_tables import TIMING_COLUMNS
        from crt_repro.results import read_csv_checked

        timings = pd.concat([read_csv_checked(f, TIMING_COLUMNS, "Table 6 timings CSV (crt-repro time-table6)")
                             for f in args.timings])
        df, md = cost_table(args.name, None, reference, timings=timings)
    elif info.kind == "cost":
        if not args.profile:
            raise ValueError(f"{args.name} needs --profile (it is computed, not read from runs)")
        df, md = cost_table(args.name, args.profile, reference, stand_in_of(args.stand_in or []))
    else:
        if not args.runs:
            raise ValueError(f"{args.name} needs --runs (a runs CSV from `crt-repro collect` or `merge`)")
        df = ppl_table_from_csv(args.name, args.runs, args.profile, args.dataset, reference)
        md = ppl_markdown(args.name, df, reference)
    atomic.write_text(args.csv, df.to_csv(index=False, lineterminator="\n"))
    if args.md:
        atomic.write_text(args.md, md)
    print(md)
    return 0


def stand_in_of(pairs: list[str]) -> dict[str, str]:
    """``--stand-in PAPER=OURS`` arguments as a mapping."""
    bad = [p for p in pairs if p.count("=") != 1 or "" in p.split("=")]
    if bad:
        raise ValueError(f"--stand-in {bad[0]!r}: expected PAPER=OURS, e.g. wt103=wikitext-2")
    return dict(p.split("=") for p in pairs)


def cmd_time_table6(args: argparse.Namespace) -> int:
    from crt_repro import atomic
    from crt_repro.report.cost_tables import time_table6

    df = time_table6(args.profile, args.widths, stand_in=stand_in_of(args.stand_in or []), batch=args.batch,
                     device=args.device, warmup=args.warmup, repeats=args.repeats)
    atomic.write_text(args.csv, df.to_csv(index=False, lineterminator="\n"))
    print(df.to_string(index=False))
    return 0


def cmd_paper_costs(args: argparse.Namespace) -> int:
    from crt_repro import atomic
    from crt_repro.report.claims import paper_width_costs

    df = paper_width_costs()
    atomic.write_text(args.csv, df.to_csv(index=False, lineterminator="\n"))
    print(df.to_string(index=False))
    return 0


def cmd_claims(args: argparse.Namespace) -> int:
    from crt_repro import atomic
    from crt_repro.report.claims import (PAPER_WIDTH_COLUMNS, TABLE6_CLAIM_COLUMNS, claims_markdown,
                                         cost_claims_table, require_paper_width_rows, require_table6_rows)
    from crt_repro.results import read_csv_checked

    table6 = paper_costs = None
    if args.cost:
        table6 = read_csv_checked(args.cost, TABLE6_CLAIM_COLUMNS, "Table 6 CSV")
        require_table6_rows(table6, args.cost)
    if args.paper_costs:
        paper_costs = read_csv_checked(args.paper_costs, PAPER_WIDTH_COLUMNS, "paper-width costs CSV")
        require_paper_width_rows(paper_costs, args.paper_costs)
    if not args.runs:  # the cost claims alone, decided before any run
        if table6 is None or paper_costs is None:
            raise ValueError("claims without --runs are (d) and (f) alone: they need --cost and --paper-costs")
        table, declared = cost_claims_table(table6, paper_costs), None
    else:
        table, declared = _run_claims(args, table6, paper_costs)
    md = claims_markdown(table, args.profile, declared, args.declared)
    atomic.write_text(args.csv, table.to_csv(index=False, lineterminator="\n"))
    atomic.write_text(args.md, md)
    print(md)
    return 0


def _run_claims(args: argparse.Namespace, table6, paper_costs):
    """The claims table of ``--runs`` under the claims file ``--declared``, and that declaration."""
    from crt_repro.data import load_corpus
    from crt_repro.report.claims import claims_table, load_declaration
    from crt_repro.results import merge_files, read_runs_csv, write_runs_csv

    if not args.declared:
        raise ValueError("claims with --runs need --declared, the claims file (workflow/config/claims.yaml)")
    merged = args.csv + ".runs.tmp"
    write_runs_csv(merge_files(args.runs), merged)
    try:
        runs = read_runs_csv(merged)
    finally:
        Path(merged).unlink()
    t2 = runs[runs["tables"].astype(str).str.contains("table2_ptb_3layer")]
    datasets = sorted(set(t2["dataset"]))
    vocab = load_corpus(datasets[0], args.data_dir).vocab_size if datasets else 0
    declared = load_declaration(args.declared)
    return claims_table(runs, vocab, declared, table6, paper_costs), declared


def cmd_figure(args: argparse.Namespace) -> int:
    from crt_repro.report.figures import write_figure

    write_figure(args.name, args.runs, args.output, profile=args.profile, dataset=args.dataset)
    print(f"wrote {', '.join(args.output)}", file=sys.stderr)
    return 0


def cmd_curves(args: argparse.Namespace) -> int:
    from crt_repro.report.curves import write_curves

    write_curves(args.table, args.runs, args.runs_dir, args.output)
    print(f"wrote {', '.join(args.output)}", file=sys.stderr)
    return 0


def cmd_run_curves(args: argparse.Namespace) -> int:
    from crt_repro.report.curves import plot_run_curves
    from crt_repro.report.figures import save_figure

    save_figure(plot_run_curves(args.runs, args.title), args.output)
    print(f"wrote {', '.join(args.output)}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from crt_repro.config import PROFILES

    p = sub.add_parser("collect", help="one runs.csv row per finished run directory (with the FLOPs it recorded)")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directory or its metrics.json")
    p.add_argument("--tag", action="append", metavar="TABLE", help="table that uses these runs (repeatable)")
    p.add_argument("--check-dir-names", action="store_true",
                   help="require the workflow's layout: each run directory named by the run id of its config.yaml "
                   "and metrics.json, and metrics.json complete")
    p.add_argument("-o", "--output", required=True, help="runs CSV to write")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("record-costs", help="count the forward FLOPs of runs trained before runs recorded them "
                                           "into their cost.json, which collect reads")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.set_defaults(func=cmd_record_costs)

    p = sub.add_parser("merge", help="combine runs CSVs from several machines: a run's result columns must agree "
                                       "(else an error); its machine columns (timing, memory, device, date) "
                                       "are the first CSV's")
    p.add_argument("csvs", nargs="*", metavar="CSV", help="none: a runs CSV of the header alone")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("table", help="a paper table (CSV + markdown): paper value, ours, delta")
    p.add_argument("name", help="table rule name, e.g. table2_ptb_3layer or table1_complexity")
    p.add_argument("--runs", help="runs CSV (rows tagged with the table are used)")
    p.add_argument("--profile", help="only runs of this scale (smoke, cpu, paper); required for table1/table6")
    p.add_argument("--dataset", help="only runs on this dataset")
    p.add_argument("--reference", help="paper reference CSV (default: the package's copy)")
    p.add_argument("--stand-in", action="append", metavar="PAPER=OURS",
                   help="table1: the dataset the runs use for a paper dataset, e.g. wt103=wikitext-2 "
                   "(repeatable; the workflow passes its scale's `datasets`)")
    p.add_argument("--timings", nargs="+", metavar="CSV", help="table6_cost: the measurements it renders "
                   "(crt-repro time-table6, one CSV per widths)")
    p.add_argument("--csv", required=True, help="table CSV to write")
    p.add_argument("--md", help="markdown to write (also printed)")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("time-table6", help="measure Table 6: parameters and inference time of its models, "
                       "round-robin, into a CSV that `crt-repro table table6_cost --timings` renders")
    p.add_argument("--profile", required=True, choices=PROFILES, metavar="SCALE", help="smoke | cpu | paper: "
                   "its device and precision (and its widths with --widths scale)")
    p.add_argument("--widths", default="scale", help="scale: the scale's own widths; "
                   "paper: the paper's 16 x 410 on WikiText-103's vocabulary")
    p.add_argument("--batch", type=int, help="streams per forward (default: the widths' eval batch size)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15, help="timing rounds (at least 3 for an interval)")
    p.add_argument("--stand-in", action="append", metavar="PAPER=OURS", help="--widths scale: the dataset the "
                   "scale uses for WikiText-103, e.g. wt103=wikitext-2 (the workflow passes its scale's `datasets`)")
    p.add_argument("--csv", required=True)
    p.set_defaults(func=cmd_time_table6)

    p = sub.add_parser("curves", help="validation perplexity vs training tokens of a table's runs (log.jsonl)")
    p.add_argument("table", help="e.g. table2_ptb_3layer")
    p.add_argument("--runs", required=True, help="runs CSV holding the table's runs")
    p.add_argument("--runs-dir", required=True, help="folder of the run directories (results/<scale>/runs)")
    p.add_argument("-o", "--output", action="append", required=True, help="PNG/PDF to write (repeatable)")
    p.set_defaults(func=cmd_curves)

    p = sub.add_parser("paper-costs", help="forward FLOPs and parameters of the Transformer, XL and CRT at the "
                                          "paper's widths (3 and 16 layers, PTB and WikiText-103), for claims (d), (f)")
    p.add_argument("--csv", required=True)
    p.set_defaults(func=cmd_paper_costs)

    p = sub.add_parser("run-curves", help="validation perplexity vs training tokens of run directories, finished "
                                         "or not (the pilot's figure)")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--title", default="validation perplexity")
    p.add_argument("-o", "--output", action="append", required=True, help="PNG/PDF to write (repeatable)")
    p.set_defaults(func=cmd_run_curves)

    p = sub.add_parser("claims", help="the paper's claims decided from runs CSVs as a claims file declares them "
                       "(without runs: the cost claims (d) and (f) alone)")
    p.add_argument("--runs", nargs="+", help="runs CSVs holding the tables the claims compare (tags kept); without "
                   "them, only (d) and (f), from --cost and --paper-costs")
    p.add_argument("--declared", help="the claims file: cells, seeds, tests, margin (workflow/config/claims.yaml); "
                   "needed with --runs")
    p.add_argument("--cost", help="Table 6 CSV (crt-repro table table6_cost) for claim (f)")
    p.add_argument("--paper-costs", help="FLOPs and parameters at the paper's widths (crt-repro paper-costs) for (d), (f)")
    p.add_argument("--data-dir", help="corpus folder (the vocabulary size, for FLOPs without the softmax layer)")
    p.add_argument("--profile", required=True)
    p.add_argument("--csv", required=True)
    p.add_argument("--md", required=True)
    p.set_defaults(func=cmd_claims)

    p = sub.add_parser("figure", help="Figure 5/6: perplexity vs forward FLOPs, paper and ours")
    p.add_argument("name", help="fig5_ptb_3layer or fig6_ptb_16layer")
    p.add_argument("--runs", required=True, help="runs CSV holding the figure's table's runs")
    p.add_argument("--profile")
    p.add_argument("--dataset")
    p.add_argument("-o", "--output", action="append", required=True, help="PNG/PDF to write (repeatable)")
    p.set_defaults(func=cmd_figure)
