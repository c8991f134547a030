# Corpora, downloaded only when no data_dir is given (the cpu and paper profiles; smoke without a
# data_dir uses the package's generated corpus). sha256-checked by `crt-repro download`.


rule download_ptb:
    output:
        DOWNLOAD_FILES["ptb"],
    log:
        "results/logs/download/ptb.log",
    benchmark:
        "results/benchmarks/download/ptb.tsv"
    conda:
        CONDA_ENV
    shell:
        "crt-repro download ptb --to data > {log} 2>&1"


rule download_wikitext2:
    output:
        DOWNLOAD_FILES["wikitext-2"],
    log:
        "results/logs/download/wikitext-2.log",
    benchmark:
        "results/benchmarks/download/wikitext-2.tsv"
    conda:
        CONDA_ENV
    shell:
        "crt-repro download wikitext-2 --to data > {log} 2>&1"


rule download_wt103:
    output:
        DOWNLOAD_FILES["wt103"],
    log:
        "results/logs/download/wt103.log",
    benchmark:
        "results/benchmarks/download/wt103.tsv"
    conda:
        CONDA_ENV
    shell:
        "crt-repro download wikitext-103 --to data > {log} 2>&1"
