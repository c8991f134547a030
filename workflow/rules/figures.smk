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
