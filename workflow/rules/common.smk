# Helpers of the workflow: config loading and validation, and the plan of runs (which run each
# table needs, by run id). All logic lives in the package (crt_repro.plan.plan_workflow); this
# file only wires it to Snakemake. Functions only: the rules are in the other .smk files.
#
# Every output lies under its scale: results/<scale>/{runs,tables,logs,benchmarks}/,
# results/<scale>/runs.csv, figures/<scale>/. Inputs that a clone may hold committed (the
# runs' metrics.json, collected runs CSVs, downloaded corpora) are marked ancient(): git gives
# checked-out files arbitrary relative mtimes, and a table must not be rebuilt, nor a run
# retrained, only because of that order. A job that reruns still reruns everything downstream.
import re
import shlex
import sys
from pathlib import Path

from snakemake.utils import validate

from crt_repro.config import ConfigError, read_yaml_file
from crt_repro.paths import runs_dir
from crt_repro.model_specs import spec_of
from crt_repro.plan import ESTIMATE_SPEEDS, estimate_hours, job_mem_mb, job_minutes, plan_workflow
from crt_repro.results import needs_cost_file
from crt_repro.run_directory import COST

WORKFLOW_DIR = Path(workflow.basedir) / "workflow"


class WorkflowInputError(SystemExit):
    """A workflow input that cannot work (data_dir, smarthome_dir): Snakemake prints the message of
    a SystemExit alone, where any other exception comes with its traceback."""

    def __init__(self, message: str):
        super().__init__(f"crt-repro workflow: error: {message}")

PROFILES = ("smoke", "cpu", "paper")


def _read_yaml(path):
    """A YAML mapping (an empty file: {}); a missing file, a syntax error or another top level is
    one line naming the file (and line)."""
    try:
        data = read_yaml_file(path)
    except OSError as e:
        raise WorkflowInputError(f"{path}: cannot read ({e.strerror})") from None
    except ConfigError as e:
        raise WorkflowInputError(str(e)) from None
    if data is not None and not isinstance(data, dict):
        raise WorkflowInputError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data or {}


def _int_or_keep(value):
    return int(value) if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value) else value


def _coerce_cli_types(cfg):
    """`--config` parses lists and mappings with YAML's BaseLoader, i.e. as strings: turn the
    numbers back into numbers (the schema then checks the rest)."""
    # `--config data_dir=` reaches the config as None, like no data_dir at all: only the command line
    # tells them apart. An empty value is a forgotten path, not a wish to download.
    if cfg.get("data_dir") in ("", None) and "data_dir=" in sys.argv:
        raise WorkflowInputError("data_dir is empty: give the folder that holds ptb/ and wikitext-2/, or leave "
                                 "data_dir out to download the corpora into data/")
    for key in ("data_dir", "smarthome_dir", "k400_checkpoint", "experiments", "slurm_partition", "slurm_account",
                "declared_claims"):
        if cfg.get(key) in ("", "null", "None", "none", "~"):
            cfg[key] = None
    for key in ("video_two_stage", "beyond_paper"):
        if isinstance(cfg.get(key), str):
            cfg[key] = {"true": True, "false": False}.get(cfg[key].lower(), cfg[key])
    seeds = cfg.get("seeds")
    if seeds is not None:
        cfg["seeds"] = [_int_or_keep(s) for s in (seeds if isinstance(seeds, list) else [seeds])]
    if isinstance(cfg.get("extra_seeds"), dict):
        cfg["extra_seeds"] = {t: {k: [_int_or_keep(v) for v in (vs if isinstance(vs, list) else [vs])]
                                  for k, vs in (e or {}).items()} for t, e in cfg["extra_seeds"].items()}
    if isinstance(cfg.get("layers"), dict):
        cfg["layers"] = {str(k): _int_or_keep(v) for k, v in cfg["layers"].items()}
    for key in ("gpu", "threads"):
        if key in cfg:
            cfg[key] = _int_or_keep(cfg[key])
    if isinstance(cfg.get("train_gpus"), dict):
        cfg["train_gpus"] = {str(k): _int_or_keep(v) for k, v in cfg["train_gpus"].items()}


# The workflow settings of the scale (workflow/config/<scale>.yaml) under the user's --config keys.
if config.get("profile") in PROFILES:
    for _key, _value in _read_yaml(WORKFLOW_DIR / "config" / f"{config['profile']}.yaml").items():
        config.setdefault(_key, _value)
_coerce_cli_types(config)


def _validated(data, schema, what):
    """The schema's verdict in one line: the key that fails and why, not the schema itself."""
    from snakemake.exceptions import WorkflowError

    try:
        validate(data, schema)
    except WorkflowError as e:
        text = "\n".join(str(a) for a in (*e.args, e.__cause__) if a)
        why = re.search(r"ValidationError: (.*)", text)
        where = re.search(r"On instance((?:\[[^\]]*\])+)", text)
        key = ".".join(re.findall(r"\['?([^'\]]*)'?\]", where.group(1))) if where else ""
        reason = why.group(1) if why else text.strip().splitlines()[0]
        raise WorkflowInputError(f"{what}{f' key {key}' if key else ''} fails validation: {reason}") from None


_validated(config, "../schemas/config.schema.yaml", "workflow config")

# A user's own experiments file (rows for their own models, docs/adding-a-model.md):
# --config experiments=my_experiments.yaml
EXPERIMENTS = _read_yaml(config.get("experiments") or WORKFLOW_DIR / "config" / "experiments.yaml")
_validated(EXPERIMENTS, "../schemas/experiments.schema.yaml", config.get("experiments") or "experiments.yaml")

PROFILE = config["profile"]
# The datasets the profile's runs use for the paper's; the cost tables size their vocabularies by them.
STAND_IN_ARGS = " ".join(f"--stand-in {shlex.quote(f'{k}={v}')}" for k, v in config["datasets"].items())
RESULTS = f"results/{PROFILE}"
FIGURES = f"figures/{PROFILE}"
DATA_DIR = config["data_dir"]
# Checked here, not by the first train job: a mistyped folder must not plan (or start) the DAG.
if DATA_DIR is not None and not Path(DATA_DIR).is_dir():
    raise WorkflowInputError(
        f"data_dir={DATA_DIR!r} is not a folder (seen from {Path.cwd()}): give the folder that holds ptb/ and "
        f"wikitext-2/ (or wikitext-103/), or leave data_dir out and the workflow downloads the corpora into data/")
SMARTHOME_DIR = config["smarthome_dir"]  # checked by the video runs that need it (video.smk)
K400_CHECKPOINT = config["k400_checkpoint"]
try:
    PLAN = plan_workflow(EXPERIMENTS, config, PROFILE, DATA_DIR)
except ValueError as e:  # ConfigError included: a `set:` value, a table's grid, a plugin model
    raise WorkflowInputError(f"workflow config (set, layers, seeds or experiments): {e}") from None
GPU = int(config["gpu"])
TRAIN_THREADS = int(config["threads"])
# A run of a dataset listed here trains on that many GPUs in one job (torchrun inside it).
TRAIN_GPUS = config.get("train_gpus") or {}

# Files `crt-repro download <name> --to data` writes (crt_repro.data.corpus.DATASETS).
DOWNLOAD_FILES = {
    "ptb": [f"data/ptb/ptb.{split}.txt" for split in ("train", "valid", "test")],
    "wikitext-2": [f"data/wikitext-2/wiki.{split}.tokens" for split in ("train", "valid", "test")],
    "wt103": [f"data/wikitext-103/wiki.{split}.tokens" for split in ("train", "valid", "test")],
}


def regex_of(names):
    """A wildcard constraint matching exactly these names; none: matching nothing (an empty
    constraint would match everything)."""
    return "|".join(re.escape(n) for n in sorted(names)) or "(?!)"


def run_dir(run_id):
    return f"{runs_dir(PROFILE)}/{run_id}"


def gpus_of(run_id):
    return int(TRAIN_GPUS.get(PLAN.runs[run_id].dataset, GPU))


MULTI_GPU_RUNS = {r for r in PLAN.runs if gpus_of(r) > 1}


def train_gpus(wildcards):
    return gpus_of(wildcards.run_id)


def train_nproc(wildcards, resources):
    """`--nproc N`: `crt-repro train` starts N data-parallel processes through torchrun, one per
    GPU the job got (a local `--resources gpu=1` caps a 4-GPU run to 1: then it trains in one)."""
    return f"--nproc {resources.gpu}" if resources.gpu > 1 else ""


def with_gpus(wildcards, resources):
    """`crt-repro with-gpus N -- ` before the command of a job that declares N GPUs: it runs on N
    GPUs that no other job holds (Snakemake only counts GPUs, it does not assign them;
    crt_repro/gpus.py); nothing before a job without GPUs."""
    return f"crt-repro with-gpus {resources.gpu} -- " if resources.gpu else ""


def train_runtime(wildcards, attempt):
    """Minutes of a train job on a cluster, from its run's size at its profile's speed
    (crt_repro.plan.job_minutes)."""
    return job_minutes(PLAN.runs[wildcards.run_id].config(), PROFILE, attempt)


def train_mem_mb(wildcards):
    return job_mem_mb(PLAN.runs[wildcards.run_id].config())


# Where a cluster execution profile submits the jobs that are not local rules (null: the cluster's default
# partition, and the account Slurm's plugin finds for the user).
SLURM_PLACE = {key: config[key] for key in ("slurm_partition", "slurm_account") if config.get(key)}


def train_threads(wildcards):
    return TRAIN_THREADS * max(1, gpus_of(wildcards.run_id))


def train_data_dir(spec):
    if spec.dataset == "synthetic":
        return None
    return DATA_DIR if DATA_DIR is not None else "data"


def train_args(wildcards):
    """The `crt-repro train` arguments of a run (without --out), shell-quoted."""
    spec = PLAN.runs[wildcards.run_id]
    args = spec.train_args()
    data_dir = train_data_dir(spec)
    if data_dir is not None:
        args += ["--data-dir", data_dir]
    return shlex.join(args)


def train_inputs(wildcards):
    """The downloaded corpus, when the run needs one and no data_dir was given."""
    spec = PLAN.runs[wildcards.run_id]
    if DATA_DIR is None and spec.dataset in DOWNLOAD_FILES:
        return [ancient(f) for f in DOWNLOAD_FILES[spec.dataset]]
    return []


def table_metrics(wildcards):
    """The table's runs, and its rows not in the paper whose runs exist (beyond_paper: false)."""
    plan = PLAN.tables[wildcards.table]
    optional = [r for r in plan.optional_run_ids if Path(f"{run_dir(r)}/metrics.json").is_file()]
    return [ancient(f"{run_dir(r)}/metrics.json") for r in [*plan.run_ids, *optional]]


def table_costs(wildcards):
    """The cost files of the table's finished runs that recorded no forward cost (rule record_cost)."""
    plan = PLAN.tables[wildcards.table]
    return cost_files([*plan.run_ids, *plan.optional_run_ids])


def cost_files(run_ids):
    return [f"{run_dir(r)}/{COST}" for r in run_ids if needs_cost_file(run_dir(r))]


def reach_metrics(wildcards):
    return [ancient(f"{run_dir(r)}/metrics.json") for r in PLAN.reach_run_ids]


def table_runs_csv(table):
    return f"{RESULTS}/tables/runs/{table}.csv"


def figure_runs_csv(wildcards):
    return ancient(table_runs_csv(PLAN.figures[wildcards.fig]))


def cost_table_timings(wildcards):
    """Table 6 renders the timings measured at the scale's table6_widths; Table 1 reads nothing."""
    if wildcards.table != "table6_cost":
        return []
    return [f"{RESULTS}/bench/table6_{widths}.csv" for widths in config["table6_widths"]]


def table_files(name):
    return [f"{RESULTS}/tables/{name}.csv", f"{RESULTS}/tables/{name}.md"]


def figure_files(name):
    return [f"{FIGURES}/{name}.png", f"{FIGURES}/{name}.pdf"]


# Gradient reach (crt-repro gradient-reach) after training: the GRU and NCGRU runs of Table 9 at
# each segment length, first seed. Their checkpoints are not committed, so only the machine that
# trained them can rebuild these outputs; a clone that holds them committed has nothing to do.
GRADIENT_REACH_TABLE = "table9_ptb_3layer_rnn"


def gradient_reach_seg_lens():
    return sorted({PLAN.runs[r].seg_len for r in PLAN.tables[GRADIENT_REACH_TABLE].run_ids})


def gradient_reach_runs(seg_len):
    """{rnn: run id}: the first seed's CRT-GRU and CRT-NCGRU runs of Table 9 at ``seg_len``."""
    specs = [PLAN.runs[r] for r in PLAN.tables[GRADIENT_REACH_TABLE].run_ids]
    seed = min(s.seed for s in specs)
    return {s.rnn: r for r, s in zip(PLAN.tables[GRADIENT_REACH_TABLE].run_ids, specs)
            if s.seg_len == int(seg_len) and s.seed == seed}


def gradient_reach_data_dir(wildcards):
    """``--data-dir`` of the runs' corpus, as their train jobs were given it (none for synthetic)."""
    data_dir = train_data_dir(PLAN.runs[next(iter(gradient_reach_runs(wildcards.seg).values()))])
    return "" if data_dir is None else shlex.join(["--data-dir", data_dir])


GRADIENT_REACH_FILES = [f for n in gradient_reach_seg_lens() for f in (
    f"{RESULTS}/tables/gradient_reach_ptb_n{n}.csv", *figure_files(f"gradient_reach_ptb_n{n}"))]


# Tables whose runs the claims (crt_repro.report.claims) compare, and the file that declares how.
CLAIM_TABLES = ["table2_ptb_3layer", "table8_ablation", "table9_ptb_3layer_rnn"]
CLAIMS_FILE = "workflow/config/claims.yaml"
# Toyota Smarthome cannot be downloaded. Without smarthome_dir, `all` and `all_tables` build
# every other table and say so once, rather than stop at the first video run; a video table
# asked for by name still stops with video_data_dir's error (video_common.smk).
SKIPPED_VIDEO_TABLES = [] if SMARTHOME_DIR or all(r.dataset != "smarthome" for r in PLAN.video_runs.values()) \
    else list(PLAN.video_tables)
if SKIPPED_VIDEO_TABLES:
    print(f"crt-repro workflow: all and all_tables skip {' and '.join(SKIPPED_VIDEO_TABLES)} (Toyota Smarthome): "
          f"smarthome_dir is not set and the dataset cannot be downloaded (licence request); "
          f"--config smarthome_dir=DIR builds them", file=sys.stderr)
BUILT_VIDEO_TABLES = [t for t in PLAN.video_tables if t not in SKIPPED_VIDEO_TABLES]
ALL_TABLE_FILES = [f for t in [*PLAN.cost_tables, *PLAN.tables, *BUILT_VIDEO_TABLES] for f in table_files(t)]
ALL_FIGURE_FILES = [f for fig in PLAN.figures for f in figure_files(fig)] + [
    f"{FIGURES}/valid_curves_table2_ptb_3layer.{ext}" for ext in ("png", "pdf")]

def targets():
    """The targets of this invocation (none named: the default, all). Known once the DAG is built
    (input functions, onstart), not when the Snakefile is parsed."""
    return set(workflow.dag_settings.targets) or {"all"}


def is_finished(run_id):
    return Path(f"{run_dir(run_id)}/metrics.json").is_file()


def table_run_ids(table):
    """The runs a table needs: a video table's measured runs and the runs they start from."""
    if table in PLAN.video_tables:
        runs = PLAN.video_tables[table].run_ids
        return [*runs, *(PLAN.video_runs[r].init_run for r in runs if PLAN.video_runs[r].init_run)]
    return PLAN.tables[table].run_ids if table in PLAN.tables else []  # cost tables train nothing


# The runs of every table `all` and `all_tables` build, each once (figures, claims and gradient
# reach use the same runs).
ALL_RUN_IDS = list(dict.fromkeys(r for t in [*PLAN.tables, *BUILT_VIDEO_TABLES] for r in table_run_ids(t)))


def target_run_ids(target):
    if target in ("all", "all_tables"):
        return ALL_RUN_IDS
    return table_run_ids(PLAN.figures.get(target, target))


def compute_needed(target):
    """One line: how many runs ``target`` still trains, and a guess of their compute."""
    runs = target_run_ids(target)
    todo = [r for r in runs if not is_finished(r)]
    language = [PLAN.runs[r].config() for r in todo if r in PLAN.runs]
    speed, layers, d_model, vocab, unit = ESTIMATE_SPEEDS[PROFILE]
    hours = f", about {estimate_hours(PROFILE, language):,.0f} {unit}-hours" if todo else ""
    video = f" ({len(todo) - len(language)} video runs not estimated)" if len(language) < len(todo) else ""
    return (f"crt-repro workflow: {target} needs {len(todo)} of its {len(runs)} training runs under the "
            f"{PROFILE} scale{hours}{video}")


def print_compute_needed():
    """When a DAG starts (onstart), what it will cost (docs/running.md). The hours are
    an estimate: the scale's guessed speed, scaled by each run's layers and vocabulary."""
    headline = sorted(t for t in targets() if t in ("all", "all_tables") or target_run_ids(t))
    for target in headline:
        print(compute_needed(target), file=sys.stderr)
    if headline:
        speed, layers, d_model, vocab, unit = ESTIMATE_SPEEDS[PROFILE]
        print(f"crt-repro workflow: hours are an estimate from ~{speed:,.0f} tokens/s per {unit} at {layers} x "
              f"{d_model}, vocabulary {vocab:,}, scaled by each run's layers and vocabulary; early stopping "
              f"may end runs sooner", file=sys.stderr)



def collected_run_ids(table):
    """The runs of a table's runs CSV (a video table's measured runs, not their first stage)."""
    return (PLAN.tables.get(table) or PLAN.video_tables[table]).run_ids


RUNS_CSV_TABLES = [*PLAN.tables, *BUILT_VIDEO_TABLES]


def runs_csv_metrics(wildcards):
    """The runs results/<scale>/runs.csv holds: under all or all_tables every run of their tables
    (it is built after them); asked for alone (target runs_csv), the runs that have finished, so
    that it is the one file to send while the others train."""
    complete = targets() & {"all", "all_tables"}
    runs = dict.fromkeys(r for t in RUNS_CSV_TABLES for r in collected_run_ids(t))
    return [ancient(f"{run_dir(r)}/metrics.json") for r in runs if complete or is_finished(r)]


def runs_csv_costs(wildcards):
    return cost_files(dict.fromkeys(r for t in RUNS_CSV_TABLES for r in collected_run_ids(t)))


def runs_csv_collect(wildcards, input):
    """A `crt-repro collect` per table of its runs among ``input`` (tagged with the table) into
    $tmp, then `crt-repro merge` of them, which unites a shared run's tags (no run yet: a header)."""
    given, commands, parts = set(input), [], []
    for table in RUNS_CSV_TABLES:
        metrics = [m for m in (f"{run_dir(r)}/metrics.json" for r in collected_run_ids(table)) if m in given]
        if metrics:
            parts.append(f"$tmp/{table}.csv")
            commands.append(f"crt-repro collect --tag {table} --check-dir-names -o {parts[-1]} {' '.join(metrics)}")
    return " && ".join([*commands, f"crt-repro merge {' '.join(parts)}"])

# Software of every job: the package's `crt-repro` CLI. Jobs run in the current environment;
# with `--sdm conda` snakemake builds this environment (the package installed from this
# checkout) and runs them there.
CONDA_ENV = "../envs/crt-repro.yaml"
