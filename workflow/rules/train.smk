# One job per run. The run id (results/<scale>/runs/<run_id>/) is Config.run_id() of the config that
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
        nproc=train_nproc,
        gpus=with_gpus,
        out=lambda wildcards, output: str(Path(output.metrics).parent),
    wildcard_constraints:
        run_id=regex_of(PLAN.runs.keys() - MULTI_GPU_RUNS),
    threads: TRAIN_THREADS
    resources:
        gpu=GPU,
        runtime=train_runtime,
        mem_mb=train_mem_mb,
        **SLURM_PLACE,
    shell:
        "{params.gpus}crt-repro train {params.args} {params.nproc} --out {params.out} > {log} 2>&1"


# A run on several GPUs (config train_gpus: dataset -> N) is still one job: `crt-repro train
# --nproc N` starts torchrun's N data-parallel processes inside it (crt_repro.distributed). It has
# a rule of its own so that a cluster execution profile gives it its own resources, and so that a job array
# of one rule holds jobs of one size (the Slurm plugin sizes an array by its first job).
use rule train as train_multi_gpu with:
    wildcard_constraints:
        run_id=regex_of(MULTI_GPU_RUNS),
    threads: train_threads
    resources:
        gpu=train_gpus,
        runtime=train_runtime,
        mem_mb=train_mem_mb,
        **SLURM_PLACE,
