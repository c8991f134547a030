# Helpers of the video rules (workflow/rules/video.smk): a video run's arguments and inputs, and
# the smarthome_dir check. Functions only.


class SmarthomeDirMissing(WorkflowInputError):
    pass


def video_data_dir(spec):
    """--data-dir of a video run; raises (naming smarthome_dir) where the clips are not given."""
    if spec.dataset != "smarthome":
        return None  # synthetic-video: generated into the package's data cache
    if not SMARTHOME_DIR:
        raise SmarthomeDirMissing(
            f"run {spec.model}{'-' + spec.rnn if spec.rnn else ''} of the video tables (Tables 7, 13) needs the "
            f"Toyota Smarthome clips, and the workflow config key smarthome_dir is not set. The dataset cannot "
            f"be downloaded automatically (it is released on licence request: "
            f"https://project.inria.fr/toyotasmarthome/). Pass --config smarthome_dir=DIR (DIR holds the "
            f"trimmed mp4 clips, or smarthome/mp4/), or build the language tables only "
            f"(e.g. table2_ptb_3layer), or use --config profile=smoke (synthetic videos).")
    if not Path(SMARTHOME_DIR).is_dir():
        raise SmarthomeDirMissing(f"smarthome_dir={SMARTHOME_DIR!r} is not a folder")
    return SMARTHOME_DIR


def video_train_args(wildcards):
    """The `crt-repro train` arguments of a video run (without --out), shell-quoted."""
    spec = PLAN.video_runs[wildcards.run_id]
    args = spec.train_args()
    data_dir = video_data_dir(spec)
    if data_dir is not None:
        args += ["--data-dir", data_dir]
    return shlex.join(args)


def video_train_inputs(wildcards):
    """The first stage's finished run (its checkpoint.pt is this run's model.init_from), the
    Kinetics-400 weights where given; and the smarthome_dir check, so a missing dataset stops
    the workflow when the DAG is built, before any job runs."""
    spec = PLAN.video_runs[wildcards.run_id]
    video_data_dir(spec)
    inputs = []
    if spec.init_run is not None:
        inputs.append(ancient(f"{run_dir(spec.init_run)}/metrics.json"))
    if K400_CHECKPOINT and spec_of(spec.model).k400_start:
        inputs.append(ancient(K400_CHECKPOINT))
    return inputs


def video_table_metrics(wildcards):
    return [ancient(f"{run_dir(r)}/metrics.json") for r in PLAN.video_tables[wildcards.table].run_ids]
