# crt-repro: every table and figure of "Compact Recurrent Transformer with Persistent Memory"
# (arXiv 2505.00929) as Snakemake targets. See workflow/README.md.
#
#   snakemake --cores 2 all_tables all_figures --config profile=smoke data_dir=../shared/data
#   snakemake --cores 8 all                      # paper scale (default), GPU or cluster
#   snakemake -n fig5_ptb_3layer                 # only the 9 runs of Table 2's grid
#   snakemake gradient_reach_ptb                 # Table 9's GRU/NCGRU gradient reach, init vs trained
#   snakemake --cores 8 all --config smarthome_dir=/data/smarthome   # Tables 7/13 need the clips
#
# Target rules live here; the rules that do work are in workflow/rules/ and call the
# `crt-repro` CLI. `all` is the default target (default_target, not the first rule: includes
# must not decide it).

import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("8.0")


configfile: "workflow/config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/video_common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/video.smk"
include: "workflow/rules/memory_reach.smk"


# Jobs that run where snakemake runs, never submitted to a cluster: the targets, downloads (compute
# nodes may have no network), counting an old run's FLOPs (record_cost), and collecting runs into
# tables and figures (seconds each). The train jobs, Table 6's timing (table6_timing), the cost tables and gradient
# reach are submitted. The paper's table and figure targets (below) and the downloads (data.smk)
# are generated in loops and say `localrule` themselves.
localrules:
    all,
    report_contents,
    paper_width_costs,
    all_tables,
    all_figures,
    memory_reach,
    memory_reach_report,
    beyond_paper,
    claims_3layer,
    gradient_reach_ptb,
    curves_ptb_3layer,
    runs_csv,
    record_cost,
    collect_table_runs,
    ppl_table,
    claims,
    cost_claims,
    figure,
    valid_curves,
    collect_video_table_runs,
    mca_table,


rule all:
    default_target: True
    input:
        ALL_TABLE_FILES,
        ALL_FIGURE_FILES,
        GRADIENT_REACH_FILES,
        f"{RESULTS}/runs.csv",
        f"{RESULTS}/cost_claims.md",
        f"{RESULTS}/claims.md",


# `snakemake --report report.html report_contents --config profile=P`: one page of what the profile
# has. Snakemake's report needs every file its DAG marks for the report to exist, so this target's
# DAG is the scale's tables, figures, claims and runs.csv that exist; it names the others.
REPORTABLE = [*ALL_TABLE_FILES, *ALL_FIGURE_FILES, *GRADIENT_REACH_FILES, f"{RESULTS}/runs.csv",
              f"{RESULTS}/claims.csv", f"{RESULTS}/tables/memory_reach.csv", f"{FIGURES}/memory_reach.png"]
REPORT_FILES = [f for f in REPORTABLE if Path(f).exists()]
if "report_contents" in sys.argv:
    _missing = [f for f in REPORTABLE if not Path(f).exists()]
    print(f"crt-repro workflow: the report holds {len(REPORT_FILES)} files of the {PROFILE} scale"
          + (f"; not built yet, so not in it: {', '.join(_missing)}" if _missing else ""), file=sys.stderr)


rule report_contents:
    input:
        [ancient(f) for f in REPORT_FILES],


rule all_tables:
    input:
        ALL_TABLE_FILES,
        f"{RESULTS}/runs.csv",


rule all_figures:
    input:
        ALL_FIGURE_FILES,


# One target rule per table and figure of the paper (`snakemake table2_ptb_3layer`): its .csv and
# .md, or its .png and .pdf. Tables 7 and 13 (Toyota Smarthome, workflow/rules/video.smk) need
# --config smarthome_dir=DIR under the cpu and paper scales (the dataset is licensed, not
# downloadable); smoke runs them on generated synthetic videos. CI checks every output file of
# these targets through `crt-repro outputs` (.ci/run), which reads them from the workflow.
PAPER_TABLES = [
    "table1_complexity",
    "table2_ptb_3layer",
    "table3_ptb_16layer",
    "table4_wt103_3layer",
    "table5_wt103_16layer",
    "table6_cost",
    "table7_smarthome",
    "table8_ablation",
    "table9_ptb_3layer_rnn",
    "table10_ptb_16layer_rnn",
    "table11_wt103_3layer_rnn",
    "table12_wt103_16layer_rnn",
    "table13_smarthome_rnn",
]
PAPER_FIGURES = ["fig5_ptb_3layer", "fig6_ptb_16layer"]
PAPER_TARGETS = {**{t: table_files(t) for t in PAPER_TABLES}, **{f: figure_files(f) for f in PAPER_FIGURES}}

for _target, _files in PAPER_TARGETS.items():

    rule:
        name: _target
        localrule: True
        input:
            _files,


rule curves_ptb_3layer:
    input:
        [f"{FIGURES}/valid_curves_table2_ptb_3layer.{ext}" for ext in ("png", "pdf")],


rule gradient_reach_ptb:
    input:
        GRADIENT_REACH_FILES,


rule claims_3layer:
    input:
        f"{RESULTS}/claims.md",


# Beyond the paper (docs/memory-diagnostics.md); neither is part of `all`.
rule memory_reach:
    input:
        [f"{RESULTS}/tables/memory_reach.{ext}" for ext in ("csv", "md")],
        [f"{FIGURES}/memory_reach.{ext}" for ext in ("png", "pdf")],


# The runs of the rows not in the paper (RMT in Tables 2 and 8), whatever beyond_paper says;
# rebuild the tables afterwards to show them.
rule beyond_paper:
    input:
        [ancient(f"{run_dir(r)}/metrics.json") for t in PLAN.tables.values() for r in t.optional_run_ids],


onstart:
    print_compute_needed()


# At the end of a run, where its outputs went; on failure, the cause from each failed job's log
# on the console (a plain `snakemake` does not find workflow/profiles/default, whose
# show-failed-logs prints whole logs; with it, the tails would only repeat them).
onsuccess:
    summary = [f"Outputs of the {PROFILE} scale:"]
    if Path(f"{RESULTS}/runs").is_dir():
        n_runs = sum(1 for p in Path(f"{RESULTS}/runs").iterdir() if p.is_dir())
        summary.append(f"  runs: {RESULTS}/runs/ ({n_runs} run directories)")
    for folder, kinds, pattern in ((f"{RESULTS}/tables", ".csv and .md", "*.md"), (FIGURES, ".png and .pdf", "*.png")):
        if Path(folder).is_dir():
            stems = ", ".join(sorted(p.stem for p in Path(folder).glob(pattern))) or "none yet"
            summary.append(f"  {folder}/ ({kinds}): {stems}")
    summary += [f"  {p}" for p in (f"{RESULTS}/runs.csv", f"{RESULTS}/claims.md") if Path(p).is_file()]
    summary.append(f"  job logs: {RESULTS}/logs/")
    if SKIPPED_VIDEO_TABLES:
        summary.append(f"  not built: {', '.join(SKIPPED_VIDEO_TABLES)} (smarthome_dir is not set)")
    print("\n".join(summary), file=sys.stderr)


onerror:
    if not workflow.output_settings.show_failed_logs:
        for job in sorted(workflow.scheduler.failed, key=str):
            for log in job.log:
                lines = Path(log).read_text(errors="replace").splitlines()[-20:] if Path(log).is_file() else []
                print(f"---- rule {job.rule.name} failed; the last lines of {log}:", *(lines or ["(empty)"]),
                      sep="\n", file=sys.stderr)
