# Beyond the paper: the memory-reach benchmark (experiments.yaml `memory_reach`): its runs are
# trained by rule train; one job builds the table and the figure from them.


rule memory_reach_report:
    input:
        metrics=reach_metrics,
    output:
        csv=report(f"{RESULTS}/tables/memory_reach.csv", caption="../report/memory_reach.rst", category="Beyond the paper"),
        md=f"{RESULTS}/tables/memory_reach.md",
        png=report(f"{FIGURES}/memory_reach.png", caption="../report/memory_reach.rst", category="Beyond the paper"),
        pdf=f"{FIGURES}/memory_reach.pdf",
    log:
        f"{RESULTS}/logs/tables/memory_reach.log",
    benchmark:
        f"{RESULTS}/benchmarks/tables/memory_reach.tsv"
    conda:
        CONDA_ENV
    shell:
        "crt-repro reach {input.metrics} --csv {output.csv} --md {output.md} -o {output.png} -o {output.pdf} > {log} 2>&1"
