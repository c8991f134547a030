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
