"""Run records, the ``runs.csv`` schema, merging CSVs from several machines, and the plan of runs
each paper table needs (the workflow's experiment expansion).

A run is one ``crt-repro train`` invocation; its directory ``results/runs/<run_id>/`` holds
``config.yaml`` and, once finished, ``metrics.json`` (see ``crt_repro.train``). ``run_id`` is
``Config.run_id()``: a readable prefix and a hash of every setting that changes the result, so two
tables that need the same run (Table 8's Transformer and CRT-NCGRU at 70 tokens are Table 2's)
name the same directory and the run is trained once.

``runs.csv`` has one row per run, columns ``RUN_COLUMNS``. ``tables`` lists the tables that use
the run, ';'-separated. ``flops_fwd`` is the forward FLOPs of one segment at batch 1 (fvcore,
``crt_repro.cost.forward_cost``; one multiply-add = 2 FLOPs). A CSV holding video runs (Tables 7
and 13) has the further columns ``VIDEO_RUN_COLUMNS`` (empty for language runs): frames per clip,
image size, test mCA and top-1 (fractions, as in metrics.json) and the checkpoint the run started
from (``model.init_from``).
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

if TYPE_CHECKING:  # pandas is imported lazily: the Snakefile imports this module to plan runs
    import pandas as pd

RUN_COLUMNS = (
    "run_id", "tables", "profile", "dataset", "model", "rnn", "layers", "d_model", "seg_len", "mem_len", "seed",
    "steps", "valid_loss", "valid_ppl", "test_loss", "test_ppl", "params", "flops_fwd", "train_tokens_per_s",
    "wall_s", "peak_mem_mb", "git_sha", "torch_version", "device", "date",
)
NUMERIC_COLUMNS = (
    "layers", "d_model", "seg_len", "mem_len", "seed", "steps", "valid_loss", "valid_ppl", "test_loss", "test_ppl",
    "params", "flops_fwd", "train_tokens_per_s", "wall_s", "peak_mem_mb",
)
VIDEO_RUN_COLUMNS = ("frames", "image_size", "test_mca", "test_top1", "init_from")
VIDEO_NUMERIC_COLUMNS = ("frames", "image_size", "test_mca", "test_top1")
TAG_SEP = ";"
COST_CACHE = "cost.json"


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
    return p if p.name == "metrics.json" else p / "metrics.json"


def vocab_size_of(cfg) -> int:
    from crt_repro.data.corpus import load_corpus

    return load_corpus(cfg.data.dataset, cfg.data.data_dir).vocab_size


def run_record(path: str | Path, tags: Sequence[str] = (), cost: bool = True,
               check_dir_name: bool = False) -> dict[str, Any]:
    """One ``runs.csv`` row from a run directory (or its metrics.json)."""
    metrics_path = _metrics_path(path)
    run_dir = metrics_path.parent
    if not metrics_path.is_file():
        raise ResultsError(f"{metrics_path} does not exist: the run in {run_dir} has not finished")
    try:
        metrics = json.loads(metrics_path.read_text())
    except json.JSONDecodeError as e:
        raise ResultsError(f"{metrics_path}: not valid JSON ({e})") from None
    if check_dir_name and metrics.get("run_id") != run_dir.name:
        raise ResultsError(
            f"{run_dir} holds run {metrics.get('run_id')!r}, not the run its name says: the workflow's run id "
            "and the package's disagree (was the config or a profile changed while the workflow ran?)")
    row: dict[str, Any] = {c: metrics.get(c, "") for c in RUN_COLUMNS}
    row["tables"] = TAG_SEP.join(sorted(set(tags)))
    row["flops_fwd"] = ""
    if cost and "test_ppl" in metrics:  # language models; the video tables cost their own way
        row["flops_fwd"] = run_cost(run_dir, metrics.get("run_id", ""))["flops_fwd"]
    if "test_mca" in metrics:
        row.update(video_record(run_dir, metrics))
    return row


def video_record(run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """The ``VIDEO_RUN_COLUMNS`` of a video run (clip settings from its config.yaml)."""
    from crt_repro.config import load_config_file

    config = run_dir / "config.yaml"
    if not config.is_file():
        raise ResultsError(f"{config} does not exist: the video run in {run_dir} has no config")
    cfg = load_config_file(config)
    return {"frames": cfg.data.frames, "image_size": cfg.model.image_size, "test_mca": metrics["test_mca"],
            "test_top1": metrics.get("test_top1", ""), "init_from": cfg.model.init_from or ""}


def run_cost(run_dir: Path, run_id: str) -> dict[str, Any]:
    """``forward_cost`` of a run's config, cached in ``<run_dir>/cost.json`` (keyed by run id)."""
    from crt_repro import atomic

    cache = run_dir / COST_CACHE
    if cache.is_file():
        try:
            cached = json.loads(cache.read_text())
            if cached.get("run_id") == run_id:
                return cached
        except json.JSONDecodeError:
            pass
    from crt_repro.config import load_config_file
    from crt_repro.cost import forward_cost

    cfg = load_config_file(run_dir / "config.yaml")
    cost = {"run_id": run_id, **forward_cost(cfg, vocab_size_of(cfg))}
    cost = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in cost.items()}
    atomic.write_json(cache, cost)
    return cost


def collect(paths: Sequence[str | Path], tags: Sequence[str] = (), cost: bool = True,
            check_dir_names: bool = False) -> "pd.DataFrame":
    import pandas as pd

    rows = [run_record(p, tags, cost=cost, check_dir_name=check_dir_names) for p in paths]
    video = any("test_mca" in r for r in rows)
    return pd.DataFrame(rows, columns=list(RUN_COLUMNS) + (list(VIDEO_RUN_COLUMNS) if video else [])).fillna("")


def read_runs_csv(path: str | Path, numeric: bool = True) -> "pd.DataFrame":
    """Read a runs CSV; every column of ``RUN_COLUMNS`` must be present (extra ones are kept).

    ``numeric=False`` keeps every cell as the exact text of the file ('' where empty).
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path}: no such runs CSV")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ResultsError(f"{path}: empty file, expected a header with columns {', '.join(RUN_COLUMNS)}") from None
    require_columns(df, RUN_COLUMNS, path)
    if numeric:
        for col in NUMERIC_COLUMNS:
            try:
                df[col] = pd.to_numeric(df[col].replace("", float("nan")))
            except (ValueError, TypeError):
                bad = next(v for v in df[col] if v != "" and not _is_number(v))
                raise ResultsError(f"{path}: column {col!r} holds a non-number: {bad!r}") from None
    return df


def write_runs_csv(df: "pd.DataFrame", path: str | Path) -> None:
    from crt_repro import atomic

    cols = list(RUN_COLUMNS) + [c for c in df.columns if c not in RUN_COLUMNS]
    atomic.write_text(path, df[cols].to_csv(index=False, lineterminator="\n"))


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


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

    Rows of one run_id must agree in every column but ``tables``, whose tags are united; any
    other difference is an error naming the run_id, the columns and the values per source.
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
            diff = [c for c in columns if c != "tables" and not _same(str(old.get(c, "")), str(row.get(c, "")))]
            if diff:
                detail = "; ".join(f"{c}: {old.get(c, '')!r} ({source_of[rid]}) vs {row.get(c, '')!r} ({name})"
                                   for c in diff)
                conflicts.append(f"run_id {rid}: columns {', '.join(diff)} differ ({detail})")
                continue
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


# ---------------------------------------------------------------------------------------------
# Experiment plan: which runs each table needs (the workflow's expansion of experiments.yaml)


@dataclass(frozen=True)
class RunSpec:
    """The arguments of one ``crt-repro train`` call (without --data-dir/--out).

    ``layers`` / ``seg_len`` None leave them to the profile (the video runs: their depth is the
    profile's, and they have no segment length). ``init_run`` is the run whose checkpoint this
    one starts from (the video tables' second stage); its path is in ``sets`` as
    ``model.init_from``, so it is part of the run id.
    """

    profile: str
    dataset: str
    model: str
    layers: int | None
    seg_len: int | None
    seed: int
    rnn: str | None = None
    sets: tuple[str, ...] = ()
    init_run: str | None = None

    def train_args(self) -> list[str]:
        args = ["--profile", self.profile, "--dataset", self.dataset, "--model", self.model]
        if self.layers is not None:
            args += ["--layers", str(self.layers)]
        if self.seg_len is not None:
            args += ["--seg-len", str(self.seg_len)]
        if self.rnn:
            args += ["--rnn", self.rnn]
        args += ["--seed", str(self.seed)]
        for kv in self.sets:
            args += ["--set", kv]
        return args

    def config(self):
        """The Config ``crt-repro train`` builds from these arguments (the CLI's own code path)."""
        from crt_repro.commands import train_overrides
        from crt_repro.config import build_config

        ns = argparse.Namespace(set=list(self.sets), model=self.model, layers=self.layers, rnn=self.rnn,
                                seg_len=self.seg_len, data_dir=None, seed=self.seed, device=None)
        return build_config(self.profile, self.dataset, train_overrides(ns))

    def run_id(self) -> str:
        return self.config().run_id()


@dataclass
class TablePlan:
    name: str
    reference: str  # table key in the reference CSV (table2)
    paper_dataset: str
    dataset: str  # what this profile runs
    paper_layers: int
    layers: int
    run_ids: list[str] = field(default_factory=list)


@dataclass
class VideoTablePlan:
    name: str
    reference: str  # table key in the reference CSV (table7)
    paper_dataset: str  # smarthome
    dataset: str  # what this profile runs (smoke: synthetic-video)
    run_ids: list[str] = field(default_factory=list)  # the measured rows' runs (not their first stage)


@dataclass
class Plan:
    profile: str
    data_dir: str | None
    runs: dict[str, RunSpec]
    tables: dict[str, TablePlan]
    figures: dict[str, str]  # figure -> table whose runs it plots
    cost_tables: list[str]
    # Tables 7 and 13: kept apart from the language runs (their own workflow rules).
    video_runs: dict[str, RunSpec] = field(default_factory=dict)
    video_tables: dict[str, VideoTablePlan] = field(default_factory=dict)

    def datasets_to_download(self) -> set[str]:
        return {s.dataset for s in self.runs.values() if s.dataset != "synthetic"} if self.data_dir is None else set()

    def tags(self, run_id: str) -> list[str]:
        return [t for t, p in {**self.tables, **self.video_tables}.items() if run_id in p.run_ids]


def _sets(overrides: dict[str, Any] | None) -> tuple[str, ...]:
    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        return "null" if v is None else str(v)

    return tuple(f"{k}={fmt(v)}" for k, v in sorted((overrides or {}).items()))


def plan_workflow(experiments: dict[str, Any], settings: dict[str, Any], profile: str,
                  data_dir: str | None, reference=None) -> Plan:
    """Expand ``experiments`` (workflow/config/experiments.yaml) under one profile's workflow
    settings (workflow/config/<profile>.yaml merged with the user's --config) into runs.

    settings: ``seeds`` (list), ``layers`` (paper layer count -> this profile's), ``datasets``
    (paper dataset -> this profile's), ``datasets_without_data_dir`` (applied after ``datasets``
    when no data_dir is given), ``set`` (section.key -> value: extra overrides of every run).
    Every (model, rnn, seg_len) of a table must be a row of the paper's table, and vice versa.
    The video tables (``video_tables``) are planned by `plan_video` (settings ``video_set``,
    ``video_two_stage``, ``k400_checkpoint``).
    """
    from crt_repro.report.reference import load_reference, reference_rows

    ref = load_reference() if reference is None else reference
    seeds = [int(s) for s in settings.get("seeds") or [0]]
    layer_map = {int(k): int(v) for k, v in (settings.get("layers") or {}).items()}
    ds_map = dict(settings.get("datasets") or {})
    no_data = dict(settings.get("datasets_without_data_dir") or {}) if data_dir is None else {}
    sets = _sets(settings.get("set"))
    runs: dict[str, RunSpec] = {}
    tables: dict[str, TablePlan] = {}
    for name, t in (experiments.get("tables") or {}).items():
        key = t.get("reference") or name.split("_")[0]
        rows = reference_rows(key, "ppl", ref)
        paper_cells = {(r.model, r.rnn, int(r.seg_len)) for r in rows.itertuples()}
        ours = {(m["model"], m.get("rnn") or "", int(n)) for m in t["models"] for n in t["seg_lens"]}
        if ours != paper_cells:
            extra, missing = sorted(ours - paper_cells), sorted(paper_cells - ours)
            raise ResultsError(f"experiments: {name} does not match the paper's {key}: "
                               f"not in the paper {extra}, missing {missing}")
        dataset = ds_map.get(t["dataset"], t["dataset"])
        dataset = no_data.get(dataset, dataset)
        layers = layer_map.get(int(t["layers"]), int(t["layers"]))
        plan = TablePlan(name, key, t["dataset"], dataset, int(t["layers"]), layers)
        for m in t["models"]:
            for n in t["seg_lens"]:
                for seed in seeds:
                    spec = RunSpec(profile, dataset, m["model"], layers, int(n), seed, m.get("rnn") or None, sets)
                    rid = spec.run_id()
                    if rid in runs and runs[rid] != spec:
                        # Two routes to one config (e.g. an rnn flag a model ignores): keep the first.
                        spec = runs[rid]
                    runs.setdefault(rid, spec)
                    if rid not in plan.run_ids:
                        plan.run_ids.append(rid)
        tables[name] = plan
    figures = dict(experiments.get("figures") or {})
    for fig, table in figures.items():
        if table not in tables:
            raise ResultsError(f"experiments: figure {fig} plots the runs of {table!r}, which is not a table")
    video_runs, video_tables = plan_video(experiments, settings, profile, ref)
    return Plan(profile, data_dir, runs, tables, figures, list(experiments.get("cost_tables") or []),
                video_runs, video_tables)


RUNS_DIR = "results/runs"


def run_checkpoint(run_id: str, runs_dir: str = RUNS_DIR) -> str:
    """Where the workflow's run ``run_id`` keeps its checkpoint (``crt_repro.train.CHECKPOINT``)."""
    return f"{runs_dir}/{run_id}/checkpoint.pt"


def plan_video(experiments: dict[str, Any], settings: dict[str, Any], profile: str, reference,
               runs_dir: str = RUNS_DIR) -> tuple[dict[str, RunSpec], dict[str, VideoTablePlan]]:
    """The runs of the video tables (``video_tables`` of experiments.yaml).

    The rows of the paper's table that give a frame count (``seg_len`` in the reference CSV) are
    the paper's own models and are measured: their (model, rnn) set must equal the table's
    ``models``. The other rows are other papers' numbers, shown as reference rows.

    settings: ``seeds``, ``datasets`` (smarthome -> what this profile runs), ``video_set``
    (section.key -> value overrides of every video run), ``video_two_stage`` (a model entry's
    ``init_from: timesformer`` starts it from the checkpoint of the TimeSformer run with the same
    settings and seed, the paper's second stage; that run is planned even where no row of the
    table needs it) and ``k400_checkpoint`` (the official TimeSformer weights every TimeSformer
    run starts from, the paper's first stage; null: from scratch).
    """
    from crt_repro.report.reference import reference_rows

    seeds = [int(s) for s in settings.get("seeds") or [0]]
    ds_map = dict(settings.get("datasets") or {})
    sets = _sets(settings.get("video_set"))
    two_stage = bool(settings.get("video_two_stage", True))
    k400 = settings.get("k400_checkpoint")
    runs: dict[str, RunSpec] = {}
    tables: dict[str, VideoTablePlan] = {}

    def spec_of(dataset: str, model: str, rnn: str | None, seed: int, init_model: str | None) -> RunSpec:
        extra, init_run = (), None
        if init_model is not None and two_stage:
            first = spec_of(dataset, init_model, None, seed, None)
            init_run = first.run_id()
            runs.setdefault(init_run, first)
            extra = (f"model.init_from={run_checkpoint(init_run, runs_dir)}",)
        elif model == "timesformer" and k400:
            extra = (f"model.init_from={k400}",)
        return RunSpec(profile, dataset, model, None, None, seed, rnn, tuple(sorted(sets + extra)), init_run)

    for name, t in (experiments.get("video_tables") or {}).items():
        key = t.get("reference") or name.split("_")[0]
        rows = reference_rows(key, "mca", reference)
        paper_cells = {(r.model, r.rnn) for r in rows.itertuples() if not _isna(r.seg_len)}
        ours = {(m["model"], m.get("rnn") or "") for m in t["models"]}
        if ours != paper_cells:
            raise ResultsError(f"experiments: {name} does not match the measured rows of the paper's {key}: "
                               f"not in the paper {sorted(ours - paper_cells)}, missing {sorted(paper_cells - ours)}")
        dataset = ds_map.get(t["dataset"], t["dataset"])
        plan = VideoTablePlan(name, key, t["dataset"], dataset)
        for m in t["models"]:
            for seed in seeds:
                spec = spec_of(dataset, m["model"], m.get("rnn") or None, seed, m.get("init_from"))
                rid = spec.run_id()
                runs.setdefault(rid, spec)
                if rid not in plan.run_ids:
                    plan.run_ids.append(rid)
        tables[name] = plan
    return runs, tables


def _isna(v: Any) -> bool:
    import pandas as pd

    return bool(pd.isna(v))
