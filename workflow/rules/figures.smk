# Figures 5 and 6: perplexity vs forward FLOPs, the paper's points beside ours.


rule figure:
    input:
        runs=figure_runs_csv,
    output:
        png=report(
            f"{FIGURES}/{{fig}}.png",
            caption="../report/figure.rst",
            category="Figures",
            labels={"figure": "{fig}"},
        ),
        pdf=f"{FIGURES}/{{fig}}.pdf",
    log:
        f"{RESULTS}/logs/figures/{{fig}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/{{fig}}.tsv"
    conda:
        CONDA_ENV
    params:
        profile=PROFILE,
    wildcard_constraints:
        fig=regex_of(PLAN.figures),
    shell:
        "crt-repro figure {wildcards.fig} --runs {input.runs} --profile {params.profile}"
        " -o {output.png} -o {output.pdf} > {log} 2>&1"


# Validation perplexity against training tokens of a table's runs: read from their log.jsonl,
# which a run has whenever it has the metrics.json its table's runs CSV was collected from.
rule valid_curves:
    input:
        runs=lambda wildcards: ancient(table_runs_csv(wildcards.table)),
    output:
        png=report(f"{FIGURES}/valid_curves_{{table}}.png", caption="../report/curves.rst", category="Figures"),
        pdf=f"{FIGURES}/valid_curves_{{table}}.pdf",
    log:
        f"{RESULTS}/logs/figures/valid_curves_{{table}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/valid_curves_{{table}}.tsv"
    conda:
        CONDA_ENV
    params:
        runs_dir=runs_dir(PROFILE),
    wildcard_constraints:
        table=regex_of(PLAN.tables),
    shell:
        "crt-repro curves {wildcards.table} --runs {input.runs} --runs-dir {params.runs_dir}"
        " -o {output.png} -o {output.pdf} > {log} 2>&1"


# ||d loss(segment k) / d e_1|| of Table 9's GRU and NCGRU runs, before and after training.
rule gradient_reach:
    input:
        lambda wildcards: [ancient(f"{run_dir(r)}/metrics.json") for r in gradient_reach_runs(wildcards.seg).values()],
    output:
        csv=f"{RESULTS}/tables/gradient_reach_ptb_n{{seg}}.csv",
        png=report(f"{FIGURES}/gradient_reach_ptb_n{{seg}}.png", caption="../report/gradient_reach.rst",
                   category="Figures"),
        pdf=f"{FIGURES}/gradient_reach_ptb_n{{seg}}.pdf",
    log:
        f"{RESULTS}/logs/figures/gradient_reach_ptb_n{{seg}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/gradient_reach_ptb_n{{seg}}.tsv"
    conda:
        CONDA_ENV
    params:
        runs=lambda wildcards: " ".join(f"--checkpoint {run_dir(r)}" for r in gradient_reach_runs(wildcards.seg).values()),
        data_dir=gradient_reach_data_dir,
    wildcard_constraints:
        seg="[0-9]+",
    resources:
        **SLURM_PLACE,
    shell:
        "crt-repro gradient-reach {params.runs} {params.data_dir} --segments 8 --csv {output.csv}"
        " -o {output.png} -o {output.pdf} > {log} 2>&1"
