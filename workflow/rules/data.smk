# Corpora, downloaded only when no data_dir is given (the cpu and paper scales; smoke without a
# data_dir uses the package's generated corpus). sha256-checked by `crt-repro download`.
#
# One rule per corpus, from one definition: {rule name: (its files in DOWNLOAD_FILES and its log's
# name, the corpus as `crt-repro download` names it)}.
DOWNLOADS = {
    "download_ptb": ("ptb", "ptb"),
    "download_wikitext2": ("wikitext-2", "wikitext-2"),
    "download_wt103": ("wt103", "wikitext-103"),
}

for _rule, (_files, _corpus) in DOWNLOADS.items():

    rule:
        name: _rule
        localrule: True
        output:
            DOWNLOAD_FILES[_files],
        log:
            f"{RESULTS}/logs/download/{_files}.log",
        benchmark:
            f"{RESULTS}/benchmarks/download/{_files}.tsv"
        conda:
            CONDA_ENV
        shell:
            f"crt-repro download {_corpus} --to data > {{log}} 2>&1"
