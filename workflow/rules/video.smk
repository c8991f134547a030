# Tables 7 and 13 (Toyota Smarthome, cross-subject mCA): their runs, collected runs and tables.
# Kept apart from the language rules: the runs come from PLAN.video_runs (experiments.yaml's
# video_tables), take the clips from smarthome_dir (or, under the smoke scale, the generated
# synthetic-video set), and a CR-ViT run waits for the TimeSformer run it starts from (the
# paper's two stages). Rerunning a killed job resumes from the run's checkpoint. Helpers:
# workflow/rules/video_common.smk.


rule train_video:
    input:
        video_train_inputs,
    output:
        metrics=f"{RESULTS}/runs/{{run_id}}/metrics.json",
    log:
        f"{RESULTS}/logs/train/{{run_id}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{run_id}}.tsv"
    conda:
        CONDA_ENV
    params:
        args=video_train_args,
        gpus=with_gpus,
        out=lambda wildcards, output: str(Path(output.metrics).parent),
    wildcard_constraints:
        run_id=regex_of(PLAN.video_runs),
    threads: TRAIN_THREADS
    resources:
        gpu=GPU,
        **SLURM_PLACE,
    shell:
        "{params.gpus}crt-repro train {params.args} --out {params.out} > {log} 2>&1"


rule collect_video_table_runs:
    input:
        metrics=video_table_metrics,
    output:
        f"{RESULTS}/tables/runs/{{table}}.csv",
    log:
        f"{RESULTS}/logs/collect/{{table}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/collect/{{table}}.tsv"
    conda:
        CONDA_ENV
    wildcard_constraints:
        table=regex_of(PLAN.video_tables),
    shell:
        "crt-repro collect --tag {wildcards.table} --check-dir-names -o {output} {input.metrics} > {log} 2>&1"


rule mca_table:
    input:
        runs=ancient(f"{RESULTS}/tables/runs/{{table}}.csv"),
    output:
        csv=report(
            f"{RESULTS}/tables/{{table}}.csv",
            caption="../report/video_table.rst",
            category="Tables",
            labels={"table": "{table}", "kind": "mCA"},
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
        table=regex_of(PLAN.video_tables),
    shell:
        "crt-repro table {wildcards.table} --runs {input.runs} --profile {params.profile}"
        " --csv {output.csv} --md {output.md} > {log} 2>&1"
