# Tables: collect each table's runs into a runs CSV (with the FLOPs each run recorded), build the
# table from it (paper value, ours, delta), and merge every table's runs into results/<scale>/runs.csv.


# A run trained before runs recorded their forward FLOPs in metrics.json (one of older code, still
# running when this code came) has them counted into its cost.json, which collect reads.
rule record_cost:
    input:
        ancient(f"{RESULTS}/runs/{{run_id}}/metrics.json"),
    output:
        f"{RESULTS}/runs/{{run_id}}/{COST}",
    log:
        f"{RESULTS}/logs/record_cost/{{run_id}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/record_cost/{{run_id}}.tsv"
    conda:
        CONDA_ENV
    params:
        run=lambda wildcards, input: str(Path(input[0]).parent),
    wildcard_constraints:
        run_id=regex_of(PLAN.runs),
    shell:
        "crt-repro record-costs {params.run} > {log} 2>&1"


rule collect_table_runs:
    input:
        metrics=table_metrics,
        costs=table_costs,
    output:
        f"{RESULTS}/tables/runs/{{table}}.csv",
    log:
        f"{RESULTS}/logs/collect/{{table}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/collect/{{table}}.tsv"
    conda:
        CONDA_ENV
    wildcard_constraints:
        table=regex_of(PLAN.tables),
    shell:
        "crt-repro collect --tag {wildcards.table} --check-dir-names -o {output} {input.metrics} > {log} 2>&1"


rule ppl_table:
    input:
        runs=ancient(f"{RESULTS}/tables/runs/{{table}}.csv"),
    output:
        csv=report(
            f"{RESULTS}/tables/{{table}}.csv",
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "{table}", "kind": "perplexity"},
        ),
        md=f"{RESULTS}/tables/{{table}}.md",
    log:
        f"{RESULTS}/logs/tables/{{table}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/tables/{{table}}.tsv"
    conda:
        CONDA_ENV
    params:
        profile=PROFILE,
    wildcard_constraints:
        table=regex_of(PLAN.tables),
    shell:
        "crt-repro table {wildcards.table} --runs {input.runs} --profile {params.profile}"
        " --csv {output.csv} --md {output.md} > {log} 2>&1"


# Table 6's measurement: its models timed round-robin at one widths (a GPU job under the paper scale).
rule table6_timing:
    output:
        f"{RESULTS}/bench/table6_{{widths}}.csv",
    log:
        f"{RESULTS}/logs/bench/table6_{{widths}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/bench/table6_{{widths}}.tsv"
    conda:
        CONDA_ENV
    params:
        profile=PROFILE,
        gpus=with_gpus,
        stand_in=STAND_IN_ARGS,
    wildcard_constraints:
        widths="scale|paper",
    resources:
        gpu=GPU,
        **SLURM_PLACE,
    shell:
        "{params.gpus}crt-repro time-table6 --profile {params.profile} --widths {wildcards.widths}"
        " {params.stand_in} --csv {output} > {log} 2>&1"


rule cost_table:
    input:
        timings=cost_table_timings,
    output:
        csv=report(
            f"{RESULTS}/tables/{{table}}.csv",
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "{table}", "kind": "cost"},
        ),
        md=f"{RESULTS}/tables/{{table}}.md",
    log:
        f"{RESULTS}/logs/tables/{{table}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/tables/{{table}}.tsv"
    conda:
        CONDA_ENV
    params:
        profile=PROFILE,
        stand_in=STAND_IN_ARGS,
        timings=lambda wildcards, input: f"--timings {input.timings}" if input.timings else "",
    wildcard_constraints:
        table=regex_of(PLAN.cost_tables),
    resources:
        **SLURM_PLACE,
    shell:
        "crt-repro table {wildcards.table} --profile {params.profile} {params.stand_in} {params.timings}"
        " --csv {output.csv} --md {output.md} > {log} 2>&1"


# Every run of the scale's tables once, tagged with the tables that use it. Under all and
# all_tables it waits for all of them; `snakemake --cores 1 runs_csv` alone collects the runs that
# have finished (common.smk, runs_csv_metrics).
rule runs_csv:
    input:
        runs_csv_metrics,
        runs_csv_costs,
    output:
        report(f"{RESULTS}/runs.csv", caption="../report/runs.rst", category="Runs"),
    log:
        f"{RESULTS}/logs/runs_csv.log",
    benchmark:
        f"{RESULTS}/benchmarks/runs_csv.tsv"
    conda:
        CONDA_ENV
    params:
        collect=runs_csv_collect,
    shell:
        "(tmp=$(mktemp -d) && {params.collect} -o {output} && rm -r $tmp) > {log} 2>&1"


# What claims (d) and (f) compare at the paper's widths: counted, nothing trained (a minute or two).
rule paper_width_costs:
    output:
        f"{RESULTS}/tables/paper_width_costs.csv",
    log:
        f"{RESULTS}/logs/paper_width_costs.log",
    benchmark:
        f"{RESULTS}/benchmarks/paper_width_costs.tsv"
    conda:
        CONDA_ENV
    shell:
        "crt-repro paper-costs --csv {output} > {log} 2>&1"


# Claims (d) and (f) alone, from what the two rules above and Table 6 measured: decided before any
# run (claims.md repeats them once the runs are in).
rule cost_claims:
    input:
        # ancient, as Table 6's: committed measurements, whose checkout times order nothing.
        paper_costs=ancient(f"{RESULTS}/tables/paper_width_costs.csv"),
        cost=ancient(f"{RESULTS}/tables/table6_cost.csv"),
    output:
        csv=f"{RESULTS}/cost_claims.csv",
        md=f"{RESULTS}/cost_claims.md",
    log:
        f"{RESULTS}/logs/cost_claims.log",
    benchmark:
        f"{RESULTS}/benchmarks/cost_claims.tsv"
    conda:
        CONDA_ENV
    params:
        profile=PROFILE,
    shell:
        "crt-repro claims --cost {input.cost} --paper-costs {input.paper_costs} --profile {params.profile}"
        " --csv {output.csv} --md {output.md} > {log} 2>&1"


# The paper's claims (a)-(f), decided as workflow/config/claims.yaml declares them from the runs of
# the tables they compare, and Table 6; REPRODUCTION.md quotes the verdicts.
rule claims:
    input:
        runs=[ancient(table_runs_csv(t)) for t in CLAIM_TABLES],
        # declared before the runs and never edited after them (the protocol): a fresh clone's
        # checkout times must not call the committed verdicts stale
        declared=ancient(CLAIMS_FILE),
        paper_costs=ancient(f"{RESULTS}/tables/paper_width_costs.csv"),
        cost=ancient(f"{RESULTS}/tables/table6_cost.csv"),
    output:
        csv=report(f"{RESULTS}/claims.csv", caption="../report/claims.rst", category="Claims"),
        md=f"{RESULTS}/claims.md",
    log:
        f"{RESULTS}/logs/claims.log",
    benchmark:
        f"{RESULTS}/benchmarks/claims.tsv"
    conda:
        CONDA_ENV
    params:
        profile=PROFILE,
        data_dir=lambda wildcards: f"--data-dir {DATA_DIR or 'data'}",
    shell:
        "crt-repro claims --runs {input.runs} --declared {input.declared} --cost {input.cost}"
        " --paper-costs {input.paper_costs}"
        " --profile {params.profile} {params.data_dir}"
        " --csv {output.csv} --md {output.md} > {log} 2>&1"
