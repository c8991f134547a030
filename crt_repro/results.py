"""Run records, the ``runs.csv`` schema and merging CSVs from several machines.

A run is one ``crt-repro train`` invocation; its directory ``results/<profile>/runs/<run_id>/`` holds
``config.yaml`` and, once finished, ``metrics.json`` (``crt_repro.run_directory``). ``run_id`` is
``Config.run_id()``: a readable prefix and a hash of every setting that changes the result, so two
tables that need the same run (Table 8's Transformer and CRT-NCGRU at 70 tokens are Table 2's)
name the same directory and the run is trained once.

``runs.csv`` has one row per run, columns ``RUN_COLUMNS``. ``tables`` lists the tables that use
the run, ';'-separated. ``flops_fwd`` is the forward FLOPs of one segment at batch 1 (fvcore,
``crt_repro.cost.forward_cost``; one multiply-add = 2 FLOPs), as the run recorded it: training
counts it into metrics.json; a run trained before that has it in a ``cost.json`` beside it, which
``crt-repro record-costs`` writes (collection counts nothing). A CSV holding video runs (Tables 7
and 13) has the further columns ``VIDEO_RUN_COLUMNS`` (empty for language runs): frames per clip,
image size, test mCA and top-1 (fractions, as in metrics.json) and the checkpoint the run started
from (``model.init_from``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from crt_repro.model_specs import spec_of
from crt_repro.run_directory import CONFIG, COST, METRICS

if TYPE_CHECKING:  # pandas is imported lazily: the Snakefile imports this module to plan runs
    import pandas as pd

RUN_COLUMNS = (
    "run_id", "tables", "profile", "dataset", "model", "rnn", "layers", "d_model", "seg_len", "mem_len",
    "eval_mem_len", "seed", "steps", "train_tokens", "epochs", "precision", "reported_step", "valid_loss", "valid_ppl", "test_loss",
    "test_ppl", "params", "flops_fwd", "train_tokens_per_s", "wall_s", "peak_mem_mb", "data_files", "git_sha",
    "torch_version", "device", "date",
    # Recorded by runs since the decisive protocol (empty for earlier runs): the streams and tokens
    # of an optimiser step, the steps planned and whether validation stopped the run before them,
    # and the relative fall of validation perplexity over its last epoch (> 1%: still improving).
    "streams", "tokens_per_step", "planned_steps", "stopped_early", "valid_gain_last_epoch",
)
NUMERIC_COLUMNS = (
    "layers", "d_model", "seg_len", "mem_len", "eval_mem_len", "seed", "steps", "train_tokens", "epochs", "reported_step",
    "valid_loss", "valid_ppl", "test_loss", "test_ppl", "params", "flops_fwd", "train_tokens_per_s", "wall_s",
    "peak_mem_mb", "streams", "tokens_per_step", "planned_steps", "valid_gain_last_epoch",
)
# Columns that describe the machine a run ran on, not its result: rows of one run from two
# machines may differ in them (merge keeps the first).
MACHINE_COLUMNS = ("train_tokens_per_s", "wall_s", "peak_mem_mb", "git_sha", "torch_version", "device", "date")
VIDEO_RUN_COLUMNS = ("frames", "image_size", "test_mca", "test_top1", "init_from")
VIDEO_NUMERIC_COLUMNS = ("frames", "image_size", "test_mca", "test_top1")
TAG_SEP = ";"
# The fields of a finished run's metrics.json (``crt_repro.train``: ``run_metrics``, then the end of
# ``train``) that every run committed under results/ has: the fields train wrote only later
# (planned_steps, stopped_early, streams, tokens_per_step, valid_gain_last_epoch) are not required,
# so that runs finished before them still collect.
RUN_FIELDS = (
    "run_id", "profile", "dataset", "model", "rnn", "layers", "d_model", "seg_len", "mem_len", "seed", "params",
    "train_items", "train_tokens_per_s", "wall_s", "peak_mem_mb", "git_sha", "torch_version", "device", "date",
    "steps", "reported_step", "precision", "data_files", "train_epochs",
)
# ... and what the run's task evaluates on each of valid and test (``valid_loss``, ...).
LM_EVAL_FIELDS = ("loss", "ppl", "tokens")
VIDEO_EVAL_FIELDS = ("loss", "mca", "top1", "clips")


class ResultsError(ValueError):
    """A results file or run directory that cannot be used; the message names the file."""


def require_columns(df: "pd.DataFrame", columns: Iterable[str], path: str | Path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ResultsError(
            f"{path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(repr(c) for c in missing)} "
            f"(expected: {', '.join(columns)})")


# ---------------------------------------------------------------------------------------------
# Run records


def _metrics_path(path: str | Path) -> Path:
    p = Path(path)
    return p if p.name == METRICS else p / METRICS


def vocab_size_of(cfg) -> int:
    from crt_repro.data import corpus_for

    return corpus_for(cfg.data).vocab_size


def read_metrics(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The run directory of ``path`` (a run directory or its metrics.json) and its metrics.json."""
    metrics_path = _metrics_path(path)
    run_dir = metrics_path.parent
    if not metrics_path.is_file():
        raise ResultsError(f"{metrics_path} does not exist: the run in {run_dir} has not finished")
    return run_dir, _read_json(metrics_path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}: not valid JSON ({e})") from None


def run_record(path: str | Path, tags: Sequence[str] = (), check_dir_name: bool = False) -> dict[str, Any]:
    """One ``runs.csv`` row from a run directory (or its metrics.json)."""
    run_dir, metrics = read_metrics(path)
    if check_dir_name:
        check_run_dir(run_dir, metrics)
    row: dict[str, Any] = {c: metrics.get(c, "") for c in RUN_COLUMNS}
    row["tables"] = TAG_SEP.join(sorted(set(tags)))
    row["train_tokens"] = metrics.get("train_items", "")
    row["epochs"] = round(metrics["train_epochs"], 4) if "train_epochs" in metrics else ""
    row["data_files"] = data_files_cell(metrics.get("data_files") or {})
    if is_language_run(metrics):  # the video tables cost their own way
        row["flops_fwd"] = recorded_flops(run_dir, metrics)
    if "test_mca" in metrics:
        row.update(video_record(run_dir, metrics))
    elif metrics.get("model") and "eval_mem_len" in spec_of(metrics["model"]).reads:
        row["eval_mem_len"] = _eval_mem_len(run_dir)
    return row


def check_run_dir(run_dir: Path, metrics: dict[str, Any]) -> None:
    """The workflow's layout: the directory is named after the run id of its metrics.json and of
    its config.yaml (a config edited by hand no longer hashes to it), and metrics.json has every
    field a finished run writes (a record cut short would reach the tables as empty cells)."""
    if metrics.get("run_id") != run_dir.name:
        raise ResultsError(
            f"{run_dir} holds run {metrics.get('run_id')!r}, not the run its name says: the workflow's run id "
            "and the package's disagree (was the config or a profile changed while the workflow ran?)")
    cfg = run_config(run_dir)
    if cfg.run_id() != run_dir.name:
        raise ResultsError(f"{run_dir / 'config.yaml'} is the config of run {cfg.run_id()!r}, not of "
                           f"{run_dir.name!r}, which its directory and metrics.json name: was it edited after the run?")
    evals = VIDEO_EVAL_FIELDS if cfg.is_video else LM_EVAL_FIELDS
    fields = RUN_FIELDS + tuple(f"{split}_{k}" for split in ("valid", "test") for k in evals)
    missing = [f for f in fields if f not in metrics]
    if missing:
        raise ResultsError(f"{run_dir / 'metrics.json'}: missing field{'s' if len(missing) > 1 else ''} "
                           f"{', '.join(missing)}, which a finished run writes")


def run_config(run_dir: Path):
    """The Config of a run directory (its config.yaml)."""
    from crt_repro.config import load_config_file

    config = run_dir / CONFIG
    if not config.is_file():
        raise ResultsError(f"{config} does not exist: the run in {run_dir} has no config")
    return load_config_file(config)


def _eval_mem_len(run_dir: Path) -> int:
    """The memory a model with an evaluation memory (Transformer-XL) kept in evaluation
    (model.eval_mem_len, null: its mem_len)."""
    cfg = run_config(run_dir)
    return cfg.model.eval_mem_len or cfg.mem_len


def video_record(run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """The ``VIDEO_RUN_COLUMNS`` of a video run (clip settings from its config.yaml)."""
    cfg = run_config(run_dir)
    return {"frames": cfg.data.frames, "image_size": cfg.model.image_size, "test_mca": metrics["test_mca"],
            "test_top1": metrics.get("test_top1", ""), "init_from": cfg.model.init_from or ""}


def data_files_cell(files: dict[str, dict]) -> str:
    """``name=sha256[:16]`` per file, ';'-separated: names the files whose content differs."""
    return TAG_SEP.join(f"{name}={entry['sha256'][:16]}" for name, entry in sorted(files.items()))


def is_language_run(metrics: dict[str, Any]) -> bool:
    return "test_ppl" in metrics


def recorded_flops(run_dir: Path, metrics: dict[str, Any]) -> int:
    """A language run's ``flops_fwd``: what its metrics.json records, else its cost file."""
    if "flops_fwd" in metrics:
        return metrics["flops_fwd"]
    cost = _recorded_cost_file(run_dir, metrics)
    if cost is None:
        raise ResultsError(f"{run_dir}: no forward cost recorded (trained before runs recorded flops_fwd); "
                           f"run `crt-repro record-costs {run_dir}`")
    return cost["flops_fwd"]


def _recorded_cost_file(run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The cost file of the run ``metrics`` records, if there is one (a file of another run id,
    left by a run directory reused, is none)."""
    path = run_dir / COST
    if not path.is_file():
        return None
    cost = _read_json(path)
    return cost if cost.get("run_id") == metrics.get("run_id") and "flops_fwd" in cost else None


def needs_cost_file(run_dir: str | Path) -> bool:
    """Whether a run has finished without recording its forward cost (a language run trained
    before runs recorded it): the workflow then asks rule record_cost for its cost file."""
    metrics = Path(run_dir) / METRICS
    if not metrics.is_file():
        return False
    recorded = _read_json(metrics)
    return is_language_run(recorded) and "flops_fwd" not in recorded


def record_cost(run_dir: str | Path) -> Path | None:
    """Count the forward cost of a language run whose metrics.json lacks it (trained before runs
    recorded it) into its cost file; None where the run needs none (it recorded its own, has a
    cost file, or is a video run)."""
    import torch

    from crt_repro import atomic
    from crt_repro.cost import recorded_cost

    run_dir, metrics = read_metrics(run_dir)
    if not is_language_run(metrics) or "flops_fwd" in metrics or _recorded_cost_file(run_dir, metrics):
        return None
    cfg = run_config(run_dir)
    path = run_dir / COST
    atomic.write_json(path, {"run_id": metrics["run_id"], **recorded_cost(cfg, vocab_size_of(cfg), torch.device("cpu"))})
    return path


def collect(paths: Sequence[str | Path], tags: Sequence[str] = (), check_dir_names: bool = False) -> "pd.DataFrame":
    import pandas as pd

    rows = [run_record(p, tags, check_dir_name=check_dir_names) for p in paths]
    video = any("test_mca" in r for r in rows)
    return pd.DataFrame(rows, columns=list(RUN_COLUMNS) + (list(VIDEO_RUN_COLUMNS) if video else [])).fillna("")


def read_csv_checked(path: str | Path, columns: Sequence[str], what: str, **read_csv: Any) -> "pd.DataFrame":
    """A CSV file with at least ``columns``, or a one-line ``ResultsError`` naming the file: missing,
    empty, not a CSV, or lacking a column. ``what`` names the kind of file in the message."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path}: no such {what}")
    try:
        df = pd.read_csv(path, **read_csv)
    except pd.errors.EmptyDataError:
        raise ResultsError(f"{path}: empty file, expected a {what} with columns {', '.join(columns)}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:  # their messages do not name the file
        raise ResultsError(f"{path}: not a CSV file ({' '.join(str(e).split())})") from None
    require_columns(df, columns, path)
    return df


def read_runs_csv(path: str | Path, numeric: bool = True) -> "pd.DataFrame":
    """Read a runs CSV; every column of ``RUN_COLUMNS`` must be present (extra ones are kept), and
    every cell of a numeric column a finite number or empty.

    ``numeric=False`` keeps every cell as the exact text of the file ('' where empty).
    """
    df = read_csv_checked(path, RUN_COLUMNS, "runs CSV", dtype=str, keep_default_na=False)
    for col in [c for c in NUMERIC_COLUMNS + VIDEO_NUMERIC_COLUMNS if c in df.columns]:
        numbers = _finite_numbers(df, col, path)
        if numeric and col in NUMERIC_COLUMNS:  # the video tables convert their own columns
            df[col] = numbers
    return df


def _finite_numbers(df: "pd.DataFrame", col: str, path: str | Path) -> "pd.Series":
    """Column ``col`` of a text runs CSV as numbers ('' is NaN: no value). Any other cell must be a
    finite number: NaN or inf in a result would pass a merge and break a table, a figure or a
    claim later; the error names the row and the column."""
    import numpy as np
    import pandas as pd

    numbers = pd.to_numeric(df[col].replace("", float("nan")), errors="coerce")
    bad = (df[col] != "") & ~np.isfinite(numbers)
    if bad.any():
        i = int(bad.to_numpy().argmax())
        raise ResultsError(f"{path}: row {i + 1} (run_id {df['run_id'].iloc[i]!r}), column {col!r}: "
                           f"{df[col].iloc[i]!r} is not a finite number")
    return numbers


def write_runs_csv(df: "pd.DataFrame", path: str | Path) -> None:
    from crt_repro import atomic

    cols = list(RUN_COLUMNS) + [c for c in df.columns if c not in RUN_COLUMNS]
    atomic.write_text(path, df[cols].to_csv(index=False, lineterminator="\n"))


def _same(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    return (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-9, abs_tol=0.0)


def merge_runs(frames: Sequence[tuple[str, "pd.DataFrame"]]) -> "pd.DataFrame":
    """Combine runs CSVs (``(source name, text DataFrame)`` pairs, read with ``numeric=False``).

    Rows of one run_id must agree in every result column both have (losses, perplexities, config,
    data): ``tables`` tags are united, the MACHINE_COLUMNS (timing, memory, device, date, git sha)
    are the first source's, and any other difference is an error naming the run_id, the columns
    and the values per source. A column only some sources have is no difference: the output has
    the union of the columns, a run's value from the first source that has the column.
    Output rows keep first-appearance order.
    """
    import pandas as pd

    merged: dict[str, dict[str, str]] = {}
    source_of: dict[str, str] = {}
    conflicts: list[str] = []
    columns: list[str] = list(RUN_COLUMNS)
    for name, df in frames:
        columns += [c for c in df.columns if c not in columns]
        for row in df.to_dict("records"):
            rid = row["run_id"]
            if not rid:
                raise ResultsError(f"{name}: a row has an empty run_id")
            if rid not in merged:
                merged[rid], source_of[rid] = dict(row), name
                continue
            old = merged[rid]
            diff = [c for c in columns if c in old and c in row and c not in ("tables", *MACHINE_COLUMNS)
                    and not _same(str(old[c]), str(row[c]))]
            if diff:
                detail = "; ".join(f"{c}: {old[c]!r} ({source_of[rid]}) vs {row[c]!r} ({name})" for c in diff)
                conflicts.append(f"run_id {rid}: columns {', '.join(diff)} differ ({detail})")
                continue
            for c in row.keys() - old.keys():  # columns the sources before lack
                old[c] = row[c]
            tags = set(filter(None, str(old.get("tables", "")).split(TAG_SEP)))
            tags |= set(filter(None, str(row.get("tables", "")).split(TAG_SEP)))
            old["tables"] = TAG_SEP.join(sorted(tags))
    if conflicts:
        raise ResultsError(f"conflicting rows for {len(conflicts)} run id(s); keep one row per run: "
                           + " | ".join(conflicts))
    return pd.DataFrame(list(merged.values()), columns=columns).fillna("")


def merge_files(paths: Sequence[str | Path]) -> "pd.DataFrame":
    return merge_runs([(str(p), read_runs_csv(p, numeric=False)) for p in paths])


def select_runs(df: "pd.DataFrame", tag: str | None = None, **equal: Any) -> "pd.DataFrame":
    """Rows tagged ``tag`` (if given) whose columns equal the given values (None: any)."""
    mask = df["run_id"].notna()
    if tag is not None:
        mask &= df["tables"].astype(str).map(lambda t: tag in t.split(TAG_SEP))
    for col, value in equal.items():
        if value is not None:
            mask &= df[col] == value
    return df[mask]
