# One job per run. The run id (results/<profile>/runs/<run_id>/) is Config.run_id() of the config that
# `crt-repro train` builds from these very arguments, so tables asking for the same config share
# one run. Rerunning a killed job resumes from the run's checkpoint.


rule train:
    input:
        train_inputs,
    output:
        metrics=f"{RESULTS}/runs/{{run_id}}/metrics.json",
    log:
        f"{RESULTS}/logs/train/{{run_id}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{run_id}}.tsv"
    conda:
        CONDA_ENV
    params:
        args=train_args,
        out=lambda wildcards, output: str(Path(output.metrics).parent),
    wildcard_constraints:
        run_id=regex_of(PLAN.runs),
    threads: TRAIN_THREADS
    resources:
        gpu=GPU,
    shell:
        "crt-repro train {params.args} --out {params.out} > {log} 2>&1"
