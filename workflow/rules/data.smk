# Corpora, downloaded only when no data_dir is given (the cpu and paper profiles; smoke without a
# data_dir uses the package's generated corpus). sha256-checked by `crt-repro download`.


rule download_ptb:
    output:
        DOWNLOAD_FILES["ptb"],
    log:
        f"{RESULTS}/logs/download/ptb.log",
    benchmark:
        f"{RESULTS}/benchmarks/download/ptb.tsv"
    conda:
        CONDA_ENV
    shell:
        "crt-repro download ptb --to data > {log} 2>&1"


rule download_wikitext2:
    output:
        DOWNLOAD_FILES["wikitext-2"],
    log:
        f"{RESULTS}/logs/download/wikitext-2.log",
    benchmark:
        f"{RESULTS}/benchmarks/download/wikitext-2.tsv"
    conda:
        CONDA_ENV
    shell:
        "crt-repro download wikitext-2 --to data > {log} 2>&1"


rule download_wt103:
    output:
        DOWNLOAD_FILES["wt103"],
    log:
        f"{RESULTS}/logs/download/wt103.log",
    benchmark:
        f"{RESULTS}/benchmarks/download/wt103.tsv"
    conda:
        CONDA_ENV
    shell:
        "crt-repro download wikitext-103 --to data > {log} 2>&1"
